"""Mixed Barlow Twins: Bandara, De Melo, Patel. "Guarding Barlow Twins Against Overfitting with Mixed
Samples", arXiv 2312.02151, 2023 (official code: https://github.com/wgcban/mix-bt)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.losses.mixed_barlow_twins import mix_images, mixed_barlow_twins_loss
from lightning_ssl.methods.barlow_twins import BarlowTwins
from lightning_ssl.methods.base import ViewOutputs


class MixedBarlowTwins(BarlowTwins):
    """Barlow Twins plus a MixUp regulariser: the cross-correlation of mixed samples with each view is
    pushed towards the lambda-interpolation of the real cross-correlations.

    Each step draws ``lambda ~ Beta(mix_alpha, mix_beta)`` (Beta(1, 1) in the paper) and a random
    permutation of the batch, mixes ``x_m = lambda * x1 + (1 - lambda) * x2[perm]`` and encodes it in its
    own forward pass (views 0 and 1 are encoded exactly as in :class:`BarlowTwins`, so ``embeddings`` and
    ``projections`` of the step output are those of view 0). See
    :func:`~lightning_ssl.losses.mixed_barlow_twins.mixed_barlow_twins_loss` for the formula.

    Per-dataset weights (official README tables, ResNet-18/50, projector width 1024; pre-training
    scripts ``scripts-pretrain-resnet18/*.sh``):

    ============  ==================  ==========
    dataset       lambda_offdiag      lambda_reg
    ============  ==================  ==========
    CIFAR-10      0.0078125 (1/128)   4.0
    CIFAR-100     0.0078125 (1/128)   4.0
    TinyImageNet  0.0009765 (1/1024)  4.0
    STL-10        0.0078125 (1/128)   2.0
    ImageNet      0.0051              1.0 in ``main_imagenet.py`` (x 0.5 there: 0.5 here), width 8192
    ============  ==================  ==========

    (The CIFAR-100 script sets ``feature_dim=2048`` although the README table says 1024.)

    ``lambda`` is identical on every rank: it comes from a NumPy generator seeded with ``mix_seed``
    that every rank advances once per training batch (its state is saved in checkpoints); the
    permutation is each rank's own. The parts are logged as ``train/barlow_twins``, ``train/mix_reg``
    and ``train/mix_lambda``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        lambda_reg: float = 4.0,
        mix_alpha: float = 1.0,
        mix_beta: float = 1.0,
        mix_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if lambda_reg < 0:
            raise ValueError(f"lambda_reg must be >= 0, got {lambda_reg} (0 gives plain Barlow Twins).")
        if mix_alpha <= 0 or mix_beta <= 0:
            raise ValueError(
                f"The Beta parameters of the mixing weight must be > 0, got mix_alpha={mix_alpha}, "
                f"mix_beta={mix_beta}. "
                "The paper uses Beta(1, 1), i.e. lambda uniform on [0, 1]."
            )
        super().__init__(encoder, **kwargs)
        self.lambda_reg = lambda_reg
        self._mix_rng = np.random.default_rng(mix_seed)

    # ------------------------------------------------------------------ hooks
    def draw_mix_lambda(self) -> float:
        """The step's mixing weight, from the rank-independent generator."""
        return float(self._mix_rng.beta(self.hparams.mix_alpha, self.hparams.mix_beta))

    def prepare_views(self, batch: SSLBatch) -> tuple[list[Any], dict[str, Any]]:
        views = list(batch.views)
        x1, x2 = views[0], views[1]
        mix_lambda = self.draw_mix_lambda()  # every rank draws, so the generators stay in step
        # each rank permutes its own rows (mix_images rejects non-tensor views before perm is read)
        perm = torch.randperm(len(x1), device=x1.device) if isinstance(x1, Tensor) else torch.empty(0, dtype=torch.long)
        x_mixed = mix_images(x1, x2, mix_lambda, perm)
        extra = {"mix_lambda": mix_lambda, "mix_perm": perm, "num_views": len(views)}
        return views + [x_mixed], extra

    def encode_training_views(self, views: list[Any], extra: dict[str, Any]) -> list[Tensor]:
        n = extra["num_views"]
        # the real views exactly as BarlowTwins encodes them; the mixed view in its own forward pass
        return self.encode_views(views[:n]) + [self.encoder(views[n])]

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        z1, z2 = out.projections[:2]
        z_mixed = out.projections[out.extra["num_views"]]
        mix_lambda = out.extra["mix_lambda"]
        loss, parts = mixed_barlow_twins_loss(z1, z2, z_mixed, out.extra["mix_perm"], mix_lambda,
                                              lambda_offdiag=self.lambda_offdiag, lambda_reg=self.lambda_reg)
        return {"loss": loss, **parts, "mix_lambda": torch.tensor(mix_lambda, device=loss.device)}

    # ------------------------------------------------------------------ resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["mixed_barlow_twins_rng"] = self._mix_rng.bit_generator.state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "mixed_barlow_twins_rng" in checkpoint:
            self._mix_rng.bit_generator.state = checkpoint["mixed_barlow_twins_rng"]
