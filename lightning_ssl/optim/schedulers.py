"""Learning-rate schedules: linear warm-up + cosine decay, and batch-size scaling rules.

The warm-up/cosine shape is the one of SimCLR, BYOL, Barlow Twins, DINO and MoCo v3: a linear ramp
over ``warmup_steps`` followed by a half-cosine from the peak to ``final_factor * peak`` at
``total_steps``. Steps are optimizer steps when the scheduler is stepped every batch
(Lightning ``interval="step"``), or epochs with ``interval="epoch"``.

The infinite schedule (:class:`InfiniteSchedule`) is the one of Ibrahim et al. 2024, "Simple and
Scalable Strategies to Continually Pre-train Large Language Models" (TMLR, arXiv 2403.08763), applied to
self-supervised continual pre-training by Singh et al. 2025, "Beyond Cosine Decay: On the effectiveness
of Infinite Learning Rate Schedule for Continual Pre-training" (CoLLAs 2025, arXiv 2503.02844): warm up once, cool
down to a constant level that later runs continue from (no re-warming), and anneal only when a
converged checkpoint is needed.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "WarmupCosineSchedule",
    "scale_learning_rate",
    "warmup_cosine_factor",
    "LR_SCALING_RULES",
    "InfiniteSchedule",
    "infinite_factor",
    "infinite_phase_steps",
    "check_infinite_options",
    "INFINITE_ANNEALING",
    "INFINITE_START_PHASES",
    "INFINITE_SCHEDULE_KEYS",
    "LR_SCHEDULES",
]

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


# --------------------------------------------------------------------------------------------------
# Infinite schedule (continual pre-training)
# --------------------------------------------------------------------------------------------------

#: Learning-rate schedules of :class:`~lightning_ssl.methods.SSLMethod` (its ``lr_schedule`` option).
LR_SCHEDULES = ("warmup_cosine", "infinite")
#: Shapes of the final annealing of :class:`InfiniteSchedule`.
INFINITE_ANNEALING = ("exponential", "linear")
#: Where a run starts: ``"warmup"`` (a first run: warm-up, cooldown, constant, annealing) or ``"constant"``
#: (a continual run resumed from a constant-phase checkpoint: constant, annealing; no re-warming).
INFINITE_START_PHASES = ("warmup", "constant")
#: Keys of the ``infinite_schedule`` dict of :class:`~lightning_ssl.methods.SSLMethod`.
INFINITE_SCHEDULE_KEYS = (
    "warmup_fraction",
    "warmup_steps",
    "cooldown_fraction",
    "cooldown_steps",
    "anneal_fraction",
    "anneal_steps",
    "constant_factor",
    "min_factor",
    "annealing",
    "start_phase",
)
#: Defaults of the ``infinite_schedule`` options: this library's choice, not values taken from the papers.
INFINITE_DEFAULTS: dict[str, Any] = {
    "cooldown_fraction": 0.1,
    "anneal_fraction": 0.1,
    "constant_factor": 0.5,
    "min_factor": 0.01,
    "annealing": "exponential",
    "start_phase": "warmup",
}


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative whole number of steps, got {value!r}.")
    return int(value)


def _check_infinite(
    total_steps: int,
    warmup_steps: int,
    cooldown_steps: int,
    anneal_steps: int,
    constant_factor: float,
    min_factor: float,
    annealing: str,
    start_factor: float,
) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    counts = [_check_count(n, v) for n, v in
              (("warmup_steps", warmup_steps), ("cooldown_steps", cooldown_steps), ("anneal_steps", anneal_steps))]
    if sum(counts) > total_steps:
        raise ValueError(
            f"The infinite schedule's phases do not fit the run: warm-up {counts[0]} + cooldown {counts[1]} + "
            f"annealing {counts[2]} = {sum(counts)} steps, but the run has {total_steps} steps. Shorten a phase "
            "(SSLMethod: warmup_epochs, or infinite_schedule's *_fraction / *_steps) or train for more steps."
        )
    if not 0.0 <= constant_factor <= 1.0:
        raise ValueError(
            f"constant_factor must be in [0, 1] (the constant level is a fraction of the peak learning rate), got "
            f"{constant_factor}. A level above the peak would turn the cooldown into a second warm-up: raise lr "
            "instead."
        )
    if not 0.0 <= min_factor <= constant_factor:
        raise ValueError(
            f"min_factor ({min_factor}) must be in [0, constant_factor={constant_factor}]: the annealing goes down "
            "from the constant level. Lower min_factor or raise constant_factor."
        )
    if annealing not in INFINITE_ANNEALING:
        raise ValueError(f"Unknown annealing {annealing!r}; valid shapes: {', '.join(INFINITE_ANNEALING)}.")
    if annealing == "exponential" and counts[2] > 0 and min_factor <= 0.0:
        raise ValueError(
            "Exponential annealing multiplies the learning rate by a constant ratio per step and never reaches 0: "
            "set min_factor > 0 (e.g. 0.01), or annealing: linear to anneal to 0."
        )
    if not 0.0 <= start_factor <= 1.0:
        raise ValueError(f"start_factor must be in [0, 1], got {start_factor}.")


def infinite_factor(
    step: int,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    cooldown_steps: int = 0,
    anneal_steps: int = 0,
    constant_factor: float = 0.5,
    min_factor: float = 0.01,
    annealing: str = "exponential",
    start_factor: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of the infinite schedule.

    Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually Pre-train Large Language Models"
    (their infinite schedules), with ``W``, ``C``, ``A`` the warm-up, cooldown and annealing lengths, ``T`` the run's
    length, ``c = constant_factor`` and ``m = min_factor``. The phases follow each other and the
    constant phase takes the steps left over, ``T - W - C - A``:

    - warm-up, ``0 <= step < W``: ``s0 + (1 - s0) * (step + 1) / W`` with ``s0 = start_factor``, linear,
      reaching 1 (the peak) on its last step ``W - 1``, as :func:`warmup_cosine_factor`;
    - cooldown, ``W <= step < W + C``, with ``t = (step - W + 1) / C``:
      ``c + (1 - c) * 0.5 * (1 + cos(pi * t))``, a half-cosine from the peak reaching ``c`` on its last
      step ``W + C - 1``;
    - constant, ``W + C <= step < T - A``: ``c``;
    - annealing, ``T - A <= step < T``, with ``t = (step - (T - A) + 1) / A``: ``"exponential"``
      ``c * (m / c) ** t`` (the paper's form, a straight line in log-lr) or ``"linear"``
      ``c + (m - c) * t``, reaching ``m`` on the last step ``T - 1``;
    - after ``T``: the value of the last step (clamped).

    The paper writes the phases in continuous time (warm-up ``t / T_warm`` from 0); the ``+ 1`` here makes
    each phase end exactly at its target on an optimizer step that is taken (scheduler step ``k`` sets the
    learning rate of optimizer step ``k``). ``W = C = 0`` starts at the constant level: a continual run
    that resumes from a constant-phase checkpoint without re-warming (Singh et al. 2025).
    """
    _check_infinite(total_steps, warmup_steps, cooldown_steps, anneal_steps, constant_factor, min_factor,
                    annealing, start_factor)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return float(start_factor + (1.0 - start_factor) * (step + 1) / warmup_steps)
    cooldown_end = warmup_steps + cooldown_steps
    if step < cooldown_end:
        t = (step - warmup_steps + 1) / cooldown_steps
        return float(constant_factor + (1.0 - constant_factor) * 0.5 * (1.0 + math.cos(math.pi * t)))
    anneal_start = total_steps - anneal_steps
    if step < anneal_start or anneal_steps == 0:
        return float(constant_factor)
    t = min(1.0, (step - anneal_start + 1) / anneal_steps)
    if annealing == "linear" or constant_factor == min_factor:
        return float(constant_factor + (min_factor - constant_factor) * t)
    return float(constant_factor * (min_factor / constant_factor) ** t)


def infinite_phase_steps(
    total_steps: int, warmup: float = 0.0, cooldown: float = 0.0, anneal: float = 0.0
) -> tuple[int, int, int]:
    """Warm-up, cooldown and annealing lengths in steps from fractions of a ``total_steps`` run.

    Each length is ``floor(fraction * total_steps)``, so the three never exceed the run; the constant
    phase gets the rest. Fractions must lie in [0, 1] and add up to at most 1.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    fractions = {"warmup": warmup, "cooldown": cooldown, "anneal": anneal}
    for name, value in fractions.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} fraction must be in [0, 1] (a fraction of the run), got {value}.")
    total = sum(float(v) for v in fractions.values())
    if total > 1.0 + 1e-9:
        raise ValueError(
            f"The phase fractions add up to {total:g} > 1 (warm-up {warmup} + cooldown {cooldown} + annealing "
            f"{anneal}): they are fractions of one run. Lower them so that at most the whole run is used."
        )
    w, c, a = (int(math.floor(float(v) * total_steps + 1e-9)) for v in fractions.values())
    return w, c, a


def check_infinite_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate the ``infinite_schedule`` dict of :class:`~lightning_ssl.methods.SSLMethod` and fill defaults.

    Keys (:data:`INFINITE_SCHEDULE_KEYS`): per phase either ``<phase>_fraction`` (of the run) or
    ``<phase>_steps`` for ``warmup``, ``cooldown`` and ``anneal``; ``constant_factor`` and ``min_factor``
    (fractions of the peak learning rate); ``annealing`` (:data:`INFINITE_ANNEALING`); ``start_phase``
    (:data:`INFINITE_START_PHASES`). Without a warm-up key the method's ``warmup_epochs`` gives the warm-up.
    Returns a new dict with :data:`INFINITE_DEFAULTS` filled in; raises ``ValueError`` with the fix.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(INFINITE_SCHEDULE_KEYS))
    if unknown:
        raise ValueError(f"Unknown infinite_schedule keys {unknown}; valid keys: {', '.join(INFINITE_SCHEDULE_KEYS)}.")
    start = options.get("start_phase", INFINITE_DEFAULTS["start_phase"])
    if start not in INFINITE_START_PHASES:
        raise ValueError(f"Unknown start_phase {start!r}; valid phases: {', '.join(INFINITE_START_PHASES)}.")
    for phase in ("warmup", "cooldown", "anneal"):
        frac, steps = options.get(f"{phase}_fraction"), options.get(f"{phase}_steps")
        if frac is not None and steps is not None:
            raise ValueError(f"infinite_schedule sets both {phase}_fraction and {phase}_steps: give one of them.")
        if start == "constant" and phase != "anneal" and (frac is not None or steps is not None):
            raise ValueError(
                f"infinite_schedule sets {phase}_{'fraction' if frac is not None else 'steps'} but start_phase is "
                "'constant': a continual run starts at the constant level, with no warm-up and no cooldown. Remove "
                "the key, or set start_phase: warmup for a first run."
            )
        if steps is not None:
            _check_count(f"{phase}_steps", steps)
        bad_frac = isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac <= 1.0
        if frac is not None and bad_frac:
            raise ValueError(f"{phase}_fraction must be a number in [0, 1] (a fraction of the run), got {frac!r}.")
    out = {**INFINITE_DEFAULTS, **options}
    for phase in ("cooldown", "anneal"):  # a phase given in steps replaces the default fraction
        if options.get(f"{phase}_steps") is not None and f"{phase}_fraction" not in options:
            out[f"{phase}_fraction"] = None
    if start == "constant":
        out["cooldown_fraction"] = None
    fractions = [out.get(f"{p}_fraction") or 0.0 for p in ("warmup", "cooldown", "anneal")]
    if sum(fractions) > 1.0 + 1e-9:
        raise ValueError(
            f"infinite_schedule's phase fractions add up to {sum(fractions):g} > 1 (warmup_fraction, "
            "cooldown_fraction, anneal_fraction are fractions of one run): lower them."
        )
    for key in ("constant_factor", "min_factor"):
        if isinstance(out[key], bool) or not isinstance(out[key], (int, float)):
            raise ValueError(f"{key} must be a number (a fraction of the peak learning rate), got {out[key]!r}.")
    # factor ranges and the annealing shape: the same checks as the schedule itself, before any step runs
    anneals = int(bool(out.get("anneal_fraction") or out.get("anneal_steps")))
    _check_infinite(1, 0, 0, anneals, float(out["constant_factor"]), float(out["min_factor"]), out["annealing"], 0.0)
    return out


class _InfiniteLambda:
    """Picklable callable for :class:`LambdaLR`; its ``__dict__`` lands in the scheduler state dict."""

    def __init__(self, total_steps: int, warmup_steps: int, cooldown_steps: int, anneal_steps: int,
                 constant_factor: float, min_factor: float, annealing: str, start_factor: float) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.cooldown_steps = int(cooldown_steps)
        self.anneal_steps = int(anneal_steps)
        self.constant_factor = float(constant_factor)
        self.min_factor = float(min_factor)
        self.annealing = str(annealing)
        self.start_factor = float(start_factor)

    def __call__(self, step: int) -> float:
        return infinite_factor(
            step, self.total_steps, warmup_steps=self.warmup_steps, cooldown_steps=self.cooldown_steps,
            anneal_steps=self.anneal_steps, constant_factor=self.constant_factor, min_factor=self.min_factor,
            annealing=self.annealing, start_factor=self.start_factor,
        )


class InfiniteSchedule(LambdaLR):
    """Warm-up, cosine cooldown, constant phase, final annealing (see :func:`infinite_factor`).

    Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually Pre-train Large Language Models";
    Singh et al. 2025, "Beyond Cosine Decay: On the effectiveness of Infinite Learning Rate Schedule for
    Continual Pre-training" (self-supervised pre-training). Each parameter group's initial ``lr`` is its
    peak. Keep the checkpoint written at the end of the constant phase (step :attr:`anneal_start` - 1):
    the next run resumes from it with ``warmup_steps = cooldown_steps = 0`` (start at the constant level,
    no re-warming) and anneals at its own end. Phases are given in steps here, or as fractions of the run
    with :meth:`from_fractions`. Picklable; ``state_dict`` / ``load_state_dict`` round-trip.

    Use with Lightning as ``{"scheduler": InfiniteSchedule(opt, T, warmup_steps=w, ...), "interval": "step"}``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        cooldown_steps: int = 0,
        anneal_steps: int = 0,
        constant_factor: float = 0.5,
        min_factor: float = 0.01,
        annealing: str = "exponential",
        start_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _check_infinite(total_steps, warmup_steps, cooldown_steps, anneal_steps, constant_factor, min_factor,
                        annealing, start_factor)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.cooldown_steps = int(cooldown_steps)
        self.anneal_steps = int(anneal_steps)
        self.constant_factor = float(constant_factor)
        self.min_factor = float(min_factor)
        self.annealing = annealing
        self.start_factor = float(start_factor)
        fn = _InfiniteLambda(total_steps, warmup_steps, cooldown_steps, anneal_steps, constant_factor, min_factor,
                             annealing, start_factor)
        super().__init__(optimizer, lr_lambda=fn, last_epoch=last_epoch)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a saved schedule; warns when its phases differ from this one's.

        Resuming a Trainer checkpoint (``fit(ckpt_path=...)``) continues the *saved* run, phases and step
        count included. A continual run on new data must instead load the weights (e.g.
        ``Method.load_from_checkpoint`` or ``load_state_dict`` of the module) and start a new ``fit`` with
        ``start_phase: constant`` (``examples/continual_pretraining.py``).
        """
        saved = (state_dict.get("lr_lambdas") or [None])[0]
        mine = vars(self.lr_lambdas[0])
        if isinstance(saved, dict) and any(saved.get(k) != v for k, v in mine.items()):
            import warnings

            diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
            warnings.warn(
                f"InfiniteSchedule: the checkpoint's schedule differs from the configured one ({diff}, as "
                "(saved, configured)); resuming continues the saved schedule. For continual pre-training on new "
                "data, load the weights and start a new fit with infinite_schedule.start_phase: constant instead "
                "of resuming with ckpt_path.",
                stacklevel=2,
            )
        super().load_state_dict(state_dict)

    @property
    def anneal_start(self) -> int:
        """First step of the annealing; the checkpoint to continue from is the one after step ``anneal_start - 1``."""
        return self.total_steps - self.anneal_steps

    @property
    def boundaries(self) -> dict[str, int]:
        """Last step of each phase that has at least one step: ``warmup``, ``cooldown``, ``constant``, ``anneal``."""
        ends = {
            "warmup": (self.warmup_steps, self.warmup_steps - 1),
            "cooldown": (self.cooldown_steps, self.warmup_steps + self.cooldown_steps - 1),
            "constant": (self.anneal_start - self.warmup_steps - self.cooldown_steps, self.anneal_start - 1),
            "anneal": (self.anneal_steps, self.total_steps - 1),
        }
        return {name: end for name, (length, end) in ends.items() if length > 0}

    @classmethod
    def from_fractions(
        cls,
        optimizer: Optimizer,
        total_steps: int,
        warmup: float = 0.0,
        cooldown: float = 0.0,
        anneal: float = 0.0,
        **kwargs: Any,
    ) -> InfiniteSchedule:
        """Phases as fractions of the run (:func:`infinite_phase_steps`); ``kwargs`` go to the constructor."""
        w, c, a = infinite_phase_steps(total_steps, warmup, cooldown, anneal)
        return cls(optimizer, total_steps, warmup_steps=w, cooldown_steps=c, anneal_steps=a, **kwargs)

    @classmethod
    def from_options(
        cls, optimizer: Optimizer, total_steps: int, options: dict[str, Any] | None = None, warmup_steps: int = 0
    ) -> InfiniteSchedule:
        """Build from the ``infinite_schedule`` dict of :class:`~lightning_ssl.methods.SSLMethod`
        (:func:`check_infinite_options`); ``warmup_steps`` is used when the dict has no warm-up key."""
        opts = check_infinite_options(options)

        def length(phase: str, default: int) -> int:
            if opts.get(f"{phase}_steps") is not None:
                return int(opts[f"{phase}_steps"])
            if opts.get(f"{phase}_fraction") is not None:  # floor, as infinite_phase_steps
                return int(math.floor(float(opts[f"{phase}_fraction"]) * total_steps + 1e-9))
            return default

        if opts["start_phase"] == "constant":
            warm, cool = 0, 0
        else:
            warm, cool = length("warmup", warmup_steps), length("cooldown", 0)
        return cls(optimizer, total_steps, warmup_steps=warm, cooldown_steps=cool, anneal_steps=length("anneal", 0),
                   constant_factor=float(opts["constant_factor"]), min_factor=float(opts["min_factor"]),
                   annealing=opts["annealing"])
