"""Weight initialisations shared by the transformer encoders and decoders (ViT / Point-MAE conventions)."""

from __future__ import annotations

from torch import nn


def trunc_normal_init(m: nn.Module, types: tuple[type[nn.Module], ...] = (nn.Linear,), std: float = 0.02) -> None:
    """ViT/timm style, for ``module.apply``: weights of ``types`` ~ truncated normal(std), zero bias; LayerNorm
    weight 1, bias 0."""
    if isinstance(m, types):
        nn.init.trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def xavier_init(m: nn.Module) -> None:
    """MAE / Point-MAE decoder style, for ``module.apply``: Linear weights Xavier-uniform, zero bias; LayerNorm
    weight 1, bias 0."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
