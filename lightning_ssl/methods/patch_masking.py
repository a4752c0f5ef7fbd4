"""Helpers shared by the masked-patch methods (Point-MAE, masked feature modelling): the encoder check,
the random patch mask and the pooled embedding of visible tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

_TOKENIZER_API = ("tokenize", "encode_tokens", "embed_dim", "num_groups", "group_size")


def check_patch_encoder(encoder: nn.Module, method: str) -> None:
    """Raise a clear error unless ``encoder`` is a patch tokenizer + transformer
    (:class:`~lightning_ssl.encoders.PointPatchTransformer`)."""
    missing = [name for name in _TOKENIZER_API if not hasattr(encoder, name)]
    if missing:
        raise TypeError(
            f"{method} masks patch tokens, so it needs a patch-transformer encoder with {', '.join(_TOKENIZER_API)}; "
            f"{type(encoder).__name__} lacks {', '.join(missing)}. Use lightning_ssl.encoders.PointPatchTransformer "
            "(configs/points/point_mae_modelnet40.yaml), or a joint-embedding method (SimCLR, BYOL, ...) for this encoder."
        )


def num_masked(num_patches: int, mask_ratio: float, method: str, more_patches: str = "encoder num_groups",
               typical: str = "Point-MAE uses 0.6") -> int:
    """``int(mask_ratio * num_patches)`` masked patches, checked to leave at least one of each kind;
    ``more_patches`` / ``typical`` complete the error message for the modality."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"{method}: mask_ratio must be in (0, 1), got {mask_ratio} ({typical}).")
    n = int(mask_ratio * num_patches)
    if not 1 <= n <= num_patches - 1:
        raise ValueError(
            f"{method}: mask_ratio {mask_ratio} of {num_patches} patches masks {n}; at least one patch must be masked "
            f"and one visible. Use more patches ({more_patches}) or another mask_ratio."
        )
    return n


def random_patch_mask(batch_size: int, num_patches: int, n_masked: int, device: torch.device) -> Tensor:
    """``[B, G]`` bool, exactly ``n_masked`` True per row at uniformly random positions (Point-MAE's
    ``rand`` mask), so the visible tokens of a batch reshape to ``[B, G - n_masked, D]``."""
    rank = torch.rand(batch_size, num_patches, device=device).argsort(dim=1).argsort(dim=1)
    return rank < n_masked


def gather_rows(x: Tensor, keep: Tensor) -> Tensor:
    """Rows of ``x`` ``[B, G, ...]`` where ``keep`` ``[B, G]`` is True, as ``[B, G_keep, ...]`` (same count
    per row)."""
    batch = x.shape[0]
    return x[keep].reshape(batch, -1, *x.shape[2:])


def pool_tokens(tokens: Tensor) -> Tensor:
    """``cat(mean, max)`` over tokens ``[B, M, D] -> [B, 2D]``: Point-MAE's frozen global feature."""
    return torch.cat([tokens.mean(1), tokens.amax(1)], dim=-1)
