"""Image encoders: any timm model by name, torchvision ResNets, and a small-image stem.

Every encoder maps a view ``[B, C, H, W]`` to ``[B, out_dim]`` and exposes ``out_dim`` and
``in_chans``. The wrapped network lives in ``.model`` so that ``lightning-ssl export`` can write a
plain ``state_dict`` that loads into the bare model (see :func:`build_bare_model`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2")


def apply_small_stem(model: nn.Module) -> nn.Module:
    """Adapt a ResNet-style stem to 28-32 px inputs: 3x3 conv with stride 1 and no max-pool.

    This is the CIFAR stem used by SimCLR (Chen et al. 2020, appendix B.9). For a single-conv stem
    (timm/torchvision ``resnet*``) the first conv is replaced; for a deep stem (``resnet*d``,
    ``*t``) the first conv's stride is set to 1. Works in place and returns the model.
    """
    conv = getattr(model, "conv1", None)
    if conv is None or not hasattr(model, "maxpool"):
        raise ValueError(
            f"small_stem=True needs a ResNet-style model with `conv1` and `maxpool`; "
            f"{type(model).__name__} has neither. Use small_stem=False or a resnet* model."
        )
    if isinstance(conv, nn.Conv2d):
        model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    elif isinstance(conv, nn.Sequential) and isinstance(conv[0], nn.Conv2d):
        conv[0].stride = (1, 1)
    else:
        raise ValueError(f"Cannot build a small stem for conv1 of type {type(conv).__name__}.")
    model.maxpool = nn.Identity()
    return model


def _check_input(x: Tensor, in_chans: int, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects images [B, C, H, W]; got a tensor of shape {tuple(x.shape)}.")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{name} was built for {in_chans} input channel(s) but the data has {x.shape[1]}. "
            f"Set the encoder's `in_chans: {x.shape[1]}` (or convert the images)."
        )


class TimmEncoder(nn.Module):
    """Any ``timm`` model as an encoder: ``timm.create_model(name, num_classes=0)``.

    Args:
        name: a timm model name (``timm.list_models()``), e.g. ``resnet18``, ``vit_small_patch16_224``.
        in_chans: input channels (1 for gray images).
        small_stem: 3x3 stride-1 stem without max-pool for 28-32 px images (ResNet-style models).
        pretrained: load timm weights (needs the weights locally or internet).
        model_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).
    """

    def __init__(
        self,
        name: str = "resnet18",
        in_chans: int = 3,
        small_stem: bool = False,
        pretrained: bool = False,
        model_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            import difflib

            close = difflib.get_close_matches(name.lower(), timm.list_models(), n=10, cutoff=0.6)
            raise ValueError(
                f"Unknown timm model {name!r}. Similar names: {close}. See timm.list_models() for all."
            )
        self.name = name
        self.in_chans = in_chans
        self.small_stem = small_stem
        self.model = timm.create_model(
            name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **(model_kwargs or {})
        )
        if small_stem:
            apply_small_stem(self.model)
        self.out_dim: int = int(self.model.num_features)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_chans, f"TimmEncoder({self.name!r})")
        return self.model(x)


class TorchvisionEncoder(nn.Module):
    """A torchvision ResNet as an encoder (``fc`` replaced by identity).

    Args:
        name: one of ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``,
            ``wide_resnet50_2``.
        in_chans: input channels; the first conv is rebuilt when not 3.
        small_stem: 3x3 stride-1 stem without max-pool for 28-32 px images.
        zero_init_residual: zero-init the last BN of each block (Goyal et al. 2017).
    """

    def __init__(
        self,
        name: str = "resnet18",
        in_chans: int = 3,
        small_stem: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        import torchvision

        if name not in TORCHVISION_RESNETS:
            raise ValueError(f"Unknown torchvision model {name!r}; valid names: {list(TORCHVISION_RESNETS)}.")
        self.name = name
        self.in_chans = in_chans
        self.small_stem = small_stem
        model = getattr(torchvision.models, name)(weights=None, zero_init_residual=zero_init_residual)
        self.out_dim: int = int(model.fc.in_features)
        model.fc = nn.Identity()
        if in_chans != 3:
            c = model.conv1
            model.conv1 = nn.Conv2d(in_chans, c.out_channels, c.kernel_size, c.stride, c.padding, bias=False)
        if small_stem:
            apply_small_stem(model)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_chans, f"TorchvisionEncoder({self.name!r})")
        return self.model(x)


def build_bare_model(kind: str, name: str, in_chans: int = 3, small_stem: bool = False) -> nn.Module:
    """The bare timm/torchvision network that an exported ``state_dict`` loads into with ``strict=True``.

    ``kind`` is ``"timm"`` or ``"torchvision"``. For timm this is ``timm.create_model(name,
    num_classes=0, in_chans=in_chans)``; for torchvision the ResNet with ``fc = nn.Identity()``.
    With ``small_stem`` the stem is adapted by :func:`apply_small_stem` first.
    """
    if kind == "timm":
        import timm

        model = timm.create_model(name, num_classes=0, in_chans=in_chans)
        return apply_small_stem(model) if small_stem else model
    if kind == "torchvision":
        return TorchvisionEncoder(name, in_chans=in_chans, small_stem=small_stem).model
    raise ValueError(f"Unknown encoder kind {kind!r}; valid: 'timm', 'torchvision'.")

