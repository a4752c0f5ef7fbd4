"""Frozen-feature extraction for offline evaluation, and the input checks shared by the probes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["extract_features"]


def _module_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _split_batch(batch: Any) -> tuple[Any, Any, Any]:
    """Return ``(input, target, mask)`` of an ``SSLBatch``, a dict with ``views``/``target`` or ``(x, y)``."""
    if isinstance(batch, Mapping):
        if "views" in batch:
            views = batch["views"]
            return views[0], batch.get("target"), batch.get("mask")
        if "x" in batch and ("y" in batch or "target" in batch):
            return batch["x"], batch.get("y", batch.get("target")), batch.get("mask")
        raise TypeError(f"extract_features: dict batch needs a 'views' key, got keys {sorted(batch)}")
    if hasattr(batch, "views"):
        return batch.views[0], getattr(batch, "target", None), getattr(batch, "mask", None)
    if isinstance(batch, (tuple, list)):
        if len(batch) < 2:
            raise TypeError(f"extract_features: a tuple batch must be (x, y, ...), got length {len(batch)}")
        return batch[0], batch[1], None
    raise TypeError(
        "extract_features: batches must be (x, y) tuples, SSLBatch objects or dicts with 'views' and "
        f"'target'; got {type(batch).__name__}"
    )


def _to_device(x: Any, device: torch.device) -> Any:
    # Tensors and PyG Data/Batch both implement .to(device).
    return x.to(device) if hasattr(x, "to") else x


@torch.no_grad()
def extract_features(
    encoder: nn.Module, dataloader: Iterable[Any], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Run a frozen ``encoder`` over ``dataloader`` and collect features and labels.

    The encoder runs in eval mode (BatchNorm running statistics, no dropout) under ``torch.no_grad``;
    the train/eval flag of every submodule is restored afterwards.

    Args:
        encoder: maps one view to ``[N, D]`` (outputs with more dims are flattened to ``[N, -1]``).
        dataloader: yields ``(x, y)`` tuples, :class:`~lightning_ssl.data.batch.SSLBatch` objects or
            dicts with ``views`` (``views[0]``, the clean view, is used) and ``target``. If the batch
            has a ``mask`` (e.g. the seed nodes of a sampled subgraph), only those rows are kept.
        device: where to run; default the device of the encoder's parameters.

    Returns:
        ``(features [N, D] float32 on CPU, labels [N] long on CPU)``.

    Raises:
        ValueError: a batch has no labels, or features and labels disagree in length.
    """
    device = _module_device(encoder) if device is None else torch.device(device)
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    try:
        for i, batch in enumerate(dataloader):
            x, y, mask = _split_batch(batch)
            if y is None:
                raise ValueError(f"extract_features: batch {i} has no target; evaluation needs labels")
            z = encoder(_to_device(x, device))
            if not isinstance(z, Tensor):
                raise TypeError(f"extract_features: encoder returned {type(z).__name__}, expected a Tensor")
            z = z.detach().reshape(z.shape[0], -1).float().cpu()
            y = torch.as_tensor(y).detach().cpu()
            y = y.reshape(-1) if y.ndim > 1 and y.shape[-1] == 1 else y
            if mask is not None:
                m = torch.as_tensor(mask).detach().cpu().reshape(-1)
                z = z[m]
                if y.shape[0] == m.shape[0]:
                    y = y[m]
            if y.shape[0] != z.shape[0]:
                raise ValueError(
                    f"extract_features: batch {i} gives {z.shape[0]} feature rows but {y.shape[0]} labels"
                )
            feats.append(z)
            labels.append(y.long())
    finally:
        for m, mode in modes:
            m.training = mode
    if not feats:
        raise ValueError("extract_features: the dataloader yielded no batches")
    return torch.cat(feats), torch.cat(labels)


def _check_split(
    train_x: Any, train_y: Any, test_x: Any, test_y: Any, *, caller: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate a train/test split of features and labels; return float32 / long CPU-or-device tensors."""

    def as_x(a: Any, name: str) -> Tensor:
        t = a.detach() if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
        if t.ndim != 2:
            raise ValueError(f"{caller}: {name} must be 2-d [N, D], got shape {tuple(t.shape)}")
        t = t.float()
        if not torch.isfinite(t).all():
            raise ValueError(f"{caller}: {name} contains NaN or inf")
        return t

    def as_y(a: Any, name: str) -> Tensor:
        t = a.detach() if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
        if t.ndim == 2 and t.shape[1] == 1:
            t = t.reshape(-1)
        if t.ndim != 1:
            raise ValueError(f"{caller}: {name} must be 1-d [N] class labels, got shape {tuple(t.shape)}")
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError(f"{caller}: {name} must hold integer class labels")
        return t.long()

    tx, ty, vx, vy = as_x(train_x, "train_x"), as_y(train_y, "train_y"), as_x(test_x, "test_x"), as_y(test_y, "test_y")
    if tx.shape[0] != ty.shape[0]:
        raise ValueError(f"{caller}: train_x has {tx.shape[0]} rows but train_y has {ty.shape[0]} labels")
    if vx.shape[0] != vy.shape[0]:
        raise ValueError(f"{caller}: test_x has {vx.shape[0]} rows but test_y has {vy.shape[0]} labels")
    if tx.shape[1] != vx.shape[1]:
        raise ValueError(f"{caller}: train_x has {tx.shape[1]} features but test_x has {vx.shape[1]}")
    if tx.shape[0] == 0 or vx.shape[0] == 0:
        raise ValueError(f"{caller}: empty split (n_train={tx.shape[0]}, n_test={vx.shape[0]})")
    n_classes = int(torch.unique(ty).numel())
    if n_classes < 2:
        raise ValueError(f"{caller}: train_y has a single class ({int(ty[0])}); at least 2 are needed")
    return tx, ty, vx, vy
