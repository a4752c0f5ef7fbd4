"""The 2-process (gloo, CPU) runs behind test_probe_ddp.py and test_knn_ddp.py.

One ``run_ddp`` call serves both test modules (:func:`ddp_results` is cached for the session): on this
2-core machine each spawn mostly pays for importing Lightning in two fresh processes.

Every rank drives the callbacks' hooks by hand (``FakeTrainer`` / ``FakeModule``) on its shard of fixed
data; the tests compare the ranks with each other and with one process on the whole data.
"""

from __future__ import annotations

import contextlib
import functools
from types import SimpleNamespace
from typing import Any

import torch

from lightning_ssl.callbacks import OnlineKNN, OnlineLinearProbe
from probe_knn_helpers import FakeModule, FakeTrainer, clustered, drive_validation, probe_params, train_out, val_out

PROBE_CONFIGS = {
    "linear_adamw": dict(lr=0.05),
    "mlp_sgd": dict(hidden_dim=6, optimizer="sgd", lr=0.5, momentum=0.9, weight_decay=1e-3),
}
SPLIT = 8  # rows of each training batch on rank 0 (of 16); the rest go to rank 1
VAL_SPLIT = 12  # validation rows on rank 0 (of 20): unequal shards
KNN_K = 5
CLEAN_BATCHES = 5  # batches of the fake labelled_train_dataloader (ranks take batches i % 2 == rank)
CLEAN_LIMIT = 4  # trainer.limit_train_batches for the clean pass


def train_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three training batches of 16 rows (3 classes, 8-dim) with unequal labelled counts per half."""
    batches = []
    for step in range(3):
        z, y = clustered(16, seed=10 + step)
        y = y.clone()
        if step == 0:
            y[[3]] = -1  # rank 0: 7 labelled
            y[[8, 9, 11, 12, 15]] = -1  # rank 1: 3 labelled
        elif step == 1:
            y[SPLIT:] = -1  # rank 1: no labelled row at all
            y[[0, 5]] = -1
        batches.append((z, y))
    return batches


def val_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return clustered(20, seed=99)


def clean_batches() -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(CLEAN_BATCHES):
        z, y = clustered(6, seed=200 + i)
        out.append({"z": z, "y": y})
    return out


def shard(rank: int, x: torch.Tensor, split: int) -> torch.Tensor:
    return x[:split] if rank == 0 else x[split:]


def step_and_validate(cb: OnlineLinearProbe, trainer: FakeTrainer, module: FakeModule, batches, val_batches):
    """Step the probe on each batch, then run one validation epoch; returns params per step, losses, metrics."""
    params, losses = [], []
    for z, y in batches:
        cb.on_train_batch_end(trainer, module, train_out(z, y), None, len(params))
        params.append(probe_params(cb))
        losses.append(module.logged[f"{cb.name}/train_loss"].item())
    drive_validation(cb, trainer, module, [val_out(z, y) for z, y in val_batches])
    val = {k: v.item() for k, v in module.logged.items() if "/val_" in k}
    return params, losses, val


class CleanPassModule(FakeModule):
    """A module whose validation_step returns the fixed rows of a fake clean batch."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        self.steps.append(batch_idx)
        return val_out(batch["z"], batch["y"])


def clean_trainer(world_size: int = 1, global_rank: int = 0) -> FakeTrainer:
    loader = clean_batches()
    trainer = FakeTrainer(world_size=world_size, global_rank=global_rank,
                          datamodule=SimpleNamespace(num_classes=3, labelled_train_dataloader=lambda: loader))
    trainer.limit_train_batches = CLEAN_LIMIT
    trainer.strategy = SimpleNamespace(batch_to_device=lambda batch, device: batch)
    trainer.precision_plugin = SimpleNamespace(val_step_context=contextlib.nullcontext)
    return trainer


def knn_bank_and_metrics(cb: OnlineKNN, trainer: FakeTrainer, module: FakeModule, val_batches):
    """One validation epoch of the kNN callback; returns (bank rows, bank labels, logged metrics)."""
    cb.on_validation_epoch_start(trainer, module)
    assert cb._bank is not None, "the kNN callback built no bank"
    bank = (cb._bank[0].clone(), cb._bank[1].clone())
    for i, (z, y) in enumerate(val_batches):
        cb.on_validation_batch_end(trainer, module, val_out(z, y), None, i)
    cb.on_validation_epoch_end(trainer, module)
    return bank[0], bank[1], {k: v.item() for k, v in module.logged.items()}


def _worker(rank: int, world_size: int) -> dict[str, Any]:
    batches, (vz, vy) = train_batches(), val_batch()
    mine = [(shard(rank, z, SPLIT), shard(rank, y, SPLIT)) for z, y in batches]
    my_val = [(shard(rank, vz, VAL_SPLIT), shard(rank, vy, VAL_SPLIT))]
    out: dict[str, Any] = {"probe": {}}
    for name, kwargs in PROBE_CONFIGS.items():
        cb = OnlineLinearProbe(name=name, **kwargs)
        trainer = FakeTrainer(world_size=world_size, global_rank=rank)
        cb.setup(trainer, None, "fit")
        out["probe"][name] = step_and_validate(cb, trainer, FakeModule(), mine, my_val)

    # kNN on a bank of the training batches' embeddings (labelled rows only)
    knn = OnlineKNN(bank="train_batches", k=KNN_K, bank_size=64)
    trainer = FakeTrainer(world_size=world_size, global_rank=rank)
    knn.setup(trainer, None, "fit")
    for i, (z, y) in enumerate(mine):
        knn.on_train_batch_end(trainer, FakeModule(), train_out(z, y), None, i)
    out["knn_train_batches"] = knn_bank_and_metrics(knn, trainer, FakeModule(), my_val)

    # kNN on the clean pass over labelled_train_dataloader, sharded by batch over the ranks
    knn = OnlineKNN(bank="clean", k=KNN_K, name="knn_clean")
    trainer = clean_trainer(world_size, rank)
    knn.setup(trainer, None, "fit")
    module = CleanPassModule()
    out["knn_clean"] = (*knn_bank_and_metrics(knn, trainer, module, my_val), module.steps)
    return out


@functools.cache
def ddp_results() -> list[dict[str, Any]]:
    """The ranks' results of :func:`_worker` on 2 gloo processes (run once per test session)."""
    from ddp_utils import run_ddp

    return run_ddp(_worker, world_size=2)
