"""Shared pieces of the monitoring callbacks: step-output access, label handling, the embedding bank."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor


class NamedCallback(L.Callback):
    """A callback whose checkpoint entry is keyed by its ``name``, so that two instances with different
    names (RankMe on validation and on a training bank, a linear and an MLP probe) can run together."""

    name: str

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)


class NonFiniteEmbeddingError(FloatingPointError):
    """Raised by a monitoring callback when embeddings hold NaN or inf (the run has diverged)."""


class MissingLabelsError(ValueError):
    """Raised by a probe when the batches it must learn from or evaluate on carry no labels."""


def step_tensor(outputs: Any, key: str, caller: str, hook: str) -> Tensor:
    """``outputs[key]`` of a training/validation step as a 2-d ``[N, D]`` tensor, or a clear error."""
    if not isinstance(outputs, dict) or key not in outputs or outputs[key] is None:
        found = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise KeyError(
            f"{caller}: the step output has no {key!r} (got {found}) in {hook}. Methods derived from "
            "lightning_ssl.methods.SSLMethod return 'embeddings' and 'projections' from training_step and "
            "validation_step; a custom method must return them too (see DESIGN.md, 'Method')."
        )
    z = outputs[key]
    if not isinstance(z, Tensor):
        raise TypeError(f"{caller}: outputs[{key!r}] must be a Tensor, got {type(z).__name__}")
    return z.detach().reshape(z.shape[0], -1)


def class_targets(target: Tensor, num_classes: int, caller: str) -> Tensor:
    """Flatten ``[N]`` / ``[N, 1]`` integer labels; reject multi-label targets and labels out of range.

    Negative labels mean "unlabelled" (STL-10's extra images) and are kept for the caller to drop.
    """
    if target.ndim == 2 and target.shape[1] == 1:
        target = target.reshape(-1)
    if target.ndim != 1:
        raise ValueError(
            f"{caller}: targets of shape {tuple(target.shape)} are multi-label; the online probes handle "
            "single-label classification ([N] or [N, 1] integer labels)."
        )
    target = target.long()
    if target.numel() and int(target.max()) >= num_classes:
        raise ValueError(
            f"{caller}: label {int(target.max())} does not fit num_classes={num_classes}. Set num_classes to "
            "the dataset's number of classes (or leave it null to read it from the datamodule)."
        )
    return target


def resolve_num_classes(trainer: Any, given: int | None, caller: str) -> int:
    """``given``, checked against the datamodule's ``num_classes`` when both exist; else the datamodule's."""
    dm = getattr(trainer, "datamodule", None)
    from_dm = None
    if dm is not None:
        try:  # a property: reading it may need the data (and fail where the datamodule cannot tell)
            value = getattr(dm, "num_classes", None)
            from_dm = None if value is None else int(value)
        except (ValueError, FileNotFoundError, TypeError):
            from_dm = None
    if given is not None and from_dm is not None and given != from_dm:
        raise ValueError(
            f"{caller}: num_classes={given} but the datamodule's {type(dm).__name__} has {from_dm} classes. "
            "Fix num_classes (or leave it null to read it from the datamodule)."
        )
    if given is None and from_dm is None:
        raise ValueError(
            f"{caller}: num_classes is not set and the datamodule gives none (no `num_classes` attribute, or "
            "None because its data has no labels). Set num_classes on the callback, or use labelled data."
        )
    n = int(given if given is not None else from_dm)  # type: ignore[arg-type]
    if n < 2:
        raise ValueError(f"{caller}: num_classes must be >= 2, got {n}.")
    return n


def labelled_subset(index: Tensor | None, n: int, fraction: float, seed: int, caller: str) -> Tensor | None:
    """Boolean mask of the samples whose labels a probe may use, or ``None`` for all.

    A sample's membership depends only on its dataset index and ``seed`` (a multiplicative hash), so
    the same ``fraction`` of the training set is labelled in every epoch, on every rank, after resume.
    """
    if fraction >= 1.0:
        return None
    if index is None:
        raise ValueError(
            f"{caller}: label_fraction={fraction} needs sample ids, but the batch has no `index`. "
            "Return SSLBatch.index from the datamodule's collate function, or use label_fraction: 1.0."
        )
    # Knuth's multiplicative hash of the id, shifted by a well-mixed offset of the seed: a seed's offset
    # must move every id by a pseudo-random amount (a small linear offset such as seed * 40503 moves the
    # threshold by 1e-5 of the range, so every seed would label almost the same samples)
    h = (index.long() * 2654435761 + _mix32(seed)) % (1 << 32)
    return (h.double() / float(1 << 32)) < fraction


def _mix32(x: int) -> int:
    """MurmurHash3's 32-bit finaliser (exact Python integers): nearby seeds give unrelated values."""
    x = (int(x) + 0x9E3779B9) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


class EmbeddingBank:
    """A ring buffer of the last ``capacity`` embedding rows, kept on the embeddings' device."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"bank capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.rows: Tensor | None = None
        self.labels: Tensor | None = None
        self.ptr = 0
        self.size = 0

    def add(self, x: Tensor, labels: Tensor | None = None) -> None:
        x = x.detach()
        if self.rows is None or self.rows.shape[1] != x.shape[1]:
            self.rows = x.new_zeros(self.capacity, x.shape[1])
            self.labels = torch.full((self.capacity,), -1, dtype=torch.long, device=x.device)
            self.ptr = self.size = 0
        if self.rows.device != x.device:
            self.rows, self.labels = self.rows.to(x.device), self.labels.to(x.device)  # type: ignore[union-attr]
        x = x[-self.capacity :]
        n = x.shape[0]
        idx = (torch.arange(n, device=x.device) + self.ptr) % self.capacity
        self.rows[idx] = x.to(self.rows.dtype)
        if labels is not None:
            self.labels[idx] = labels[-n:].long().to(x.device)  # type: ignore[index]
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def filled(self) -> tuple[Tensor | None, Tensor | None]:
        if self.rows is None or self.size == 0:
            return None, None
        return self.rows[: self.size], self.labels[: self.size]  # type: ignore[index]

    def state_dict(self) -> dict[str, Any]:
        rows, labels = self.filled()
        return {
            "rows": None if rows is None else rows.cpu().clone(),
            "labels": None if labels is None else labels.cpu().clone(),
            "ptr": self.ptr,
            "capacity": self.capacity,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.rows = self.labels = None
        self.ptr = self.size = 0
        if state["rows"] is not None:
            rows = state["rows"]
            self.rows = rows.new_zeros(self.capacity, rows.shape[1])
            self.labels = torch.full((self.capacity,), -1, dtype=torch.long)
            self.rows[: rows.shape[0]] = rows
            self.labels[: rows.shape[0]] = state["labels"]
            self.size = rows.shape[0]
            self.ptr = int(state["ptr"])
