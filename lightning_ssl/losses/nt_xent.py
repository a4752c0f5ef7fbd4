"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations." ICML 2020. https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.distributed import gather_with_grad

__all__ = ["nt_xent_loss", "NTXentLoss"]


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5, gather: bool = True) -> Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020) over two views ``z1, z2`` of shape ``[N, D]``.

    The rows are L2-normalised and stacked into ``2N`` anchors. Anchor ``i`` has one positive (the
    other view of the same sample) and ``2N - 2`` negatives: every other row of *both* views, the
    anchor itself excluded. The loss is the cross-entropy of the positive among these ``2N - 1``
    candidates, with cosine similarities divided by ``temperature``, averaged over the ``2N`` anchors.

    With ``gather=True`` (the default) and an initialised process group, ``z1`` and ``z2`` are
    gathered from all ranks with gradient, so ``N`` is the global batch and every rank computes the
    same, full loss; after DDP's gradient averaging the gradients equal those of one process on the
    concatenated batch. Temperatures in the wild range from 0.1 to 0.5; the SimCLR paper uses 0.5
    for CIFAR-10 at batch 512 and 0.1 for ImageNet at batch 4096.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    # the positive of anchor i is row i + N (mod 2N)
    targets = torch.arange(2 * n, device=z.device).roll(n)
    return F.cross_entropy(logits, targets)


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent_loss` (SimCLR, Chen et al. 2020)."""

    def __init__(self, temperature: float = 0.5, gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, temperature=self.temperature, gather=self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
