"""Online evaluation during pretraining: a linear (or MLP) probe and a weighted kNN classifier.

Both read the documented step outputs (``embeddings`` / ``projections``, ``target``, ``index``) and
never touch the method: the probe trains on *detached* embeddings with its own optimizer, outside the
SSL loss, so the encoder's gradients are exactly those of the objective (the protocol of Chen et al.
2020 and solo-learn, without mixing the classifier into the module). Metrics are torchmetrics objects
synchronised across ranks, so every rank logs the same value.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler, Subset
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MulticlassAUROC

from lightning_ssl import distributed as dist
from lightning_ssl.callbacks._common import (
    EmbeddingBank,
    NamedCallback,
    MissingLabelsError,
    NonFiniteEmbeddingError,
    class_targets,
    labelled_subset,
    resolve_num_classes,
    step_tensor,
)
from lightning_ssl.evaluation.knn import knn_predict

__all__ = ["OnlineKNN", "OnlineLinearProbe"]

_NO_LABELS = (
    "{caller}: {where} batches carry no labels (SSLBatch.target is None). The probe needs labelled "
    "batches: use a datamodule/dataset that returns targets (ImageDataModule does for every labelled "
    "dataset; a custom collate must fill SSLBatch.target), or remove {caller} from trainer.callbacks."
)


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    metrics: dict[str, Any] = {
        "val_acc": MulticlassAccuracy(num_classes, average="micro"),
        "val_balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
    }
    metrics["val_auroc"] = BinaryAUROC() if num_classes == 2 else MulticlassAUROC(num_classes)
    return MetricCollection(metrics, prefix=prefix)


def _check_finite(z: Tensor, caller: str, key: str, trainer: L.Trainer, where: str) -> None:
    if not torch.isfinite(z).all():
        raise NonFiniteEmbeddingError(
            f"{caller}: the {where} {key!r} hold NaN or inf at epoch {trainer.current_epoch} (global step "
            f"{trainer.global_step}). The representation has diverged: lower the learning rate, add warm-up or "
            "gradient clipping, or use 32-bit precision. Checkpoints already written are intact."
        )


def _update(metrics: MetricCollection, logits: Tensor, y: Tensor, num_classes: int) -> None:
    probs = logits.softmax(dim=1)
    for name, metric in metrics.items():
        if name.endswith("auroc") and num_classes == 2:
            metric.update(probs[:, 1], y)
        else:
            metric.update(probs, y)


def _log_metrics(pl_module: L.LightningModule, values: dict[str, Tensor]) -> None:
    for name, value in values.items():
        # computed from synchronised states: identical on every rank already
        pl_module.log(name, value.float().to(pl_module.device), on_step=False, on_epoch=True, sync_dist=True)


class _LabelledMonitor(NamedCallback):
    """What the probe and the kNN share: ``num_classes`` resolved at set-up, labels read from the step output."""

    num_classes: int | None
    _num_classes_arg: int | None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.num_classes = resolve_num_classes(trainer, self._num_classes_arg, type(self).__name__)
        self._world_size = trainer.world_size

    def _labels(self, outputs: Any, where: str) -> Tensor:
        target = outputs.get("target") if isinstance(outputs, dict) else None
        if target is None:
            raise MissingLabelsError(_NO_LABELS.format(caller=type(self).__name__, where=where))
        assert self.num_classes is not None
        return class_targets(target, self.num_classes, type(self).__name__)


class OnlineLinearProbe(_LabelledMonitor):
    """A classifier trained online on detached embeddings of the labelled training batches.

    Logs ``<name>/train_loss`` per step and, after each validation epoch, ``<name>/val_acc``,
    ``<name>/val_balanced_acc``, ``<name>/val_auroc`` (binary AUROC of the positive class, or macro
    one-vs-rest AUROC) and ``<name>/val_loss``.

    Args:
        num_classes: classes of the labels; ``None`` reads ``datamodule.num_classes``.
        key: step-output tensor to probe (``"embeddings"`` or ``"projections"``).
        hidden_dim: ``None`` for a linear probe; an int for a one-hidden-layer MLP probe.
        optimizer: ``"adamw"`` or ``"sgd"``; ``lr``, ``weight_decay``, ``momentum`` as usual.
        label_fraction: use the labels of this fraction of the training set only (a fixed subset chosen
            by sample id and ``seed``, the same in every epoch and on every rank).
        seed: seeds the probe's initialisation (a private generator: the training RNG is untouched).
        name: metric prefix.

    Under DDP each rank computes the summed loss of its labelled rows; gradients and row counts are
    all-reduced and divided by the global count, so every step equals one process on the whole
    batch and the probe stays identical on all ranks. The probe's weights and optimizer state live in
    the callback's ``state_dict`` (resumed with the run).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        key: str = "embeddings",
        hidden_dim: int | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        label_fraction: float = 1.0,
        seed: int = 0,
        name: str = "probe",
    ) -> None:
        super().__init__()
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"OnlineLinearProbe: optimizer must be 'adamw' or 'sgd', got {optimizer!r}.")
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"OnlineLinearProbe: label_fraction must be in (0, 1], got {label_fraction}.")
        self.num_classes, self.key, self.hidden_dim = num_classes, key, hidden_dim
        self._num_classes_arg, self._world_size = num_classes, 1
        self.optimizer_name, self.lr, self.weight_decay, self.momentum = optimizer, lr, weight_decay, momentum
        self.label_fraction, self.seed, self.name = label_fraction, seed, name
        self.classifier: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.in_dim: int | None = None
        self.metrics: MetricCollection | None = None
        self._val_loss: list[Tensor] = []
        self._pending_state: dict[str, Any] | None = None
        self._evaluating = False

    # ------------------------------------------------------------------ construction
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":  # a new fit gets a new probe; on resume Lightning loads the saved one after this
            self.classifier = self.optimizer = self.in_dim = None
            self._pending_state, self.metrics = None, None

    def _build(self, in_dim: int, device: torch.device) -> None:
        assert self.num_classes is not None
        g = torch.Generator().manual_seed(self.seed)
        # nn.Linear's constructor draws its default init from the global RNG: fork it, so that adding the
        # probe leaves the run's random stream (augmentations, shuffling) exactly as it was
        with torch.random.fork_rng(devices=[]):
            if self.hidden_dim:
                clf: nn.Module = nn.Sequential(
                    nn.Linear(in_dim, self.hidden_dim), nn.ReLU(inplace=True),
                    nn.Linear(self.hidden_dim, self.num_classes),
                )
            else:
                clf = nn.Linear(in_dim, self.num_classes)
        with torch.no_grad():  # PyTorch's default init, drawn from a private generator
            for m in clf.modules():
                if isinstance(m, nn.Linear):
                    bound = 1.0 / in_dim**0.5 if m.in_features == in_dim else 1.0 / m.in_features**0.5
                    m.weight.uniform_(-bound, bound, generator=g)
                    m.bias.uniform_(-bound, bound, generator=g)
        self.classifier = clf.to(device)
        self.in_dim = in_dim
        params = list(self.classifier.parameters())
        if self.optimizer_name == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.classifier.load_state_dict(state["classifier"])
            self.optimizer.load_state_dict(state["optimizer"])

    def _ensure(self, z: Tensor) -> None:
        if self.classifier is None:
            self._build(z.shape[1], z.device)
        elif z.shape[1] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__}: {self.key!r} has width {z.shape[1]} but the probe was built for "
                f"{self.in_dim} (e.g. a checkpoint from another encoder). Start a fresh probe."
            )
        elif next(self.classifier.parameters()).device != z.device:
            self.classifier.to(z.device)
            if self.optimizer is not None:  # move optimizer buffers with the weights
                self.optimizer.load_state_dict(self.optimizer.state_dict())

    # ------------------------------------------------------------------ training
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        z = step_tensor(outputs, self.key, type(self).__name__, "training_step").float()
        y = self._labels(outputs, "training")
        keep = y >= 0
        subset = labelled_subset(outputs.get("index"), len(y), self.label_fraction, self.seed, type(self).__name__)
        if subset is not None:
            keep &= subset.to(keep.device)
        self._ensure(z)
        assert self.classifier is not None and self.optimizer is not None
        self.classifier.train()
        with torch.enable_grad():
            logits = self.classifier(z[keep])
            loss_sum = F.cross_entropy(logits, y[keep], reduction="sum")
            self.optimizer.zero_grad(set_to_none=False)
            loss_sum.backward()
        params = [p for p in self.classifier.parameters()]
        flat = torch.cat([p.grad.reshape(-1) for p in params] + [loss_sum.detach().reshape(1), keep.sum().reshape(1).to(z)])
        flat = dist.all_reduce_sum(flat)  # one collective: gradients, loss and labelled-row count
        count = flat[-1]
        if count.item() == 0:
            return
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p) / count)
            offset += p.numel()
        self.optimizer.step()
        pl_module.log(f"{self.name}/train_loss", flat[-2] / count, on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluating = not trainer.sanity_checking and self.classifier is not None
        if self.classifier is None and not trainer.sanity_checking:
            warnings.warn(f"{type(self).__name__}: no training batch seen yet; the probe is not evaluated.", stacklevel=2)
        if self._evaluating:
            assert self.num_classes is not None
            if self.metrics is None:
                self.metrics = _metrics(self.num_classes, f"{self.name}/")
            self.metrics = self.metrics.to(pl_module.device)
            self.metrics.reset()
            self._val_loss = []

    @torch.no_grad()
    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._evaluating or dataloader_idx != 0:
            return
        z = step_tensor(outputs, self.key, type(self).__name__, "validation_step").float()
        _check_finite(z, type(self).__name__, self.key, trainer, "validation")
        y = self._labels(outputs, "validation")
        keep = y >= 0
        z, y = z[keep], y[keep]
        self._ensure(z)
        assert self.classifier is not None and self.metrics is not None
        self.classifier.eval()
        logits = self.classifier(z)
        _update(self.metrics, logits, y, self.num_classes)  # type: ignore[arg-type]
        self._val_loss.append(torch.stack([F.cross_entropy(logits, y, reduction="sum"), y.new_tensor(len(y)).to(logits)]))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._evaluating:
            return
        self._evaluating = False
        assert self.metrics is not None
        values = self.metrics.compute()
        # every rank joins the all-reduce, also one that saw no validation batch (else the others would hang)
        local = torch.stack(self._val_loss).sum(0) if self._val_loss else torch.zeros(2, device=pl_module.device)
        total = dist.all_reduce_sum(local.to(pl_module.device))
        if total[1] > 0:
            values[f"{self.name}/val_loss"] = total[0] / total[1]
        _log_metrics(pl_module, values)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        if self.classifier is None:
            return dict(self._pending_state or {})
        assert self.optimizer is not None
        return {
            "classifier": {k: v.detach().cpu().clone() for k, v in self.classifier.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "in_dim": self.in_dim,
            "num_classes": self.num_classes,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self._pending_state = state_dict
        self.classifier = self.optimizer = None
        self.num_classes = int(state_dict["num_classes"]) if self.num_classes is None else self.num_classes
        if int(state_dict["num_classes"]) != self.num_classes:
            raise ValueError(
                f"{type(self).__name__}: the checkpoint's probe has {state_dict['num_classes']} classes but "
                f"num_classes={self.num_classes}. Resume with the same dataset or drop the probe state."
            )
        self._build(int(state_dict["in_dim"]), torch.device("cpu"))


def _evenly_spaced_loader(loader: Any, rows: int, rank: int, world: int) -> DataLoader | None:
    """``loader`` re-made over this rank's share of ``rows`` evenly spaced samples (indices ``i * N // rows``).

    ``None`` when ``loader`` is not a plain, unshuffled ``DataLoader`` over a map-style dataset (its
    batches are then read in order); ``loader`` itself when one process embeds all of it.
    """
    if type(loader) is not DataLoader or loader.batch_size is None or not isinstance(loader.sampler, SequentialSampler):
        return None
    size = len(loader.dataset)  # type: ignore[arg-type]
    rows = min(rows, size)
    if rows <= 0:
        return None
    if rows == size and world == 1:
        return loader
    index = (torch.arange(rows) * size // rows)[rank::world].tolist()
    return DataLoader(
        Subset(loader.dataset, index),
        batch_size=loader.batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if loader.num_workers > 0 else None,
    )


class OnlineKNN(_LabelledMonitor):
    """Weighted kNN accuracy of validation embeddings against a bank of training embeddings.

    Wu et al. 2018 / DINO (Caron et al. 2021): cosine similarity, the ``k`` nearest bank rows vote
    with weight ``exp(sim / temperature)``. Logs ``<name>/val_acc`` and ``<name>/val_balanced_acc``.

    Args:
        k, temperature: DINO's 20 and 0.07 by default.
        key: step-output tensor (``"embeddings"`` or ``"projections"``).
        bank: ``"clean"`` (default): before each evaluated validation epoch, embed the labelled training
            set with the clean transform (``datamodule.labelled_train_dataloader()``, through the
            method's ``validation_step``), sharded over ranks and gathered; ``"train_batches"``: a
            rolling bank of the augmented training batches' embeddings (no extra pass; cheaper, less clean).
        bank_size: rows in the bank (over all ranks).
        num_classes: ``None`` reads ``datamodule.num_classes``.
        every_n_epochs: evaluate every N epochs.
        name: metric prefix.

    The clean pass honours ``trainer.limit_train_batches`` (and ``fast_dev_run``). When it embeds only
    part of the labelled set (``bank_size`` or a batch limit: ``rows`` of ``N`` samples), it takes the
    evenly spaced samples ``i * N // rows``, so that a dataset stored sorted by class (MedMNIST,
    ImageFolder) is represented in proportion rather than by its first classes; each rank embeds every
    ``world_size``-th of them. This needs a plain ``torch.utils.data.DataLoader`` over a map-style
    dataset without shuffling; other loaders (e.g. graph samplers) are read from their first batch, and
    their batches are dealt out to the ranks in turn.
    """

    def __init__(
        self,
        k: int = 20,
        temperature: float = 0.07,
        key: str = "embeddings",
        bank: str = "clean",
        bank_size: int = 65_536,
        num_classes: int | None = None,
        every_n_epochs: int = 1,
        name: str = "knn",
    ) -> None:
        super().__init__()
        if k < 1 or temperature <= 0:
            raise ValueError(f"OnlineKNN: need k >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
        if bank not in ("clean", "train_batches"):
            raise ValueError(f"OnlineKNN: bank must be 'clean' or 'train_batches', got {bank!r}.")
        if bank_size < 1 or every_n_epochs < 1:
            raise ValueError(
                f"OnlineKNN: need bank_size >= 1 and every_n_epochs >= 1, got bank_size={bank_size}, "
                f"every_n_epochs={every_n_epochs}."
            )
        self.k, self.temperature, self.key, self.bank_mode = k, temperature, key, bank
        self.bank_size, self.num_classes, self.every_n_epochs, self.name = bank_size, num_classes, every_n_epochs, name
        self._num_classes_arg, self._world_size = num_classes, 1
        self._train_bank: EmbeddingBank | None = None
        self._bank: tuple[Tensor, Tensor] | None = None
        self.metrics: MetricCollection | None = None
        self._evaluating = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":  # a new fit starts with an empty bank; on resume the saved one is loaded after this
            self._train_bank, self._bank, self.metrics = None, None, None
        if self.bank_mode == "clean" and stage == "fit":
            dm = getattr(trainer, "datamodule", None)
            if dm is None or not hasattr(dm, "labelled_train_dataloader"):
                raise ValueError(
                    "OnlineKNN(bank='clean') embeds the clean labelled training set through "
                    "`datamodule.labelled_train_dataloader()`, which "
                    f"{'no datamodule' if dm is None else type(dm).__name__} provides. Add that method to "
                    "the datamodule, or use OnlineKNN(bank='train_batches')."
                )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.bank_mode != "train_batches":
            return
        z = step_tensor(outputs, self.key, type(self).__name__, "training_step")
        y = self._labels(outputs, "training")
        if self._train_bank is None:
            self._train_bank = EmbeddingBank(max(1, self.bank_size // trainer.world_size))
        self._train_bank.add(z[y >= 0].float(), y[y >= 0])

    # ------------------------------------------------------------------ bank
    @torch.no_grad()
    def _clean_bank(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor, Tensor]:
        loader = trainer.datamodule.labelled_train_dataloader()  # type: ignore[union-attr]
        limit = trainer.limit_train_batches
        n_batches = len(loader)
        if trainer.fast_dev_run:
            n_batches = min(n_batches, int(trainer.fast_dev_run))
        elif isinstance(limit, int):
            n_batches = min(n_batches, limit)
        elif limit is not None and limit < 1.0:
            n_batches = max(1, int(n_batches * limit))
        rank, world = trainer.global_rank, trainer.world_size
        per_rank = max(1, self.bank_size // world)
        rows = min(self.bank_size, n_batches * (getattr(loader, "batch_size", None) or 0))
        spread = _evenly_spaced_loader(loader, rows, rank, world)
        shard_batches = spread is None  # else the loader holds this rank's share already
        if spread is not None:
            loader, n_batches = spread, len(spread)
        feats, labels, n = [], [], 0
        was_training = pl_module.training
        pl_module.eval()
        # creating the loader's iterator draws a base seed from the global RNG: fork it (and the module's
        # CUDA generator), so the extra pass leaves the training run's random stream untouched
        rng_devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            try:
                for i, batch in enumerate(loader):
                    if i >= n_batches or n >= per_rank:
                        break
                    if shard_batches and i % world != rank:
                        continue
                    # the same transfer hooks as a validation batch (the datamodule's on_after_batch_transfer)
                    batch = trainer.strategy.batch_to_device(batch, pl_module.device)
                    with trainer.precision_plugin.val_step_context():
                        out = pl_module.validation_step(batch, i)
                    z = step_tensor(out, self.key, type(self).__name__, "validation_step").float()
                    y = self._labels(out, "labelled training")
                    keep = y >= 0
                    feats.append(z[keep][: per_rank - n])
                    labels.append(y[keep][: per_rank - n])
                    n += feats[-1].shape[0]
            finally:
                pl_module.train(was_training)
        dim = torch.tensor(float(feats[0].shape[1] if feats else 0), device=pl_module.device)
        width = int(dist.all_reduce_max(dim).item())
        bank = torch.cat(feats) if feats else torch.zeros(0, width, device=pl_module.device)
        y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=pl_module.device)
        return dist.gather_variable(bank), dist.gather_variable(y)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        self._evaluating = not trainer.sanity_checking and due and trainer.state.fn == "fit"
        if not self._evaluating:
            return
        if self.bank_mode == "clean":
            bank, y = self._clean_bank(trainer, pl_module)
        else:
            local = self._train_bank.filled() if self._train_bank is not None else (None, None)
            rows = local[0] if local[0] is not None else torch.zeros(0, 0, device=pl_module.device)
            width = int(dist.all_reduce_max(torch.tensor(float(rows.shape[1]), device=pl_module.device)).item())
            if rows.shape[1] != width:
                rows = rows.new_zeros(0, width)
            labels = local[1] if local[1] is not None else torch.zeros(0, dtype=torch.long, device=pl_module.device)
            bank, y = dist.gather_variable(rows.to(pl_module.device)), dist.gather_variable(labels.to(pl_module.device))
        if bank.shape[0] == 0:
            warnings.warn(f"OnlineKNN: the bank is empty at epoch {trainer.current_epoch}; kNN is not evaluated.",
                          stacklevel=2)
            self._evaluating = False
            return
        _check_finite(bank, type(self).__name__, self.key, trainer, "training-bank")
        self._bank = (bank, y)
        if self.metrics is None:
            self.metrics = MetricCollection(
                {"val_acc": MulticlassAccuracy(self.num_classes, average="micro"),  # type: ignore[arg-type]
                 "val_balanced_acc": MulticlassAccuracy(self.num_classes, average="macro")},  # type: ignore[arg-type]
                prefix=f"{self.name}/",
            )
        self.metrics = self.metrics.to(pl_module.device)
        self.metrics.reset()

    @torch.no_grad()
    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._evaluating or dataloader_idx != 0 or self._bank is None:
            return
        z = step_tensor(outputs, self.key, type(self).__name__, "validation_step").float()
        _check_finite(z, type(self).__name__, self.key, trainer, "validation")
        y = self._labels(outputs, "validation")
        keep = y >= 0
        bank, bank_y = self._bank
        if z.shape[1] != bank.shape[1]:
            raise ValueError(f"OnlineKNN: validation {self.key!r} width {z.shape[1]} != bank width {bank.shape[1]}.")
        pred = knn_predict(bank, bank_y, z[keep], self.num_classes, k=self.k, temperature=self.temperature)  # type: ignore[arg-type]
        assert self.metrics is not None
        self.metrics.update(pred, y[keep])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._evaluating:
            return
        self._evaluating, self._bank = False, None
        assert self.metrics is not None
        _log_metrics(pl_module, self.metrics.compute())

    def state_dict(self) -> dict[str, Any]:
        return {"train_bank": None if self._train_bank is None else self._train_bank.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("train_bank")
        if state is not None and self._world_size > 1:
            # Lightning saves rank 0's callback state only: every rank would hold rank 0's rows
            warnings.warn("OnlineKNN(bank='train_batches'): the checkpoint holds rank 0's bank only; under DDP "
                          "the banks restart empty and refill during training.", stacklevel=2)
            state = None
        if state is not None:
            self._train_bank = EmbeddingBank(int(state["capacity"]))
            self._train_bank.load_state_dict(state)
