"""The modality-agnostic SSL method: a LightningModule around an encoder it is given.

A method is an objective plus heads. The base class owns everything the objectives share: the
multi-view forward, the projection/prediction heads, the step-output contract read by callbacks,
optimizer and scheduler set-up (SGD, AdamW, LARS; warm-up + cosine; opt-in learning-rate scaling),
logging, and the checks that stop a run early with a clear message. Subclasses implement
:meth:`SSLMethod.compute_loss` and, where they need to, override one small hook
(:meth:`project`, :meth:`predict`, :meth:`encode_views`, :meth:`prepare_views`,
:meth:`encode_training_views`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_ssl import distributed as dist
from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.optim import (
    LR_SCALING_RULES,
    LR_SCHEDULES,
    OPTIMIZERS,
    InfiniteSchedule,
    WarmupCosineSchedule,
    check_infinite_options,
    build_optimizer,
    param_groups_no_weight_decay,
    scale_learning_rate,
)


def encoder_spec(encoder: nn.Module) -> dict[str, Any]:
    """What a checkpoint records of its encoder (``checkpoint["lightning_ssl_encoder"]``): the class and,
    where the encoder has them, ``name``, ``in_chans`` and ``small_stem``; export and evaluation read it."""
    spec: dict[str, Any] = {"class": f"{type(encoder).__module__}.{type(encoder).__qualname__}"}
    for key in ("name", "in_chans", "small_stem"):
        if hasattr(encoder, key):
            spec[key] = getattr(encoder, key)
    return spec


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss is NaN or infinite; checkpoints written before are untouched."""


@dataclass
class ViewOutputs:
    """What :meth:`SSLMethod.compute_loss` receives for one training batch.

    ``embeddings[i]`` is the encoder output of view ``i`` (rows restricted by ``batch.mask``),
    ``projections[i]`` the projector output of the same view. ``unmasked[i]`` is the encoder output of
    every row of view ``i`` (all nodes of a sampled subgraph, for decoders that message-pass over it);
    ``extra`` is what :meth:`SSLMethod.prepare_views` returned (e.g. which nodes were masked).
    """

    embeddings: list[Tensor]
    projections: list[Tensor]
    batch: SSLBatch
    extra: dict[str, Any] = field(default_factory=dict)
    unmasked: list[Tensor] = field(default_factory=list)


def as_ssl_batch(batch: Any) -> SSLBatch:
    """Accept an :class:`SSLBatch`, a dict with its keys, or an ``(views, target)`` tuple."""
    if isinstance(batch, SSLBatch):
        return batch
    if isinstance(batch, dict) and "views" in batch:
        return SSLBatch(**{k: batch.get(k) for k in ("views", "target", "mask", "index")})
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        views, target = batch
        return SSLBatch(views=list(views) if isinstance(views, (tuple, list)) else [views], target=target)
    raise TypeError(
        f"A method expects an SSLBatch (or a dict with 'views'); got {type(batch).__name__}. "
        "Use one of the lightning_ssl datamodules or return SSLBatch from your collate function."
    )


class SSLMethod(L.LightningModule):
    """Base class of all SSL methods.

    Args:
        encoder: ``nn.Module`` with ``forward(view) -> [N, out_dim]`` and an ``out_dim`` attribute.
        optimizer: ``"sgd"``, ``"adamw"``, ``"lars"`` (You et al. 2017) or ``"adam"`` (L2 weight decay).
        lr: base learning rate (before optional scaling).
        weight_decay: applied to weights only; biases and norm parameters get none (and no LARS
            adaptation) when ``exclude_bias_and_norm``.
        momentum: SGD/LARS momentum.
        warmup_epochs: linear warm-up length (fractions allowed), then cosine decay to
            ``lr * min_lr_factor`` at the last step.
        lr_scaling: ``"none"`` (default), ``"linear"`` (lr x B/256, Goyal et al. 2017) or ``"sqrt"``;
            B is the global batch size. The scaled value is logged as ``train/lr_scaled``.
        reference_batch_size: the B in the scaling rule's denominator.
        lr_schedule: ``"warmup_cosine"`` (default; the above) or ``"infinite"``: warm-up, cosine cooldown
            to a constant level, constant phase, final annealing (Ibrahim et al. 2024; for continual
            pre-training, Singh et al. 2025; :class:`~lightning_ssl.optim.InfiniteSchedule`).
        infinite_schedule: options of the infinite schedule (only with ``lr_schedule: infinite``):
            ``cooldown_fraction`` / ``cooldown_steps``, ``anneal_fraction`` / ``anneal_steps``,
            ``warmup_fraction`` / ``warmup_steps`` (default: ``warmup_epochs``), ``constant_factor``
            and ``min_factor`` (of ``lr``), ``annealing`` (``"exponential"`` or ``"linear"``) and
            ``start_phase``: ``"constant"`` for a continual run resumed from a constant-phase
            checkpoint (no warm-up, no cooldown). See :func:`~lightning_ssl.optim.check_infinite_options`.
    """

    #: number of leading views a training batch must carry
    min_views: int = 2
    #: message-passing hops the method adds after the encoder (GraphMAE's GNN decoder: 1); neighbour
    #: sampling needs one fan-out per encoder layer plus these
    extra_hops: int = 0
    #: True when compute_loss already returns the global-batch loss (same value on every rank); else
    #: the logged ``train/loss`` is averaged over ranks so every rank logs the same number
    loss_is_global: bool = False

    def __init__(
        self,
        encoder: nn.Module,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
        warmup_epochs: float = 10.0,
        min_lr_factor: float = 0.0,
        lr_scaling: str = "none",
        reference_batch_size: int = 256,
        exclude_bias_and_norm: bool = True,
        lr_schedule: str = "warmup_cosine",
        infinite_schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}.")
        if not isinstance(getattr(encoder, "out_dim", None), int):
            raise ValueError(
                f"{type(encoder).__name__} has no integer `out_dim`; every encoder must expose the width "
                "of its output (see lightning_ssl.encoders)."
            )
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {optimizer!r}; valid names: {', '.join(OPTIMIZERS)}.")
        if lr_scaling not in LR_SCALING_RULES:
            raise ValueError(f"Unknown lr_scaling {lr_scaling!r}; valid rules: {', '.join(LR_SCALING_RULES)}.")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Unknown lr_schedule {lr_schedule!r}; valid schedules: {', '.join(LR_SCHEDULES)}.")
        if infinite_schedule is not None and lr_schedule != "infinite":
            raise ValueError(
                f"infinite_schedule is set but lr_schedule is {lr_schedule!r}: set lr_schedule: infinite to use it, "
                "or remove infinite_schedule."
            )
        if lr_schedule == "infinite":
            check_infinite_options(infinite_schedule)  # fail at construction, before any data is read
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.projector: nn.Module = nn.Identity()
        self.predictor: nn.Module = nn.Identity()
        self._pending_losses: list[tuple[Tensor, int]] = []

    # ------------------------------------------------------------------ hooks for subclasses
    def forward(self, x: Any) -> Tensor:
        """The representation downstream tasks use: the encoder output."""
        return self.encoder(x)

    def project(self, h: Tensor) -> Tensor:
        """Projector head on encoder outputs."""
        return self.projector(h)

    def predict(self, z: Tensor) -> Tensor:
        """Predictor head on projections (BYOL, SimSiam, MoCo v3); identity elsewhere."""
        return self.predictor(z)

    def prepare_views(self, batch: SSLBatch) -> tuple[list[Any], dict[str, Any]]:
        """The encoder inputs of a training batch and any side information for :meth:`compute_loss`.

        Default: the batch's views unchanged. Masked-modelling methods (GraphMAE, MAE) override it to
        mask the input and return the mask in the dict (passed on as ``ViewOutputs.extra``).
        """
        return batch.views, {}

    def check_views(self, views: list[Any]) -> None:
        """Called in ``setup`` with the datamodule's view specs (``dm.views``, e.g. a ``GraphView`` list, or
        ``dm.view_specs()``, the images' ``ViewSpec`` list); raise a clear
        error when the method cannot use them (DGI needs a corruption view, GraphMAE the clean graph)."""

    def compute_loss(self, out: ViewOutputs) -> Tensor | dict[str, Tensor]:
        """The objective. Return the loss, or a dict with ``loss`` and parts logged as ``train/<key>``."""
        raise NotImplementedError

    def encode_views(self, views: list[Any], module: nn.Module | None = None) -> list[Tensor]:
        """Run ``module`` (default: the encoder) over every view.

        Tensor views of the same shape go through in one forward pass (multi-crop resolutions are
        grouped, as in DINO); other views (PyG batches) are encoded one by one.
        """
        module = self.encoder if module is None else module
        out: list[Tensor | None] = [None] * len(views)
        groups: dict[tuple, list[int]] = {}
        for i, v in enumerate(views):
            if isinstance(v, Tensor):
                groups.setdefault(tuple(v.shape), []).append(i)
            else:
                out[i] = module(v)
        for idx in groups.values():
            h = module(torch.cat([views[i] for i in idx], dim=0))
            for i, chunk in zip(idx, h.chunk(len(idx), dim=0)):
                out[i] = chunk
        return out  # type: ignore[return-value]

    def encode_training_views(self, views: list[Any], extra: dict[str, Any]) -> list[Tensor]:
        """Encoder outputs ``[N, D]`` of the training views (what :meth:`prepare_views` returned).

        Default: :meth:`encode_views`. Masked-modelling methods that encode only part of the input
        (Point-MAE: the visible patches) override it: they return pooled ``[N, D]`` embeddings, which
        the probes and RankMe read, and put their token-level outputs into ``extra`` for
        :meth:`compute_loss`.
        """
        return self.encode_views(views)

    @staticmethod
    def apply_mask(x: Tensor, batch: SSLBatch) -> Tensor:
        """Keep the rows that count (``batch.mask``), e.g. seed nodes of a sampled subgraph."""
        return x if batch.mask is None else x[batch.mask]

    # ------------------------------------------------------------------ Lightning steps
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        batch = as_ssl_batch(batch)
        if len(batch.views) < self.min_views:
            raise ValueError(
                f"{type(self).__name__} needs >= {self.min_views} views per training batch, got "
                f"{len(batch.views)}. Give the datamodule more views (images: a multi-view recipe such as "
                "recipe: simclr; graphs: one GraphView per view in data.views)."
            )
        views, extra = self.prepare_views(batch)
        h_all = self.encode_training_views(views, extra)
        h = [self.apply_mask(x, batch) for x in h_all]
        z = [self.project(x) for x in h]
        with dist.uneven_rows(batch.mask is not None):  # masked rows: ranks may hold different counts
            result = self.compute_loss(ViewOutputs(embeddings=h, projections=z, batch=batch, extra=extra, unmasked=h_all))
        parts = result if isinstance(result, dict) else {"loss": result}
        loss = parts["loss"]
        self._pending_losses.append((loss.detach(), batch_idx))  # checked in on_before_optimizer_step
        bs = h[0].shape[0]
        sync = not self.loss_is_global
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=sync)
        for key, value in parts.items():
            if key != "loss":
                self.log(f"train/{key}", value, batch_size=bs, sync_dist=sync)
        opt = self.optimizers(use_pl_optimizer=False) if self._trainer is not None else None
        if opt is not None and hasattr(opt, "param_groups"):
            self.log("train/lr", opt.param_groups[0]["lr"], batch_size=bs)
        return {
            "loss": loss,
            "embeddings": h[0].detach(),
            "projections": z[0].detach(),
            "target": self._masked(batch.target, batch),
            "index": self._masked(batch.index, batch),
        }

    def _masked(self, x: Tensor | None, batch: SSLBatch) -> Tensor | None:
        return None if x is None else self.apply_mask(x, batch)

    def _eval_step(self, batch: Any, with_projections: bool = False) -> dict[str, Any]:
        """Clean-view outputs: ``embeddings`` (encoder output), ``target``, ``index``, and in validation
        ``projections`` (projector output) for the monitoring callbacks."""
        batch = as_ssl_batch(batch)
        h = self.apply_mask(self(batch.views[0]), batch)
        out = {"embeddings": h, "target": self._masked(batch.target, batch), "index": self._masked(batch.index, batch)}
        if with_projections:
            out["projections"] = self.project(h)
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, with_projections=True)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # Subclasses that override this hook must call super(). The finiteness check needs one host sync; here, after backward, the accelerator has no work
        # left to overlap, and the optimizer has not stepped yet, so a bad step changes nothing on disk.
        pending, self._pending_losses = self._pending_losses, []
        if pending:
            self._check_finite(torch.stack([loss for loss, _ in pending]), [idx for _, idx in pending])

    def _check_finite(self, losses: Tensor, batch_indices: list[int]) -> None:
        """Raise :class:`NonFiniteLossError` if any loss of this optimizer step (on any rank) is NaN/inf."""
        bad = (~torch.isfinite(losses)).float()
        count = bad.sum()
        if dist.is_distributed():
            count = dist.all_reduce_sum(count)
        if count.item() > 0:
            first = int(bad.nonzero()[0]) if bad.any() else 0
            where = f"batch {batch_indices[first]}" if bad.any() else "on another rank"
            raise NonFiniteLossError(
                f"{type(self).__name__}: non-finite training loss ({losses[first].item()}) at global step "
                f"{self.global_step} (epoch {self.current_epoch}, {where}). Training stopped before the optimizer "
                "step; checkpoints written before this step are left as they were. Likely fixes: lower the "
                "learning rate, add warm-up or gradient clipping (trainer.gradient_clip_val), check the "
                "data for NaN/inf, or use 32-bit precision."
            )

    def configure_callbacks(self) -> list[L.Callback]:
        """Add :class:`~lightning_ssl.callbacks.LogAugmentedViews` unless the Trainer already has one,
        so every run (CLI, Python, DDP) logs its training views once to TensorBoard."""
        from lightning_ssl.callbacks.view_grid import LogAugmentedViews

        if any(isinstance(cb, LogAugmentedViews) for cb in self.trainer.callbacks):
            return []
        return [LogAugmentedViews()]

    # ------------------------------------------------------------------ set-up checks
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "check_encoder"):  # modality checks (graph feature width, fan-outs)
            dm.check_encoder(self.encoder, extra_hops=self.extra_hops)
        views = getattr(dm, "views", None) if dm is not None else None
        if views is None and dm is not None and hasattr(dm, "view_specs"):
            views = dm.view_specs()  # ImageDataModule: one ViewSpec per training view
        if views is not None:
            self.check_views(views)
        data_ch = getattr(dm, "num_channels", None)
        enc_ch = getattr(self.encoder, "in_chans", None)
        if data_ch is not None and enc_ch is not None and data_ch != enc_ch:
            raise ValueError(
                f"Channel mismatch: the data has {data_ch} channel(s) but the encoder "
                f"{type(self.encoder).__name__} expects {enc_ch}. Set `model.encoder.init_args.in_chans: "
                f"{data_ch}` (or the datamodule's `channels` option)."
            )

    def global_batch_size(self) -> int | None:
        """Batch size x devices x accumulation, when the datamodule exposes ``batch_size``."""
        dm = getattr(self.trainer, "datamodule", None)
        bs = getattr(dm, "batch_size", None)
        if bs is None:
            return None
        return int(bs) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        lr = hp.lr
        if hp.lr_scaling != "none":
            batch = self.global_batch_size()
            if batch is None:
                raise ValueError(
                    f"lr_scaling={hp.lr_scaling!r} needs the batch size, but the datamodule has no "
                    "`batch_size` attribute. Set lr_scaling: none and give the learning rate directly."
                )
            lr = scale_learning_rate(hp.lr, batch, hp.lr_scaling, hp.reference_batch_size)
            self.print(f"[lightning_ssl] lr scaled ({hp.lr_scaling}) for global batch {batch}: {hp.lr} -> {lr:.6g}")
        self.scaled_lr = lr
        total = self.total_steps()
        batches = self.trainer.num_training_batches
        if not (math.isfinite(batches) and batches > 0):  # max_steps runs: the loader is not read yet
            self.trainer.fit_loop.setup_data()
            batches = self.trainer.num_training_batches
        per_epoch = batches / self.trainer.accumulate_grad_batches if math.isfinite(batches) and batches > 0 else total
        optimizer, scheduler = self.build_optimizer_and_schedule(lr, total, per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def build_optimizer_and_schedule(
        self, lr: float, total_steps: int, steps_per_epoch: float
    ) -> tuple[torch.optim.Optimizer, WarmupCosineSchedule | InfiniteSchedule]:
        """The optimizer (weight decay off for biases and norms) and the per-step warm-up + cosine (or
        infinite) schedule; also usable outside a Trainer (``bench/throughput.py``'s bare loop)."""
        hp = self.hparams
        if hp.exclude_bias_and_norm:
            groups = param_groups_no_weight_decay(self, hp.weight_decay)
        else:
            groups = [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": hp.weight_decay}]
        optimizer = build_optimizer(hp.optimizer, groups, lr=lr, weight_decay=hp.weight_decay, momentum=hp.momentum)
        warmup = min(total_steps, int(round(hp.warmup_epochs * steps_per_epoch)))
        if hp.get("lr_schedule", "warmup_cosine") == "infinite":
            return optimizer, InfiniteSchedule.from_options(optimizer, total_steps, hp.infinite_schedule, warmup)
        schedule = WarmupCosineSchedule(optimizer, warmup_steps=warmup, total_steps=total_steps,
                                        final_factor=hp.min_lr_factor)
        return optimizer, schedule

    def total_steps(self) -> int:
        """Optimizer steps of the whole run (the length of the cosine schedules)."""
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "The warm-up + cosine schedule needs a finite run, but trainer.max_epochs and trainer.max_steps "
                "are both unlimited. Set trainer.max_epochs or trainer.max_steps."
            )
        return max(1, int(total))

    def on_train_start(self) -> None:
        if getattr(self, "scaled_lr", None) is not None and self.hparams.lr_scaling != "none":
            for logger in self.loggers:
                logger.log_metrics({"train/lr_scaled": float(self.scaled_lr)}, step=self.global_step)

    # ------------------------------------------------------------------ export metadata
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightning_ssl_encoder"] = encoder_spec(self.encoder)

