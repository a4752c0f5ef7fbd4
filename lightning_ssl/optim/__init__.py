"""Optimizers, parameter groups and learning-rate schedules for SSL pretraining."""

from lightning_ssl.optim.lars import LARS
from lightning_ssl.optim.param_groups import NORM_LAYERS, OPTIMIZERS, build_optimizer, param_groups_no_weight_decay
from lightning_ssl.optim.schedulers import (
    LR_SCALING_RULES,
    WarmupCosineSchedule,
    cosine_schedule,
    scale_learning_rate,
    warmup_cosine_factor,
)

__all__ = [
    "LARS",
    "LR_SCALING_RULES",
    "NORM_LAYERS",
    "WarmupCosineSchedule",
    "build_optimizer",
    "param_groups_no_weight_decay",
    "scale_learning_rate",
    "cosine_schedule",
    "warmup_cosine_factor",
]
