"""Helpers for the RankMe and LabelFreeEarlyStopping tests (and the DDP driver beside them).

- :func:`reference_rankme`: the paper's definition written out independently of the library.
- :class:`RecordOutputs`: keeps what the steps returned, per epoch, outside the sanity check.
- :class:`FakeTrainer` / :class:`FakeModule`: the few attributes RankMe reads, so that its hooks can be
  driven by hand (in one process or in every rank of a gloo group).
- :class:`TinyModule` / :class:`ScriptedMetric`: a tiny LightningModule on a few random rows and a
  callback that logs a scripted ``rankme`` per epoch, for deterministic early-stopping runs;
  :class:`TinySSLModule` also returns ``embeddings`` from its training step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


def reference_rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """Garrido et al. 2022, eq. 1: singular values of Z (no centering), p = s / sum(s) + eps,
    RankMe = exp(-sum p log p). Computed with numpy in float64, independently of torch's code path."""
    import numpy as np

    s = np.linalg.svd(z.detach().double().cpu().numpy(), compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


class RecordOutputs(L.Callback):
    """Stores ``outputs[key]`` of every training / validation step (sanity check excluded), per epoch,
    and the value of ``trainer.callback_metrics[metric]`` seen at each validation end."""

    def __init__(self, keys: Sequence[str] = ("embeddings", "projections"), metric: str = "rankme") -> None:
        self.keys = tuple(keys)
        self.metric = metric
        self.val: dict[int, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
        self.train: dict[int, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
        self.metric_at_epoch_end: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for key in self.keys:
            self.train[trainer.current_epoch][key].append(outputs[key].detach().cpu().clone())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            return
        for key in self.keys:
            self.val[trainer.current_epoch][key].append(outputs[key].detach().cpu().clone())

    def on_train_epoch_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.metric)
        if value is not None:
            self.metric_at_epoch_end[trainer.current_epoch] = float(value)

    def val_rows(self, epoch: int, key: str = "embeddings") -> torch.Tensor:
        return torch.cat(self.val[epoch][key])

    def train_rows(self, epoch: int, key: str = "embeddings") -> torch.Tensor:
        return torch.cat(self.train[epoch][key])


class FakeTrainer:
    """What RankMe reads from a Trainer."""

    def __init__(self, world_size: int = 1, global_rank: int = 0, current_epoch: int = 0) -> None:
        self.world_size = world_size
        self.global_rank = global_rank
        self.current_epoch = current_epoch
        self.global_step = 0
        self.sanity_checking = False
        self.loggers: list[Any] = []


class FakeModule:
    """What RankMe reads from a LightningModule: ``device`` and ``log`` (which records every call)."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.logged: list[tuple[str, torch.Tensor, dict[str, Any]]] = []

    def log(self, name: str, value: torch.Tensor, **kwargs: Any) -> None:
        self.logged.append((name, value.detach().clone(), kwargs))

    def values(self, name: str) -> list[float]:
        return [float(v) for n, v, _ in self.logged if n == name]


def drive_validation(cb, trainer: FakeTrainer, module: FakeModule, batches: Sequence[dict[str, torch.Tensor]]) -> None:
    """One validation epoch through RankMe's hooks, with ``batches`` as the validation_step outputs."""
    cb.on_validation_epoch_start(trainer, module)
    for i, out in enumerate(batches):
        cb.on_validation_batch_end(trainer, module, out, None, i)
    cb.on_validation_epoch_end(trainer, module)


class TinyModule(L.LightningModule):
    """A linear layer on 8 random rows: trains in milliseconds; the metric comes from ScriptedMetric."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        return {"embeddings": self.layer(x)}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def _loader(self):
        return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()


class TinySSLModule(TinyModule):
    """TinyModule whose training_step also returns ``embeddings`` (the step-output contract RankMe reads)."""

    def training_step(self, batch, batch_idx):
        (x,) = batch
        z = self.layer(x)
        return {"loss": z.pow(2).mean(), "embeddings": z.detach()}


class ScriptedMetric(L.Callback):
    """Logs ``values[epoch]`` as ``name`` at the end of every validation epoch; remembers the epochs run."""

    def __init__(self, values: Sequence[float], name: str = "rankme") -> None:
        self.values = list(values)
        self.name = name
        self.epochs: list[int] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self.epochs.append(trainer.current_epoch)
        pl_module.log(self.name, float(self.values[trainer.current_epoch]), on_epoch=True)


def tiny_trainer(tmp_path, callbacks, max_epochs: int = 10, **kwargs: Any) -> L.Trainer:
    args: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=callbacks,
    )
    args.update(kwargs)
    return L.Trainer(**args)
