"""Helpers for the OnlineLinearProbe / OnlineKNN tests (and their DDP workers).

- :class:`FakeTrainer` / :class:`FakeModule`: the few attributes the probe and kNN hooks read, so the
  hooks can be driven by hand, in one process or in every rank of a gloo group (``ddp_utils.run_ddp``).
- :func:`clustered`: a fixed, seeded set of embeddings with class structure (plumbing and sync tests
  only; claims about learning use PneumoniaMNIST).
- :class:`RecordEpochMetrics`: snapshots ``trainer.callback_metrics`` at every validation epoch end.
- :class:`EpochSeeded` + :func:`epoch_deterministic_datamodule`: make every training epoch's data order
  and augmentations a function of the epoch number alone, so an interrupted-and-resumed run sees the
  same batches as an uninterrupted one (Lightning does not checkpoint the global RNG).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from lightning_ssl.data.image import ImageDataModule, collate_views
from ssl_method_helpers import MEDMNIST_ROOT


class FakeModule:
    """Stands in for the LightningModule: a device, train/eval mode, and ``log`` that records calls."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.training = True
        self.logged: dict[str, Tensor] = {}
        self.log_kwargs: dict[str, dict[str, Any]] = {}

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        self.logged[name] = torch.as_tensor(value).detach().clone()
        self.log_kwargs[name] = kwargs

    def train(self, mode: bool = True) -> FakeModule:
        self.training = mode
        return self

    def eval(self) -> FakeModule:
        return self.train(False)


class FakeTrainer:
    """The trainer attributes the callbacks read (world size and rank, epoch, stage, datamodule)."""

    def __init__(
        self,
        num_classes: int | None = 3,
        world_size: int = 1,
        global_rank: int = 0,
        current_epoch: int = 0,
        datamodule: Any = "default",
    ) -> None:
        self.world_size = world_size
        self.global_rank = global_rank
        self.current_epoch = current_epoch
        self.global_step = 0
        self.sanity_checking = False
        self.state = SimpleNamespace(fn="fit")
        self.limit_train_batches = 1.0
        self.fast_dev_run = False
        self.datamodule = SimpleNamespace(num_classes=num_classes) if datamodule == "default" else datamodule


def clustered(n: int, dim: int = 8, num_classes: int = 3, seed: int = 0, noise: float = 2.0) -> tuple[Tensor, Tensor]:
    """``n`` rows around ``num_classes`` fixed centres (labels cycle through the classes, then shuffled)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234)) * 2.0
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=g)]
    z = centres[y] + noise * torch.randn(n, dim, generator=g)
    return z, y


def train_out(z: Tensor, y: Tensor | None, index: Tensor | None = None) -> dict[str, Any]:
    """A training-step output as :class:`~lightning_ssl.methods.SSLMethod` returns it."""
    return {"loss": torch.tensor(0.0), "embeddings": z, "projections": z[:, :4], "target": y, "index": index}


def val_out(z: Tensor, y: Tensor | None) -> dict[str, Any]:
    return {"embeddings": z, "projections": z[:, :4], "target": y, "index": None}


def drive_probe_train(cb: Any, trainer: FakeTrainer, module: FakeModule, batches: list[dict[str, Any]]) -> None:
    for i, out in enumerate(batches):
        cb.on_train_batch_end(trainer, module, out, None, i)
        trainer.global_step += 1


def drive_validation(cb: Any, trainer: FakeTrainer, module: FakeModule, batches: list[dict[str, Any]]) -> None:
    cb.on_validation_epoch_start(trainer, module)
    for i, out in enumerate(batches):
        cb.on_validation_batch_end(trainer, module, out, None, i)
    cb.on_validation_epoch_end(trainer, module)


class RecordEpochMetrics(L.Callback):
    """``trainer.callback_metrics`` (as floats) at each validation epoch end, outside the sanity check.

    Place it last in ``callbacks`` so the monitoring callbacks have logged this epoch's values already.
    """

    def __init__(self) -> None:
        self.per_epoch: dict[int, dict[str, float]] = {}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.per_epoch[trainer.current_epoch] = {k: float(v) for k, v in trainer.callback_metrics.items()}


class EpochSeeded(L.Callback):
    """Seeds the global RNG (augmentations) from the epoch number at each training epoch start."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(1000 + trainer.current_epoch)


class EpochDeterministicDataModule(ImageDataModule):
    """PneumoniaMNIST (SimCLR views) whose training order depends on the epoch alone.

    The sampler is a one-replica ``DistributedSampler`` (order = f(seed, epoch); Lightning calls its
    ``set_epoch``, also after resume) and the loader has a private generator, so creating its iterator
    does not draw from the global RNG (which :class:`EpochSeeded` resets for the augmentations).
    """

    def train_dataloader(self) -> DataLoader:
        sampler = DistributedSampler(self.train_set, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=0, collate_fn=collate_views, generator=torch.Generator().manual_seed(0))


def epoch_deterministic_datamodule(batch_size: int = 16, **kwargs: Any) -> EpochDeterministicDataModule:
    args = dict(root=str(MEDMNIST_ROOT), num_workers=0, batch_size=batch_size, recipe="simclr")
    args.update(kwargs)
    return EpochDeterministicDataModule("pneumoniamnist", **args)


def probe_params(cb: Any) -> list[Tensor]:
    return [p.detach().clone() for p in cb.classifier.parameters()]


class SpyKNN:
    """Mixin for OnlineKNN: keeps a copy of the bank used in each evaluated validation epoch."""

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_validation_epoch_start(trainer, pl_module)  # type: ignore[misc]
        if not hasattr(self, "banks"):
            self.banks: dict[int, tuple[Tensor, Tensor]] = {}
        if self._bank is not None:  # type: ignore[attr-defined]
            self.banks[trainer.current_epoch] = tuple(t.detach().cpu().clone() for t in self._bank)  # type: ignore
