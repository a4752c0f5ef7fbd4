"""Chamfer distance between point clouds, the reconstruction loss of Point-MAE.

Pang, Wang, Tay, Liu, Tian, Yuan. "Masked Autoencoders for Point Cloud Self-supervised
Learning." ECCV 2022. https://arxiv.org/abs/2203.06604
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_ssl.encoders.point_ops import knn

__all__ = ["ChamferDistance", "chamfer_distance"]

_REDUCTIONS = ("mean", "sum", "none")


def _safe_sqrt(d2: Tensor) -> Tensor:
    """``sqrt`` with a zero (not NaN/Inf) gradient at exactly coincident points."""
    positive = d2 > 0
    return torch.where(positive, torch.where(positive, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


def chamfer_distance(
    x: Tensor, y: Tensor, squared: bool = True, reduction: str = "mean", chunk_size: int = 4096
) -> Tensor:
    """Chamfer distance between ``x`` ``[B, N, 3]`` and ``y`` ``[B, M, 3]`` (Point-MAE, Pang et al. 2022).

    ``squared=True`` (Point-MAE's ``ChamferDistanceL2``): per cloud,
    ``mean_i min_j |x_i - y_j|^2 + mean_j min_i |y_j - x_i|^2``.
    ``squared=False`` (Point-MAE's ``ChamferDistanceL1``): Euclidean instead of squared distances
    and, as in Point-MAE, the two directional means are averaged (``/ 2``) rather than summed.
    ``reduction``: ``"mean"`` over the batch (a scalar), ``"sum"``, or ``"none"`` (``[B]``).
    Nearest neighbours come from :func:`~lightning_ssl.encoders.point_ops.knn` with ``k=1``
    in chunks of ``chunk_size`` rows; the result is differentiable in ``x`` and ``y``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    d_xy, _ = knn(x, y, 1, chunk_size=chunk_size)  # [B, N, 1]
    d_yx, _ = knn(y, x, 1, chunk_size=chunk_size)  # [B, M, 1]
    d_xy, d_yx = d_xy.squeeze(-1), d_yx.squeeze(-1)
    if squared:
        per_cloud = d_xy.mean(1) + d_yx.mean(1)
    else:
        per_cloud = (_safe_sqrt(d_xy).mean(1) + _safe_sqrt(d_yx).mean(1)) / 2
    if reduction == "mean":
        return per_cloud.mean()
    if reduction == "sum":
        return per_cloud.sum()
    return per_cloud


class ChamferDistance(nn.Module):
    """Module wrapper of :func:`chamfer_distance`."""

    def __init__(self, squared: bool = True, reduction: str = "mean", chunk_size: int = 4096) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.squared = squared
        self.reduction = reduction
        self.chunk_size = chunk_size

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return chamfer_distance(x, y, squared=self.squared, reduction=self.reduction, chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        return f"squared={self.squared}, reduction={self.reduction!r}"
