"""SupCon: Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan. "Supervised Contrastive
Learning", NeurIPS 2020. SUPERVISED: this method reads the labels."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_ssl.heads import projection_head
from lightning_ssl.losses.supcon import check_labels, supcon_loss
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class SupCon(SSLMethod):
    """**SUPERVISED — this method reads ``batch.target``.** It is the one method of the library whose loss
    uses labels (DESIGN.md, "Batch"); it is a supervised reference for the self-supervised methods,
    not an SSL method. Label-free claims (RankMe selection, "no labels used") do not hold for it.

    SupCon ``L_out`` (1/|P(i)| outside the log) over all views of the batch as anchors; positives are
    every other view of the same sample and every view of a same-class sample, gathered over ranks
    with gradient (labels gathered too). Every sample needs an integer label >= 0: a batch with
    ``target=None`` or ``-1`` (unlabelled) stops training with a ``ValueError``. ``setup`` warns once
    that the run is supervised.

    Defaults: projector MLP with one hidden layer of 2048 and output 128, L2-normalised in the loss
    (the reference code's head has no BatchNorm); temperature 0.1 (the reference code's README
    recipe ``--temp 0.1``; its ``SupConLoss`` class defaults to 0.07). Contrastive losses want
    large batches.
    """

    loss_is_global = True

    def __init__(
        self,
        encoder: nn.Module,
        proj_hidden_dim: int = 2048,
        proj_out_dim: int = 128,
        proj_layers: int = 2,
        temperature: float = 0.1,
        proj_batch_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        super().__init__(encoder, **kwargs)
        self.temperature = temperature
        self.projector = projection_head(encoder.out_dim, proj_hidden_dim, proj_out_dim, proj_layers,
                                         batch_norm=proj_batch_norm)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            rank_zero_warn(
                "SupCon is a SUPERVISED method: its training loss reads the class labels (batch.target). Results "
                "are not self-supervised; use it as a supervised reference.",
                category=UserWarning,
            )

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        n = out.projections[0].shape[0]
        labels = check_labels(self._masked(out.batch.target, out.batch), n)
        return supcon_loss(out.projections, labels, temperature=self.temperature)
