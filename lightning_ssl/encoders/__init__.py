"""Encoders: ``forward(view) -> Tensor[N, out_dim]`` with an ``out_dim`` attribute."""

from lightning_ssl.encoders.graph import GNN_LAYERS, GNNEncoder
from lightning_ssl.encoders.image import (
    TORCHVISION_RESNETS,
    TimmEncoder,
    TorchvisionEncoder,
    apply_small_stem,
    build_bare_model,
)

__all__ = ["GNN_LAYERS", "GNNEncoder", "TORCHVISION_RESNETS", "TimmEncoder", "TorchvisionEncoder", "apply_small_stem", "build_bare_model"]
