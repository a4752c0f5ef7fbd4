"""Barlow Twins: Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", ICML 2021."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.heads import projection_head
from lightning_ssl.losses import barlow_twins_loss
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class BarlowTwins(SSLMethod):
    """Cross-correlation of the two branches' projections, pushed to the identity.

    Each branch is batch-normalised with the *global* batch statistics and C = z1^T z2 / N over the
    global batch (what the official synced-BN code computes). Paper defaults: 3-layer projector of
    width 8192 (no bias), lambda = 0.0051, LARS with lr 0.2 (weights) / 0.0048 (biases) at batch 2048.

    Graph Barlow Twins (Bielak et al. 2022) is this objective over nodes with two graph views, no
    projector (``proj_layers: 0``) and lambda = 1/D: ``configs/graph/gbt_cora.yaml``.
    """

    loss_is_global = True

    def __init__(
        self,
        encoder: nn.Module,
        proj_hidden_dim: int = 8192,
        proj_out_dim: int = 8192,
        proj_layers: int = 3,
        lambda_offdiag: float = 0.0051,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        self.lambda_offdiag = lambda_offdiag
        self.projector = projection_head(encoder.out_dim, proj_hidden_dim, proj_out_dim, proj_layers, last_bias=False)

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        z1, z2 = out.projections[:2]
        return barlow_twins_loss(z1, z2, lambda_offdiag=self.lambda_offdiag)
