"""Scaled cosine error of GraphMAE.

Hou, Liu, Cen, Dong, Yang, Wang, Tang. "GraphMAE: Self-Supervised Masked Graph Autoencoders."
KDD 2022. https://arxiv.org/abs/2205.10803
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["scaled_cosine_error"]


def scaled_cosine_error(pred: Tensor, target: Tensor, alpha: float = 2.0) -> Tensor:
    """``mean_i (1 - cos(pred_i, target_i)) ** alpha`` (GraphMAE, Hou et al. 2022); ``alpha >= 1``
    down-weights easy rows (GraphMAE: 3 on Cora, 1 on CiteSeer, 3 on PubMed)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if alpha < 1:
        raise ValueError(f"alpha must be >= 1, got {alpha}")
    cos = (F.normalize(pred, dim=-1) * F.normalize(target, dim=-1)).sum(-1)
    return (1 - cos).pow(alpha).mean()
