"""Parameter groups that keep weight decay (and LARS adaptation) off biases and normalisation layers.

SimCLR, BYOL, Barlow Twins and MoCo v3 exclude biases and batch-norm parameters from weight decay and
from the LARS trust ratio; timm does the same for every 1-d parameter. This module is the one place
that decides which parameters those are.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["NORM_LAYERS", "build_optimizer", "param_groups_no_weight_decay"]

#: Module types whose parameters never get weight decay.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm, LazyBatchNorm*
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _matches(name: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if name == pattern or name.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _timm_no_weight_decay(module: nn.Module) -> set[str]:
    """Fully qualified names listed by timm-style ``no_weight_decay()`` methods of any submodule."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        fn = getattr(sub, "no_weight_decay", None)
        if callable(fn):
            try:
                listed = fn()
            except TypeError:
                continue
            for n in listed or ():
                names.add(f"{prefix}.{n}" if prefix else n)
    return names


def param_groups_no_weight_decay(
    module: nn.Module, weight_decay: float, extra_exclude: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Split ``module``'s trainable parameters into a decay group and a no-decay group.

    The no-decay group holds every bias, every parameter of a normalisation layer
    (:data:`NORM_LAYERS`: BatchNorm*, SyncBatchNorm, InstanceNorm*, LayerNorm, GroupNorm, RMSNorm),
    every parameter with ``ndim <= 1``, the names a timm-style ``no_weight_decay()`` method of any
    submodule returns (e.g. ``pos_embed``, ``cls_token``), and the names in ``extra_exclude``.

    Args:
        module: the model (or any part of it) to optimise.
        weight_decay: coefficient of the decay group.
        extra_exclude: parameter names to exclude as well. An entry matches a parameter's fully
            qualified name exactly, as a dotted suffix (``"pos_embed"`` matches
            ``"encoder.model.pos_embed"``) or as an ``fnmatch`` pattern (``"*.gamma"``).

    Returns:
        ``[decay_group, no_decay_group]``, always in this order and always both (an empty group is
        legal for every torch optimizer). ``decay_group = {"params", "weight_decay": weight_decay,
        "lars_exclude": False, "name": "decay"}``; ``no_decay_group = {"params",
        "weight_decay": 0.0, "lars_exclude": True, "name": "no_decay"}``. Parameters with
        ``requires_grad=False`` are skipped; shared parameters appear once.
    """
    extra = tuple(extra_exclude)
    if isinstance(extra_exclude, str):  # a single name given as a string, not an iterable of chars
        extra = (extra_exclude,)
    timm_names = _timm_no_weight_decay(module)

    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for mod_name, sub in module.named_modules():
        is_norm = isinstance(sub, NORM_LAYERS)
        for p_name, p in sub.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if (
                is_norm
                or p.ndim <= 1
                or p_name == "bias"
                or full in timm_names
                or _matches(full, extra)
            ):
                no_decay.append(p)
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": float(weight_decay), "lars_exclude": False, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, "name": "no_decay"},
    ]


OPTIMIZERS = ("sgd", "adamw", "lars", "adam")


def build_optimizer(
    name: str,
    param_groups: nn.Module | Iterable[Any],
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build ``"sgd"``, ``"adamw"``, ``"lars"`` or ``"adam"`` (case-insensitive) over ``param_groups``.

    ``"adam"`` adds weight decay to the gradient (L2, coupled), as the reference code of the graph
    methods (DGI, GRACE, CCA-SSG, GraphMAE) does; ``"adamw"`` decouples it (Loshchilov & Hutter 2019).

    Args:
        name: optimizer name.
        param_groups: a module (its trainable parameters, one group), an iterable of tensors, or a
            list of group dicts such as :func:`param_groups_no_weight_decay` returns. Per-group keys
            (``weight_decay``, ``lr``) override the arguments below. The ``lars_exclude`` / ``name``
            keys are kept: torch optimizers carry unknown group keys along unchanged (also in
            ``state_dict``), and only :class:`~lightning_ssl.optim.LARS` reads ``lars_exclude``.
        lr: learning rate (not rescaled here; see :func:`scale_learning_rate`).
        weight_decay: default weight decay (AdamW: decoupled, SGD, Adam and LARS: L2 in the gradient).
        momentum: SGD and LARS momentum (ignored by AdamW).
        betas: AdamW betas (ignored by SGD and LARS).
        **kwargs: passed on to the optimizer (e.g. ``nesterov=True`` for SGD,
            ``trust_coefficient`` for LARS, ``eps`` for AdamW and LARS).
    """
    key = str(name).lower()
    if isinstance(param_groups, nn.Module):
        params: Any = [p for p in param_groups.parameters() if p.requires_grad]
    else:
        params = list(param_groups)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **kwargs)
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **kwargs)
    if key == "lars":
        from lightning_ssl.optim.lars import LARS

        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
    raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
