"""A callback the DDP tests put in their CLI configs: every rank writes what it trained.

``RankReport(out_dir, tag)`` writes, at the end of fit, ``<out_dir>/<tag>.rank<r>.json`` (rank, world
size, global step, final loss, whether SyncBatchNorm is in the model) and ``<tag>.rank<r>.pt`` (the
module's parameters, teacher included, and DINO's center) for the test to compare across ranks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn


class RankReport(Callback):
    def __init__(self, out_dir: str, tag: str = "run") -> None:
        self.out_dir = out_dir
        self.tag = tag
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.batch_size = int(outputs["embeddings"].shape[0])
        self.embed_dim = int(outputs["embeddings"].shape[1])

    def on_train_end(self, trainer, pl_module):
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        # every parameter: student (encoder, heads) and, for momentum methods, the EMA teacher (teacher.*)
        tensors = {f"param/{k}": v.detach().cpu().clone() for k, v in pl_module.named_parameters()}
        teacher = getattr(pl_module, "teacher", None)
        criterion = getattr(pl_module, "criterion", None)
        if criterion is not None and hasattr(criterion, "center"):
            tensors["buffer/criterion.center"] = criterion.center.detach().cpu().clone()
        torch.save(tensors, out / f"{self.tag}.rank{rank}.pt")
        loss = trainer.callback_metrics.get("train/loss")
        report = {
            "rank": rank,
            "world_size": world,
            "trainer_world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "global_step": trainer.global_step,
            "final_loss": float(loss) if loss is not None else math.nan,
            "step_losses": self.losses,
            "batch_size": getattr(self, "batch_size", None),
            "embed_dim": getattr(self, "embed_dim", None),
            "sync_batchnorm": any(isinstance(m, nn.SyncBatchNorm) for m in pl_module.modules()),
            "plain_batchnorm": any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
                for m in pl_module.modules()
            ),
            "has_teacher": teacher is not None,
            "method": type(pl_module).__name__,
        }
        (out / f"{self.tag}.rank{rank}.json").write_text(json.dumps(report))
