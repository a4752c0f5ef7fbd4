"""Shared helpers for tests/methods: tiny encoder and heads, the real PneumoniaMNIST datamodule, a CPU trainer.

Imported by the test modules of this folder (pytest's default ``prepend`` import mode puts this folder on
``sys.path``) and, through ``PYTHONPATH``, by the DDP subprocesses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
MEDMNIST_ROOT = REPO_ROOT.parent / "shared" / "data" / "medmnist"
PNEUMONIA = MEDMNIST_ROOT / "pneumoniamnist.npz"

ENCODER_OUT_DIM = 96  # timm "test_resnet" with num_classes=0

# tiny heads per method (constructor keyword arguments)
TINY_HEADS: dict[str, dict[str, Any]] = {
    "SimCLR": dict(proj_hidden_dim=32, proj_out_dim=16),
    "MoCoV3": dict(proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=32),
    "BYOL": dict(proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=32),
    "SimSiam": dict(proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=8),
    "BarlowTwins": dict(proj_hidden_dim=32, proj_out_dim=16),
    "VICReg": dict(proj_hidden_dim=32, proj_out_dim=16),
    "DINO": dict(head_out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16),
}
#: the methods these image tests run (CCASSG, DGI and GraphMAE are tested on graphs in tests/graph)
IMAGE_METHODS = tuple(TINY_HEADS)
# width of projections[0] in the step output
PROJ_DIM = {name: (64 if name == "DINO" else 16) for name in TINY_HEADS}

MOMENTUM_METHODS = ("BYOL", "MoCoV3", "DINO")

ENCODER_SPEC = {
    "class_path": "lightning_ssl.encoders.TimmEncoder",
    "init_args": {"name": "test_resnet", "in_chans": 1, "small_stem": True},
}


def tiny_encoder() -> torch.nn.Module:
    from lightning_ssl.encoders import TimmEncoder

    return TimmEncoder("test_resnet", in_chans=1, small_stem=True)


def make_method(name: str, cls: type | None = None, **kwargs: Any):
    """A method of ``METHODS`` (or ``cls``) with the tiny encoder and tiny heads; ``kwargs`` override."""
    from lightning_ssl.methods import METHODS

    cls = cls or METHODS[name]
    return cls(tiny_encoder(), **{**TINY_HEADS[name], **kwargs})


def recipe_for(name: str) -> dict[str, Any]:
    if name == "DINO":
        return dict(recipe="dino", num_local_crops=2)
    if name == "BYOL":
        return dict(recipe="byol")
    return dict(recipe="simclr")


def make_datamodule(name: str = "SimCLR", batch_size: int = 16, **kwargs: Any):
    from lightning_ssl.data import ImageDataModule

    args = dict(root=str(MEDMNIST_ROOT), num_workers=0, batch_size=batch_size, **recipe_for(name))
    args.update(kwargs)
    return ImageDataModule("pneumoniamnist", **args)


def make_trainer(**kwargs: Any) -> L.Trainer:
    args: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    args.update(kwargs)
    if any(isinstance(cb, ModelCheckpoint) for cb in args.get("callbacks", [])):
        args["enable_checkpointing"] = True
    return L.Trainer(**args)


def closed_form_tau(k: int, total: int, tau_base: float) -> float:
    """BYOL's schedule written out: tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2."""
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * k / total) + 1.0) / 2.0


def clone_params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def teacher_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("teacher.")}
