"""Reconstruction loss of the masked autoencoder (MAE) on image patches.

He, Chen, Xie, Li, Dollar, Girshick. "Masked Autoencoders Are Scalable Vision Learners." CVPR 2022.
https://arxiv.org/abs/2111.06377

A mean of per-patch terms: under DDP the gradient average of the ranks is the gradient of the global mean
(every rank masks the same number of patches per image), so no gather is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MAELoss", "mae_loss", "norm_pix_target"]


def norm_pix_target(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch normalised pixels (MAE's ``norm_pix_loss`` target): ``(x - mean) / sqrt(var + eps)`` over
    the last dimension. The variance is the unbiased one (``torch.var``'s default, as in the official code)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def mae_loss(pred: Tensor, patches: Tensor, mask: Tensor, norm_pix: bool = True, eps: float = 1e-6) -> Tensor:
    """Mean squared error on the masked patches only (MAE, He et al. 2022).

    ``pred`` and ``patches`` are ``[B, L, P]`` (predicted and true pixels per patch, see
    :func:`~lightning_ssl.methods.patch_masking.patchify`), ``mask`` ``[B, L]`` bool, True where the patch was
    masked (at least one; an empty mask gives NaN). Per patch the squared error is averaged over its ``P``
    values, then over the masked patches: MAE's ``(loss * mask).sum() / mask.sum()``. With ``norm_pix`` the
    target is :func:`norm_pix_target`.
    """
    if pred.shape != patches.shape:
        raise ValueError(f"pred and patches must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(patches.shape)}.")
    if mask.shape != pred.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(pred.shape[:2])}, got {mask.dtype} "
                         f"{tuple(mask.shape)}.")
    target = norm_pix_target(patches.float(), eps) if norm_pix else patches.float()
    return (pred.float() - target).pow(2).mean(dim=-1)[mask].mean()


class MAELoss(nn.Module):
    """Module form of :func:`mae_loss` (MAE, He et al. 2022)."""

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix, self.eps = norm_pix, eps

    def forward(self, pred: Tensor, patches: Tensor, mask: Tensor) -> Tensor:
        return mae_loss(pred, patches, mask, self.norm_pix, self.eps)
