"""MoCo v3: Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers",
ICCV 2021."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.heads import mlp
from lightning_ssl.losses import mocov3_loss
from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.momentum import MomentumSSLMethod


class MoCoV3(MomentumSSLMethod):
    """InfoNCE between the online queries and the momentum encoder's keys, in-batch (global) negatives.

    Paper defaults (ResNet-50): 3-layer projector 4096 -> 256 ending in BN, 2-layer predictor,
    temperature 1.0 for ResNet (0.2 for ViT), momentum 0.99 with cosine to 1, LARS lr 0.3 x B/256 /
    AdamW for ViT. The loss is scaled by 2T as in the official code.
    """

    loss_is_global = True

    def __init__(
        self,
        encoder: nn.Module,
        proj_hidden_dim: int = 4096,
        proj_out_dim: int = 256,
        pred_hidden_dim: int = 4096,
        temperature: float = 1.0,
        tau_base: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, tau_base=tau_base, **kwargs)
        self.temperature = temperature
        self.projector = mlp([encoder.out_dim, proj_hidden_dim, proj_hidden_dim, proj_out_dim], last_batch_norm=True)
        self.predictor = mlp([proj_out_dim, pred_hidden_dim, proj_out_dim])
        self.build_teacher("encoder", "projector")

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        q1, q2 = (self.predict(z) for z in out.projections[:2])
        k1, k2 = self.teacher_forward(out.batch, num_views=2)
        return mocov3_loss(q1, q2, k1, k2, temperature=self.temperature)
