"""SimCLR: Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.heads import projection_head
from lightning_ssl.losses import nt_xent_loss
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class SimCLR(SSLMethod):
    """NT-Xent over two views with 2N-2 negatives from both views, gathered across ranks.

    Paper defaults: 2-layer projector (hidden = 2048, out = 128), temperature 0.5 for CIFAR
    (0.1 with LARS at batch 4096 on ImageNet).

    GRACE (Zhu et al. 2020, "Deep Graph Contrastive Representation Learning") is this objective over
    nodes with two graph views (intra- and inter-view negatives = the 2N-2 negatives of NT-Xent), with
    an ELU projector without BatchNorm: ``configs/graph/grace_cora.yaml``.
    """

    loss_is_global = True

    def __init__(
        self,
        encoder: nn.Module,
        proj_hidden_dim: int = 2048,
        proj_out_dim: int = 128,
        proj_layers: int = 2,
        temperature: float = 0.5,
        proj_batch_norm: bool = True,
        proj_activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        self.temperature = temperature
        self.projector = projection_head(encoder.out_dim, proj_hidden_dim, proj_out_dim, proj_layers,
                                         batch_norm=proj_batch_norm, activation=proj_activation)

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        z1, z2 = out.projections[:2]
        return nt_xent_loss(z1, z2, temperature=self.temperature)
