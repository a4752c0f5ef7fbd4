"""Helpers shared by the masked-patch methods (Point-MAE, masked feature modelling, MAE): the encoder check,
the random patch mask, the pooled embedding of visible tokens and image patchify / unpatchify."""

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


def patchify(images: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """Images ``[B, C, H, W]`` -> non-overlapping patches ``[B, L, ph * pw * C]``, row-major over the grid,
    pixels ordered ``(ph, pw, C)`` within a patch (MAE's ``patchify``)."""
    b, c, h, w = images.shape
    ph, pw = patch_size
    if h % ph or w % pw:
        raise ValueError(f"Image size {h}x{w} is not divisible by the patch size {ph}x{pw}; resize or crop the images "
                         "(data.image_size) or choose a patch size that divides them.")
    x = images.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // ph) * (w // pw), ph * pw * c)


def unpatchify(patches: Tensor, patch_size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, L, ph * pw * C]`` -> ``[B, C, H, W]``."""
    (ph, pw), (h, w) = patch_size, image_size
    b, n, d = patches.shape
    if n != (h // ph) * (w // pw) or d % (ph * pw):
        raise ValueError(f"{n} patches of {d} values do not tile a {h}x{w} image with {ph}x{pw} patches.")
    x = patches.reshape(b, h // ph, w // pw, ph, pw, d // (ph * pw)).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, -1, h, w)
