"""VICReg: variance-invariance-covariance regularisation.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning." ICLR 2022. https://arxiv.org/abs/2105.04906
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.distributed import gather_with_grad

__all__ = ["vicreg_loss", "VICRegLoss"]


def _variance(z: Tensor, eps: float) -> Tensor:
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return F.relu(1 - std).mean()


def _covariance(z: Tensor) -> Tensor:
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)
    off = cov.pow(2).masked_fill(torch.eye(d, dtype=torch.bool, device=z.device), 0)
    return off.sum() / d


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
    gather: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """VICReg loss (Bardes et al. 2022) of two views ``z1, z2`` of shape ``[N, D]``, as in the official code.

    - invariance: ``F.mse_loss(z1, z2)`` (mean over all ``N * D`` elements);
    - variance: per branch ``mean_d relu(1 - sqrt(Var[z_d] + eps))`` with the unbiased variance,
      **averaged** over the two branches;
    - covariance: per branch the sum of squared off-diagonal entries of the covariance matrix
      (centred, divided by ``N - 1``) divided by ``D``, **summed** over the two branches.

    ``loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance``
    (weights 25 / 25 / 1). With ``gather=True`` the views are gathered from all ranks with gradient
    first, so every batch statistic (and the invariance mean) is over the global batch and every
    rank computes the same, full loss.

    Returns ``(loss, terms)``; ``terms`` holds the *unweighted* ``"invariance"``, ``"variance"`` and
    ``"covariance"`` tensors (still attached to the graph; detach them before storing).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    if z1.shape[0] < 2:
        raise ValueError("VICReg needs at least 2 samples in the (global) batch")
    invariance = F.mse_loss(z1, z2)
    variance = 0.5 * (_variance(z1, eps) + _variance(z2, eps))
    covariance = _covariance(z1) + _covariance(z2)
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}


class VICRegLoss(nn.Module):
    """Module form of :func:`vicreg_loss` (VICReg, Bardes et al. 2022).

    ``forward`` returns the total loss; the unweighted terms of the last call are kept, detached,
    in :attr:`last_terms` (a dict with ``invariance``, ``variance`` and ``covariance``) for logging.
    Use :func:`vicreg_loss` directly to get them attached to the graph.
    """

    def __init__(
        self,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.sim_weight = sim_weight
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.eps = eps
        self.gather = gather
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        loss, terms = vicreg_loss(
            z1,
            z2,
            sim_weight=self.sim_weight,
            var_weight=self.var_weight,
            cov_weight=self.cov_weight,
            eps=self.eps,
            gather=self.gather,
        )
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return loss

    def extra_repr(self) -> str:
        return (
            f"sim_weight={self.sim_weight}, var_weight={self.var_weight}, "
            f"cov_weight={self.cov_weight}, eps={self.eps}, gather={self.gather}"
        )
