"""The batch contract between datamodules, methods and callbacks (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class SSLBatch:
    """What every datamodule hands a method after ``on_after_batch_transfer``.

    Attributes:
        views: model inputs, one per view. Training batches of joint-embedding methods carry >= 2
            (multi-crop allowed); evaluation batches carry one clean, un-augmented view.
        target: labels or ``None``. Only probes and evaluation read them, never an SSL loss.
        mask: which of the N rows count (seed nodes, valid windows), or ``None`` for all.
        index: sample ids, when the dataset has them.
    """

    views: list[Any] = field(default_factory=list)
    target: Tensor | None = None
    mask: Tensor | None = None
    index: Tensor | None = None

    def pin_memory(self) -> "SSLBatch":
        """Called by ``DataLoader(pin_memory=True)``: pin every tensor view, target, mask and index."""

        def pin(x: Any) -> Any:
            return x.pin_memory() if hasattr(x, "pin_memory") else x

        return SSLBatch([pin(v) for v in self.views], pin(self.target), pin(self.mask), pin(self.index))

    def __len__(self) -> int:
        first = self.views[0]
        return int(first.shape[0]) if hasattr(first, "shape") else int(first.num_nodes)
