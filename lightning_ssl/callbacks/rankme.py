"""RankMe: the effective rank of the embeddings as a label-free quality signal.

Garrido, Balestriero, Najman, LeCun. "RankMe: Assessing the Downstream Performance of Pretrained
Self-Supervised Representations by Their Rank", ICML 2023 (arXiv:2210.02885).

For embeddings ``Z [N, K]`` (no centering) with singular values ``s_1 >= ... >= s_min(N,K)``:
``p_k = s_k / sum(s) + eps`` (eps = 1e-7) and ``RankMe(Z) = exp(-sum_k p_k log p_k)``.

The callback never holds the ``N x K`` matrix for the validation source: it accumulates the Gram
matrix ``Z^T Z`` (``K x K``, float64) batch by batch, all-reduces it across ranks, and takes the
square roots of its eigenvalues, which are the singular values of the global ``Z``. Every rank thus
computes and logs the same value, so Lightning's ``EarlyStopping`` and ``ModelCheckpoint`` can
monitor ``rankme`` under DDP.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_ssl import distributed as dist
from lightning_ssl.callbacks._common import EmbeddingBank, NamedCallback, NonFiniteEmbeddingError, step_tensor

__all__ = ["RankMe", "rankme", "rankme_from_singular_values", "singular_values_from_gram", "spectrum_image"]

PAPER_NUM_SAMPLES = 25_600
PAPER_EPS = 1e-7


def rankme_from_singular_values(s: Tensor, eps: float = PAPER_EPS) -> Tensor:
    """``exp(-sum p log p)`` with ``p = s / sum(s) + eps`` (Garrido et al. 2022, eq. 1)."""
    s = s.double()
    p = s / s.sum() + eps
    return torch.exp(-(p * torch.log(p)).sum())


def rankme(z: Tensor, eps: float = PAPER_EPS) -> Tensor:
    """RankMe of an embedding matrix ``[N, K]`` from its singular values (the paper's reference code)."""
    if z.ndim != 2:
        raise ValueError(f"rankme expects a 2-d [N, K] matrix, got shape {tuple(z.shape)}")
    return rankme_from_singular_values(torch.linalg.svdvals(z.double()), eps)


def singular_values_from_gram(gram: Tensor, num_samples: int) -> Tensor:
    """Singular values (descending) of ``Z`` from ``Z^T Z``: the ``min(N, K)`` largest eigenvalues' roots."""
    ev = torch.linalg.eigvalsh(gram.double()).flip(0).clamp_min(0.0)
    return ev[: min(num_samples, gram.shape[0])].sqrt()


def spectrum_image(s: Tensor, height: int = 160, width: int = 320, floor: float = 1e-8) -> Tensor:
    """A ``[3, H, W]`` plot of the normalised spectrum ``log10(s_k / sum s)`` against ``k / K``.

    The y axis spans ``[log10(floor), 0]``; dark grid lines mark the decades. Drawn with tensor ops so
    TensorBoard gets a figure without a plotting dependency.
    """
    s = s.double().cpu()
    p = (s / s.sum()).clamp_min(floor).log10()
    lo = math.log10(floor)
    img = torch.ones(3, height, width)
    for decade in range(int(lo), 1):  # horizontal grid line per decade
        y = int(round((decade / lo) * (height - 1))) if lo else 0
        img[:, y, :] = 0.85
    xs = torch.arange(width)
    k = (xs.double() / max(width - 1, 1) * (len(p) - 1)).round().long()
    ys = ((p[k] / lo) * (height - 1)).round().long().clamp(0, height - 1)
    for x in range(width):  # connect consecutive points so steep drops stay visible
        y0 = int(ys[x - 1]) if x else int(ys[x])
        a, b = sorted((y0, int(ys[x])))
        img[0, a : b + 1, x], img[1, a : b + 1, x], img[2, a : b + 1, x] = 0.1, 0.3, 0.8
    return img.float()


class RankMe(NamedCallback):
    """Log RankMe of the embeddings as ``rankme`` (and ``rankme/<key>`` for further keys).

    Args:
        num_samples: rows used, over all ranks (the paper's 25,600; capped by what exists). Each of W
            ranks contributes up to ``num_samples // W``.
        eps: the paper's epsilon in ``p_k = s_k / sum(s) + eps``.
        source: ``"val"`` (default): clean validation embeddings; ``"train"``: a rolling bank of the
            last ``num_samples`` training embeddings, for runs without a validation loop (the bank
            is part of the callback's state and survives resume).
        keys: step-output tensors to measure: ``"embeddings"`` (encoder output, default),
            ``"projections"`` (projector output), ``"both"`` or a list. The first is logged as
            ``name``, the others as ``name/<key>``.
        every_n_epochs: compute every N epochs (the metric is absent in the others).
        spectrum_every_n_epochs: every N epochs also draw the normalised singular-value spectrum to
            TensorBoard (``name/spectrum/<key>``); 0 disables it.
        name: the logged metric name (``rankme``), which ``EarlyStopping``/``ModelCheckpoint`` monitor.
        max_dim: refuse embeddings wider than this (the Gram matrix is ``K x K`` float64).

    Needs nothing from the model at construction: any method whose steps return the documented
    ``embeddings`` / ``projections`` works, in any modality.
    """

    def __init__(
        self,
        num_samples: int = PAPER_NUM_SAMPLES,
        eps: float = PAPER_EPS,
        source: str = "val",
        keys: str | Sequence[str] = "embeddings",
        every_n_epochs: int = 1,
        spectrum_every_n_epochs: int = 0,
        name: str = "rankme",
        max_dim: int = 16384,
    ) -> None:
        super().__init__()
        if source not in ("val", "train"):
            raise ValueError(f"RankMe: source must be 'val' or 'train', got {source!r}.")
        if num_samples < 2:
            raise ValueError(f"RankMe: num_samples must be >= 2, got {num_samples}.")
        if not eps > 0:
            raise ValueError(f"RankMe: eps must be > 0, got {eps}.")
        if every_n_epochs < 1:
            raise ValueError(f"RankMe: every_n_epochs must be >= 1, got {every_n_epochs}.")
        if spectrum_every_n_epochs < 0:
            raise ValueError(
                f"RankMe: spectrum_every_n_epochs must be >= 0 (0 disables it), got {spectrum_every_n_epochs}."
            )
        if isinstance(keys, str):
            keys = ["embeddings", "projections"] if keys == "both" else [keys]
        if not keys:
            raise ValueError("RankMe: keys is empty; use 'embeddings', 'projections' or 'both'.")
        self.num_samples, self.eps, self.source = int(num_samples), float(eps), source
        self.keys = list(keys)
        self.every_n_epochs, self.spectrum_every_n_epochs = every_n_epochs, spectrum_every_n_epochs
        self.name, self.max_dim = name, max_dim
        self._gram: dict[str, Tensor] = {}
        self._count: dict[str, int] = {}
        self._collecting = False
        self._banks: dict[str, EmbeddingBank] = {}
        self._done_epoch = -1
        self._warned_few: set[str] = set()
        self._world_size = 1
        self.last_value: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    def metric_name(self, key: str) -> str:
        return self.name if key == self.keys[0] else f"{self.name}/{key}"

    def _quota(self, trainer: L.Trainer) -> int:
        return max(1, self.num_samples // max(1, trainer.world_size))

    def _due(self, trainer: L.Trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _check_width(self, z: Tensor, key: str) -> None:
        if z.shape[1] > self.max_dim:
            raise ValueError(
                f"RankMe: {key!r} is {z.shape[1]} wide, above max_dim={self.max_dim} (the K x K float64 Gram "
                f"matrix would need {z.shape[1] ** 2 * 8 / 2**30:.1f} GiB). Monitor 'embeddings' instead, or "
                "raise max_dim."
            )

    def _accumulate(self, key: str, z: Tensor, quota: int) -> None:
        used = self._count.get(key, 0)
        z = z[: max(0, quota - used)]
        if z.shape[0] == 0:
            return
        self._check_width(z, key)
        z = z.double()
        if key in self._gram:
            self._gram[key].addmm_(z.T, z)  # in place: no new K x K buffer per batch
        else:
            self._gram[key] = z.T @ z
        self._count[key] = used + z.shape[0]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # A new fit starts from a clean slate: a callback reused by a fresh Trainer must neither skip the
        # epoch it last measured in the previous fit (``_done_epoch``) nor measure the previous model's
        # training embeddings. On resume, Lightning restores the saved state after this hook.
        self._world_size = trainer.world_size
        if stage == "fit":
            self._banks, self._done_epoch = {}, -1
            self._gram, self._count, self._collecting = {}, {}, False

    # ------------------------------------------------------------------ validation source
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collecting = self.source == "val" and not trainer.sanity_checking and self._due(trainer)
        self._gram, self._count = {}, {}

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._collecting or dataloader_idx != 0:
            return
        for key in self.keys:
            self._accumulate(key, step_tensor(outputs, key, "RankMe", "validation_step"), self._quota(trainer))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.source == "val" and self._collecting:
            self._collecting = False
            self._finish(trainer, pl_module, self._gram, self._count, "validation")
        elif self.source == "train":
            self._finish_from_banks(trainer, pl_module)

    # ------------------------------------------------------------------ training source
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.source != "train":
            return
        quota = self._quota(trainer)
        for key in self.keys:
            z = step_tensor(outputs, key, "RankMe", "training_step")
            self._check_width(z, key)
            bank = self._banks.get(key)
            if bank is None or bank.capacity != quota:
                bank = self._banks[key] = EmbeddingBank(quota)
            bank.add(z.float())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.source == "train":
            self._finish_from_banks(trainer, pl_module)

    def _finish_from_banks(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # with a validation loop this runs in on_validation_epoch_end, before the checkpoint and
        # early-stopping callbacks read the metric; without one, in on_train_epoch_end
        if self._done_epoch == trainer.current_epoch or not self._due(trainer):
            return
        self._done_epoch = trainer.current_epoch
        grams, counts = {}, {}
        for key in self.keys:
            rows = self._banks[key].filled()[0] if key in self._banks else None
            if rows is not None:
                rows = rows.to(pl_module.device, torch.float64)
                grams[key] = rows.T @ rows
            counts[key] = 0 if rows is None else rows.shape[0]
        self._finish(trainer, pl_module, grams, counts, "training")

    # ------------------------------------------------------------------ the computation
    def _finish(
        self, trainer: L.Trainer, pl_module: L.LightningModule, grams: dict[str, Tensor], counts: dict[str, int],
        where: str,
    ) -> None:
        for key in self.keys:
            local_n = counts.get(key, 0)
            n = int(dist.all_reduce_sum(torch.tensor(float(local_n), device=pl_module.device)).item())
            if n < 2:
                warnings.warn(
                    f"RankMe: {n} {where} sample(s) for {key!r} at epoch {trainer.current_epoch}; at least 2 are "
                    "needed. Skipped (the metric is not logged this epoch).",
                    stacklevel=2,
                )
                continue
            gram = grams.get(key) if local_n > 0 else None
            # ranks without rows still join the all-reduce with zeros of the right width
            dim = torch.tensor(float(gram.shape[0] if gram is not None else 0), device=pl_module.device)
            width = int(dist.all_reduce_max(dim).item())
            if gram is None or gram.shape[0] != width:
                gram = torch.zeros(width, width, dtype=torch.float64, device=pl_module.device)
            gram = dist.all_reduce_sum(gram)
            if not torch.isfinite(gram).all():
                raise NonFiniteEmbeddingError(
                    f"RankMe: the {where} {key!r} hold NaN or inf at epoch {trainer.current_epoch} (global step "
                    f"{trainer.global_step}). The representation has diverged: lower the learning rate, add "
                    "warm-up or gradient clipping, or use 32-bit precision. Checkpoints already written are intact."
                )
            if n < width and key not in self._warned_few:
                self._warned_few.add(key)
                hint = ("a larger validation split or source='train'" if self.source == "val"
                        else "a larger num_samples (the bank holds that many rows over all ranks)")
                warnings.warn(
                    f"RankMe: {n} {where} samples for {width}-dimensional {key!r}: fewer samples than dimensions "
                    f"caps RankMe at {n} and biases it down (the paper uses {PAPER_NUM_SAMPLES:,}). Use {hint}.",
                    stacklevel=2,
                )
            s = singular_values_from_gram(gram, n)
            value = rankme_from_singular_values(s, self.eps)
            self.last_value[key] = float(value)
            pl_module.log(self.metric_name(key), value.float().to(pl_module.device), on_step=False,
                          on_epoch=True, sync_dist=True)
            if self.spectrum_every_n_epochs and (trainer.current_epoch + 1) % self.spectrum_every_n_epochs == 0:
                self._log_spectrum(trainer, key, s)

    def _log_spectrum(self, trainer: L.Trainer, key: str, s: Tensor) -> None:
        if trainer.global_rank != 0:
            return
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_image"):
                experiment.add_image(f"{self.name}/spectrum/{key}", spectrum_image(s), trainer.global_step)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "banks": {k: b.state_dict() for k, b in self._banks.items()},
            "done_epoch": self._done_epoch,
            "warned_few": sorted(self._warned_few),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._banks = {}
        banks = state_dict.get("banks", {})
        if banks and self._world_size > 1:
            # Lightning saves rank 0's callback state only: W copies of rank 0's rows would be counted W times
            warnings.warn("RankMe(source='train'): the checkpoint holds rank 0's training bank only; under DDP "
                          "the banks restart empty and refill during the next epoch.", stacklevel=2)
            banks = {}
        for key, state in banks.items():
            bank = EmbeddingBank(int(state["capacity"]))
            bank.load_state_dict(state)
            self._banks[key] = bank
        self._done_epoch = int(state_dict.get("done_epoch", -1))
        warned = state_dict.get("warned_few", [])
        self._warned_few = set(warned) if isinstance(warned, (list, tuple, set)) else (set(self.keys) if warned else set())
