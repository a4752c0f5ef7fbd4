"""Encoders: ``forward(view) -> Tensor[N, out_dim]`` with an ``out_dim`` attribute."""

from lightning_ssl.encoders.eeg import (
    EEG_ENCODERS,
    EEGNetEncoder,
    EEGPatchTransformer,
    ShallowConvNetEncoder,
    check_eeg_window,
)
from lightning_ssl.encoders.graph import GNN_LAYERS, GNNEncoder
from lightning_ssl.encoders.image import (
    TORCHVISION_RESNETS,
    TimmEncoder,
    TorchvisionEncoder,
    apply_small_stem,
    build_bare_model,
)
from lightning_ssl.encoders.point import (
    DGCNN,
    POINT_ENCODERS,
    PatchTokens,
    PointLevel,
    PointNet,
    PointNetPlusPlus,
    PointPatchEmbed,
    PointPatchTransformer,
    dense_point_features,
    split_points,
)

__all__ = [
    "DGCNN",
    "EEGNetEncoder",
    "EEGPatchTransformer",
    "EEG_ENCODERS",
    "GNN_LAYERS",
    "GNNEncoder",
    "POINT_ENCODERS",
    "PatchTokens",
    "PointLevel",
    "PointNet",
    "PointNetPlusPlus",
    "PointPatchEmbed",
    "PointPatchTransformer",
    "ShallowConvNetEncoder",
    "TORCHVISION_RESNETS",
    "TimmEncoder",
    "TorchvisionEncoder",
    "apply_small_stem",
    "build_bare_model",
    "check_eeg_window",
    "dense_point_features",
    "split_points",
]
