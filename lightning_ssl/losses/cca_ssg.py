"""CCA-SSG loss: canonical-correlation-inspired objective over two views.

Zhang, Wu, Yan, Wipf, Yu. "From Canonical Correlation Analysis to Self-supervised Graph Neural
Networks." NeurIPS 2021. https://arxiv.org/abs/2106.12484
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_ssl.distributed import gather_with_grad

__all__ = ["CCASSGLoss", "cca_ssg_loss"]


def _standardize(z: Tensor) -> Tensor:
    # column-wise zero mean, unit (unbiased) std, then / sqrt(N): Z^T Z is the feature correlation matrix
    z = (z - z.mean(0)) / z.std(0)
    return z / z.shape[0] ** 0.5


def cca_ssg_loss(z1: Tensor, z2: Tensor, lambd: float = 1e-3, gather: bool = True) -> dict[str, Tensor]:
    """CCA-SSG (Zhang et al. 2021) of two views ``[N, D]``.

    Each view is standardised per column over the (global, if ``gather``) batch and divided by
    sqrt(N); then ``invariance = -tr(Z1^T Z2)`` and ``decorrelation = ||Z1^T Z1 - I||_F^2 +
    ||Z2^T Z2 - I||_F^2``; ``loss = invariance + lambd * decorrelation``. This is the official code's
    weighting: the paper writes the invariance as ``||Z1 - Z2||_F^2``, which equals
    ``2 * (-tr(Z1^T Z2)) + const``, so the paper's lambd values (1e-3 on Cora, from that code) belong
    to this form. Returns ``{"loss", "invariance", "decorrelation"}``.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    if z1.shape[0] < 2:
        raise ValueError("CCA-SSG needs at least 2 rows to standardise the embeddings.")
    c1, c2 = _standardize(z1), _standardize(z2)
    eye = torch.eye(z1.shape[1], device=z1.device, dtype=z1.dtype)
    invariance = -(c1 * c2).sum()  # -tr(Z1^T Z2)
    decorrelation = (c1.T @ c1 - eye).pow(2).sum() + (c2.T @ c2 - eye).pow(2).sum()
    return {"loss": invariance + lambd * decorrelation, "invariance": invariance, "decorrelation": decorrelation}


class CCASSGLoss(nn.Module):
    """Module form of :func:`cca_ssg_loss` (Zhang et al. 2021); returns the total loss."""

    def __init__(self, lambd: float = 1e-3, gather: bool = True) -> None:
        super().__init__()
        self.lambd, self.gather = lambd, gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return cca_ssg_loss(z1, z2, self.lambd, self.gather)["loss"]
