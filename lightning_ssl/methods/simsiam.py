"""SimSiam: Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.heads import head_out_dim, mlp, projection_head
from lightning_ssl.losses import negative_cosine_similarity
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class SimSiam(SSLMethod):
    """Symmetric negative cosine between predictions and stop-gradient projections; no teacher.

    Paper defaults: 3-layer projector of width 2048 ending in BN, predictor 2048 -> 512 -> 2048,
    SGD lr 0.05 x B/256, weight decay 1e-4 (CIFAR: 5e-4, 2-layer projector).
    """

    def __init__(
        self,
        encoder: nn.Module,
        proj_hidden_dim: int = 2048,
        proj_out_dim: int = 2048,
        proj_layers: int = 3,
        pred_hidden_dim: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        self.projector = projection_head(
            encoder.out_dim, proj_hidden_dim, proj_out_dim, proj_layers, last_batch_norm=True, last_bias=False
        )
        z_dim = head_out_dim(encoder.out_dim, proj_out_dim, proj_layers)
        self.predictor = mlp([z_dim, pred_hidden_dim, z_dim])

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        z1, z2 = out.projections[:2]
        p1, p2 = self.predict(z1), self.predict(z2)
        return 0.5 * (negative_cosine_similarity(p1, z2) + negative_cosine_similarity(p2, z1))
