"""Learning-rate schedules: linear warm-up + cosine decay, and batch-size scaling rules.

The warm-up/cosine shape is the one of SimCLR, BYOL, Barlow Twins, DINO and MoCo v3: a linear ramp
over ``warmup_steps`` followed by a half-cosine from the peak to ``final_factor * peak`` at
``total_steps``. Steps are optimizer steps when the scheduler is stepped every batch
(Lightning ``interval="step"``), or epochs with ``interval="epoch"``.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosineSchedule", "scale_learning_rate", "warmup_cosine_factor", "LR_SCALING_RULES"]

#: Names accepted by :func:`scale_learning_rate`.
LR_SCALING_RULES = ("none", "linear", "sqrt")


def _check_steps(warmup_steps: int, total_steps: int) -> None:
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})")


def warmup_cosine_factor(
    step: int,
    warmup_steps: int,
    total_steps: int,
    start_factor: float = 0.0,
    final_factor: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based).

    - warm-up, ``step < warmup_steps``:
      ``start_factor + (1 - start_factor) * (step + 1) / warmup_steps``, so step 0 is not 0 and the
      last warm-up step (``warmup_steps - 1``) reaches exactly 1;
    - cosine, ``warmup_steps <= step <= total_steps``, with
      ``t = (step - warmup_steps) / (total_steps - warmup_steps)``:
      ``final_factor + (1 - final_factor) * 0.5 * (1 + cos(pi * t))``, i.e. 1 at ``warmup_steps``,
      ``(1 + final_factor) / 2`` half-way and ``final_factor`` at ``total_steps``;
    - after ``total_steps``: ``final_factor`` (clamped).
    """
    _check_steps(warmup_steps, total_steps)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return float(start_factor + (1.0 - start_factor) * (step + 1) / warmup_steps)
    decay_steps = total_steps - warmup_steps
    if decay_steps == 0:
        return float(final_factor)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return float(final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * t)))


class _WarmupCosineLambda:
    """Picklable callable for :class:`LambdaLR`; its ``__dict__`` lands in the scheduler state dict."""

    def __init__(self, warmup_steps: int, total_steps: int, start_factor: float, final_factor: float):
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.start_factor = float(start_factor)
        self.final_factor = float(final_factor)

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(
            step, self.warmup_steps, self.total_steps, self.start_factor, self.final_factor
        )


class WarmupCosineSchedule(LambdaLR):
    """Linear warm-up then cosine decay of every group's learning rate (see :func:`warmup_cosine_factor`).

    Each parameter group's initial ``lr`` is its peak. The schedule is picklable and its
    ``state_dict`` / ``load_state_dict`` round-trip (step counter and schedule parameters), so resume
    from a Lightning checkpoint continues the curve where it stopped.

    Use with Lightning as ``{"scheduler": WarmupCosineSchedule(opt, w, T), "interval": "step"}``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        final_factor: float = 0.0,
        start_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _check_steps(warmup_steps, total_steps)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.final_factor = float(final_factor)
        self.start_factor = float(start_factor)
        fn = _WarmupCosineLambda(warmup_steps, total_steps, start_factor, final_factor)
        super().__init__(optimizer, lr_lambda=fn, last_epoch=last_epoch)


def scale_learning_rate(
    base_lr: float, batch_size: int, rule: str = "none", reference_batch_size: int = 256
) -> float:
    """Scale a learning rate with the (global) batch size. Never applied silently: call it yourself.

    Rules: ``"none"`` -> ``base_lr``; ``"linear"`` -> ``base_lr * B / reference`` (Goyal et al. 2017,
    SimCLR with SGD/LARS, BYOL, Barlow Twins); ``"sqrt"`` -> ``base_lr * sqrt(B / reference)``
    (SimCLR with LARS at large batch sizes). ``batch_size`` is the global batch (all devices).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if reference_batch_size <= 0:
        raise ValueError(f"reference_batch_size must be > 0, got {reference_batch_size}")
    key = str(rule).lower()
    ratio = batch_size / reference_batch_size
    if key == "none":
        return float(base_lr)
    if key == "linear":
        return float(base_lr * ratio)
    if key == "sqrt":
        return float(base_lr * math.sqrt(ratio))
    raise ValueError(f"Unknown learning-rate scaling rule {rule!r}; valid rules: {', '.join(LR_SCALING_RULES)}")


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (``total_steps``), clamped.

    BYOL's momentum schedule (Grill et al. 2020): ``end - (end - start) * (cos(pi k / K) + 1) / 2``.
    """
    t = min(max(step / max(1, total_steps), 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * t) + 1) / 2
