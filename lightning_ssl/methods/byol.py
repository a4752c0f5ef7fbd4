"""BYOL: Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.heads import head_out_dim, projection_head
from lightning_ssl.losses import byol_loss
from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.momentum import MomentumSSLMethod


class BYOL(MomentumSSLMethod):
    """The online network predicts the EMA target's projection of the other view.

    Paper defaults: projector and predictor 4096 -> 256, tau_base 0.996 with the cosine schedule to 1,
    LARS lr 0.2 x B/256, weight decay 1.5e-6.

    BGRL (Thakoor et al. 2022, "Large-Scale Representation Learning on Graphs via Bootstrapping") is
    this objective over nodes with two graph views, no projector (``proj_layers: 0``) and a PReLU
    predictor: ``configs/graph/bgrl_cora.yaml``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        proj_hidden_dim: int = 4096,
        proj_out_dim: int = 256,
        pred_hidden_dim: int = 4096,
        tau_base: float = 0.996,
        proj_layers: int = 2,
        head_activation: str = "relu",
        head_batch_norm: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, tau_base=tau_base, **kwargs)
        self.projector = projection_head(encoder.out_dim, proj_hidden_dim, proj_out_dim, proj_layers,
                                         activation=head_activation, batch_norm=head_batch_norm)
        z_dim = head_out_dim(encoder.out_dim, proj_out_dim, proj_layers)
        self.predictor = projection_head(z_dim, pred_hidden_dim, z_dim, 2, activation=head_activation,
                                         batch_norm=head_batch_norm)
        self.build_teacher("encoder", "projector")

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        p1, p2 = (self.predict(z) for z in out.projections[:2])
        t1, t2 = self.teacher_forward(out.batch, num_views=2)
        return byol_loss(p1, t2) + byol_loss(p2, t1)
