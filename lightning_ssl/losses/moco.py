"""MoCo v3 contrastive loss.

Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers." ICCV 2021.
https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.distributed import gather_no_grad, gather_with_grad

__all__ = ["mocov3_loss", "MoCoV3Loss"]


def _contrastive(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    logits = q @ k.T / temperature
    targets = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, targets) * (2 * temperature)


def mocov3_loss(
    q1: Tensor,
    q2: Tensor,
    k1: Tensor,
    k2: Tensor,
    temperature: float = 0.2,
    gather: bool = True,
) -> Tensor:
    """Symmetrised MoCo v3 loss (Chen, Xie, He 2021): ``ctr(q1, k2) + ctr(q2, k1)``.

    ``q1, q2`` are the predictor outputs of the online (student) network for views 1 and 2,
    ``k1, k2`` the momentum-encoder (teacher) outputs, all ``[N, D]``. With ``q`` and ``k``
    L2-normalised, ``ctr(q, k) = CrossEntropy(q @ k.T / T, arange(N)) * 2T``: the keys of the other
    samples in the batch are the negatives (no queue) and the ``2T`` factor is the official code's.

    Keys are teacher outputs: they are detached and carry no gradient. With ``gather=True`` queries
    are gathered with gradient and keys without, so ``N`` is the global batch and every rank
    computes the same, full loss (the official code computes local queries against global keys;
    after DDP's averaging both give the same gradients). The official temperature is 0.2 for ViT
    and 1.0 for ResNet-50.
    """
    k1, k2 = k1.detach(), k2.detach()
    if gather:
        q1, q2 = gather_with_grad(q1), gather_with_grad(q2)
        k1, k2 = gather_no_grad(k1), gather_no_grad(k2)
    return _contrastive(q1, k2, temperature) + _contrastive(q2, k1, temperature)


class MoCoV3Loss(nn.Module):
    """Module form of :func:`mocov3_loss` (MoCo v3, Chen, Xie, He 2021)."""

    def __init__(self, temperature: float = 0.2, gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather = gather

    def forward(self, q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor) -> Tensor:
        return mocov3_loss(q1, q2, k1, k2, temperature=self.temperature, gather=self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
