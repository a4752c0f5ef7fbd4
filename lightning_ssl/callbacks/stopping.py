"""Label-free early stopping: Lightning's ``EarlyStopping`` on ``rankme`` plus what it lacks.

Garrido et al. 2022 (RankMe) show that the effective rank of the embeddings tracks downstream
accuracy within a method, so ``EarlyStopping(monitor="rankme", mode="max")`` and
``ModelCheckpoint(monitor="rankme", mode="max")`` work as they are (the value is identical on every
rank). Two things are missing for pretraining and are added here:

- a **warm-up**: early RankMe values are unreliable (it often rises, dips and rises again in the first
  epochs), so epochs before ``warmup_epochs`` neither count as "best" nor use up patience;
- a **collapse guard**: when the monitored value falls below ``collapse_threshold`` (e.g. RankMe near 1,
  a collapsed representation) training stops at once, or raises :class:`RepresentationCollapseError`,
  with a message that says what happened and what to change. It is checked from the first epoch.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_warn

try:  # recent Lightning records why training stopped (EarlyStopping.stopping_reason)
    from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
except ImportError:  # pragma: no cover - older Lightning (the project allows >= 2.4)
    EarlyStoppingReason = None  # type: ignore[assignment,misc]

__all__ = ["LabelFreeEarlyStopping", "RepresentationCollapseError"]


class RepresentationCollapseError(RuntimeError):
    """The monitored label-free metric fell below the collapse threshold."""


class LabelFreeEarlyStopping(EarlyStopping):
    """``EarlyStopping`` on ``rankme`` (mode ``max``) with a warm-up and a collapse guard.

    Args:
        monitor, mode, patience, min_delta: as in Lightning's ``EarlyStopping``.
        warmup_epochs: epochs ``0 .. warmup_epochs - 1`` are ignored by the patience logic (a non-finite
            value still stops training when ``check_finite``, Lightning's default, is on).
        collapse_threshold: stop (or raise) as soon as the monitored value is below it (``mode="max"``)
            or above it (``mode="min"``); ``None`` disables the guard. A collapse sets ``collapsed_epoch``,
            ``stopped_epoch`` and ``stopping_reason`` (``DIVERGENCE_THRESHOLD``, Lightning's reason for a
            value on the wrong side of a threshold).
        on_collapse: ``"stop"`` (end training cleanly; checkpoints kept) or ``"raise"``.
        **kwargs: passed to ``EarlyStopping`` (``strict``, ``verbose``, ``check_on_train_epoch_end``...).

    List it after :class:`~lightning_ssl.callbacks.RankMe` in ``trainer.callbacks`` so that, in runs
    without a validation loop, the value is logged before this callback reads it.
    """

    def __init__(
        self,
        monitor: str = "rankme",
        mode: str = "max",
        patience: int = 10,
        min_delta: float = 0.0,
        warmup_epochs: int = 0,
        collapse_threshold: float | None = None,
        on_collapse: str = "stop",
        **kwargs: Any,
    ) -> None:
        super().__init__(monitor=monitor, mode=mode, patience=patience, min_delta=min_delta, **kwargs)
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}.")
        if collapse_threshold is not None and not math.isfinite(collapse_threshold):
            # a NaN threshold would compare False with every value and silently disable the guard
            raise ValueError(f"collapse_threshold must be a finite number or None, got {collapse_threshold}.")
        if on_collapse not in ("stop", "raise"):
            raise ValueError(f"on_collapse must be 'stop' or 'raise', got {on_collapse!r}.")
        self.warmup_epochs = warmup_epochs
        self.collapse_threshold = collapse_threshold
        self.on_collapse = on_collapse
        self.collapsed_epoch: int | None = None

    def _collapsed(self, value: float) -> bool:
        assert self.collapse_threshold is not None
        return value < self.collapse_threshold if self.mode == "max" else value > self.collapse_threshold

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or not self._validate_condition_metric(trainer.callback_metrics):
            return
        current = float(trainer.callback_metrics[self.monitor].squeeze())
        if self.collapse_threshold is not None:
            collapsed = trainer.strategy.reduce_boolean_decision(self._collapsed(current), all=False)
            if collapsed:
                self.collapsed_epoch = trainer.current_epoch
                if EarlyStoppingReason is not None:
                    self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
                side = "below" if self.mode == "max" else "above"
                message = (
                    f"Representation collapse: {self.monitor} = {current:.4g} at epoch {trainer.current_epoch} is "
                    f"{side} collapse_threshold={self.collapse_threshold}. The embeddings span almost no "
                    "directions. Typical fixes: lower the learning rate or add warm-up, check the augmentations "
                    "(views too similar), raise the temperature (contrastive) or the variance/redundancy weights "
                    "(VICReg/Barlow Twins), or use a larger batch. Checkpoints written so far are kept."
                )
                if self.on_collapse == "raise":
                    raise RepresentationCollapseError(message)
                rank_zero_warn(message)
                trainer.should_stop = True
                self.stopped_epoch = trainer.current_epoch
                self.stopping_reason_message = message
                return
        if trainer.current_epoch < self.warmup_epochs:
            # warm-up: neither best nor patience; a NaN/inf value (on any rank: every rank takes the same
            # branch, so the collectives stay matched) still stops through Lightning's check_finite
            finite = trainer.strategy.reduce_boolean_decision(math.isfinite(current), all=True)
            if finite or not self.check_finite:
                return
        super()._run_early_stopping_check(trainer)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["collapsed_epoch"] = self.collapsed_epoch
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # read without popping: the checkpoint's dict is the caller's and may be loaded again
        self.collapsed_epoch = state_dict.get("collapsed_epoch")
        super().load_state_dict(state_dict)
