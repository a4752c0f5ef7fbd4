"""GroCo: Shvetsova, Petersen, Kukleva, Schiele, Kuehne. "Learning by Sorting: Self-supervised Learning with
Group Ordering Constraints", ICCV 2023 (official code: https://github.com/ninatu/learning_by_sorting)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.heads import projection_head
from lightning_ssl.losses.groco import RELAXATIONS, groco_loss
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class GroCo(SSLMethod):
    """Group ordering constraints: for every anchor, a differentiable sorting network sorts the cosine
    similarities to its positives and to its hardest negatives, and the loss asks every positive to rank
    above every negative (BCE on the relaxed permutation matrix). Every view is an anchor in turn.

    Official defaults (``configs/2views_100ep.yaml``, ImageNet, ResNet-50, batch 1024): 10 hardest
    negatives from the anchor's own view over the global batch, odd-even sorting network with the
    Cauchy relaxation and steepness 1, stop-gradient on positives and negatives, 3-layer projector
    (hidden = encoder width, output 2048, BatchNorm without affine after the last layer), SGD with
    base lr 0.75 (linear scaling), weight decay 1e-6. Multi-crop (``num_positive_views: 2``): only the
    first (global) views are positives; every crop is an anchor.
    """

    loss_is_global = True

    def __init__(
        self,
        encoder: nn.Module,
        proj_hidden_dim: int | None = None,
        proj_out_dim: int = 2048,
        proj_layers: int = 3,
        num_negatives: int = 10,
        steepness: float = 1.0,
        relaxation: str = "cauchy",
        stop_grad: bool = True,
        num_positive_views: int | None = None,
        **kwargs: Any,
    ) -> None:
        if relaxation not in RELAXATIONS:
            raise ValueError(f"Unknown relaxation {relaxation!r}; valid names: {', '.join(RELAXATIONS)}.")
        if not steepness > 0:
            raise ValueError(f"steepness must be positive, got {steepness}.")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}.")
        if num_positive_views is not None and num_positive_views < 2:
            raise ValueError(f"num_positive_views must be >= 2 (or null for all views), got {num_positive_views}.")
        super().__init__(encoder, **kwargs)
        self.loss_kwargs = dict(num_negatives=num_negatives, steepness=steepness, relaxation=relaxation,
                                stop_grad=stop_grad, num_positive_views=num_positive_views)
        hidden = encoder.out_dim if proj_hidden_dim is None else proj_hidden_dim
        self.projector = projection_head(encoder.out_dim, hidden, proj_out_dim, proj_layers,
                                         last_bias=False, last_batch_norm=True)

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        return groco_loss(out.projections, **self.loss_kwargs)
