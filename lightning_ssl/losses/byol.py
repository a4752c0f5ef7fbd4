"""Per-sample cosine losses of BYOL and SimSiam.

Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning." NeurIPS 2020.
https://arxiv.org/abs/2006.07733

Chen, He. "Exploring Simple Siamese Representation Learning." CVPR 2021.
https://arxiv.org/abs/2011.10566

Both losses are means of per-sample terms, so they need no gather under DDP: the mean over ranks
that DDP applies to the gradients is the gradient of the global mean (equal per-rank batch sizes).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["byol_loss", "negative_cosine_similarity", "BYOLLoss", "NegativeCosineSimilarity"]


def _cosine(p: Tensor, z: Tensor) -> Tensor:
    return (F.normalize(p, dim=-1) * F.normalize(z, dim=-1)).sum(dim=-1)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL regression loss (Grill et al. 2020): ``2 - 2 cos(p, z)``, averaged over the batch.

    ``p`` is the online predictor output, ``z`` the target (teacher) projection; ``z`` is detached
    (stop-gradient). Equal to the squared distance of the L2-normalised vectors; in ``[0, 4]``.
    Symmetrise by calling it twice with the views swapped.
    """
    return (2 - 2 * _cosine(p, z.detach())).mean()


def negative_cosine_similarity(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam loss (Chen & He 2021): ``-cos(p, stopgrad(z))``, averaged over the batch; in ``[-1, 1]``."""
    return -_cosine(p, z.detach()).mean()


class BYOLLoss(nn.Module):
    """Module form of :func:`byol_loss` (BYOL, Grill et al. 2020)."""

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        return byol_loss(p, z)


class NegativeCosineSimilarity(nn.Module):
    """Module form of :func:`negative_cosine_similarity` (SimSiam, Chen & He 2021)."""

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        return negative_cosine_similarity(p, z)
