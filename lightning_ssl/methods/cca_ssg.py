"""CCA-SSG: Zhang, Wu, Yan, Wipf, Yu. "From Canonical Correlation Analysis to Self-supervised Graph
Neural Networks", NeurIPS 2021."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.losses.cca_ssg import cca_ssg_loss
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class CCASSG(SSLMethod):
    """Invariance between the two views' standardised embeddings plus a decorrelation term.

    No projector: the loss acts on the encoder output. Statistics are those of the global batch.
    Paper (Cora): 2-layer GCN 512-512 without activation after the last layer, edge drop 0.4 /
    feature mask 0.1 (both views), Adam lr 1e-3, no weight decay, 50 epochs, lambd 1e-3.
    """

    loss_is_global = True

    def __init__(self, encoder: nn.Module, lambd: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(encoder, **kwargs)
        self.lambd = lambd

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        h1, h2 = out.projections[:2]
        return cca_ssg_loss(h1, h2, lambd=self.lambd)
