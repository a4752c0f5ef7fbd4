"""Optimizers, parameter groups and learning-rate schedules for SSL pretraining."""

from lightning_ssl.optim.lars import LARS
from lightning_ssl.optim.param_groups import NORM_LAYERS, OPTIMIZERS, build_optimizer, param_groups_no_weight_decay
from lightning_ssl.optim.schedulers import (
    INFINITE_ANNEALING,
    INFINITE_SCHEDULE_KEYS,
    INFINITE_START_PHASES,
    LR_SCALING_RULES,
    LR_SCHEDULES,
    InfiniteSchedule,
    WarmupCosineSchedule,
    check_infinite_options,
    cosine_schedule,
    infinite_factor,
    infinite_phase_steps,
    scale_learning_rate,
    warmup_cosine_factor,
)

__all__ = [
    "INFINITE_ANNEALING",
    "INFINITE_SCHEDULE_KEYS",
    "INFINITE_START_PHASES",
    "InfiniteSchedule",
    "LARS",
    "LR_SCALING_RULES",
    "LR_SCHEDULES",
    "NORM_LAYERS",
    "WarmupCosineSchedule",
    "build_optimizer",
    "param_groups_no_weight_decay",
    "scale_learning_rate",
    "cosine_schedule",
    "warmup_cosine_factor",
    "check_infinite_options",
    "infinite_factor",
    "infinite_phase_steps",
]
