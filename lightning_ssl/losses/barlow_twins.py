"""Barlow Twins redundancy-reduction loss.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction." ICML 2021. https://arxiv.org/abs/2103.03230
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_ssl.distributed import gather_with_grad

__all__ = ["barlow_twins_loss", "BarlowTwinsLoss", "cross_correlation", "redundancy_reduction"]


def _batch_norm(z: Tensor, eps: float) -> Tensor:
    # BatchNorm1d(affine=False) in training mode: batch mean, biased variance
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z1: Tensor, z2: Tensor, eps: float = 1e-5, gather: bool = True) -> Tensor:
    """The ``[D, D]`` cross-correlation matrix of Barlow Twins, over the global batch if ``gather``."""
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    n = z1.shape[0]
    return _batch_norm(z1, eps).T @ _batch_norm(z2, eps) / n


def barlow_twins_loss(
    z1: Tensor,
    z2: Tensor,
    lambda_offdiag: float = 0.0051,
    gather: bool = True,
) -> Tensor:
    """Barlow Twins loss (Zbontar et al. 2021) of two views ``z1, z2`` of shape ``[N, D]``.

    Each branch is batch-normalised (batch mean, biased variance, eps 1e-5, no affine), then
    ``C = z1n.T @ z2n / N`` and ``loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``
    (sums, not means, as in the official code; lambda = 0.0051).

    With ``gather=True`` the views are gathered from all ranks with gradient first, so the mean,
    the variance and ``N`` are those of the **global** batch (the official code uses synchronised
    BatchNorm and all-reduces C). Normalising per rank and averaging per-rank C matrices is a
    different loss.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    return redundancy_reduction(cross_correlation(z1, z2, gather=gather), lambda_offdiag)


def redundancy_reduction(c: Tensor, lambda_offdiag: float = 0.0051) -> Tensor:
    """``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` of a ``[D, D]`` cross-correlation matrix."""
    diag = torch.diagonal(c)
    on_diag = (1 - diag).pow(2).sum()
    off_diag = c.pow(2).masked_fill(torch.eye(c.shape[0], dtype=torch.bool, device=c.device), 0).sum()
    return on_diag + lambda_offdiag * off_diag


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`barlow_twins_loss` (Barlow Twins, Zbontar et al. 2021)."""

    def __init__(self, lambda_offdiag: float = 0.0051, gather: bool = True) -> None:
        super().__init__()
        self.lambda_offdiag = lambda_offdiag
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, lambda_offdiag=self.lambda_offdiag, gather=self.gather)

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}, gather={self.gather}"
