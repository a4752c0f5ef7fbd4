"""DINO: Caron et al. "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.heads import DINOHead
from lightning_ssl.losses import DINOLoss, dino_teacher_temperature
from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.momentum import MomentumSSLMethod


class DINO(MomentumSSLMethod):
    """Self-distillation with multi-crop: the student sees all crops, the EMA teacher the two global
    ones; teacher outputs are centred (global batch mean) and sharpened.

    The datamodule's ``dino`` recipe yields 2 global crops first, then the local crops. Paper
    defaults: head 2048 -> 256 -> 65536 with a weight-normalised last layer frozen for the first
    epoch, student temperature 0.1, teacher 0.04 -> 0.07 over 30 epochs, center momentum 0.9, EMA
    0.996 -> 1. Use ``trainer.gradient_clip_val: 3.0`` as in the paper.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head_out_dim: int = 65536,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        num_global_views: int = 2,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        center_momentum: float = 0.9,
        freeze_last_layer_epochs: int = 1,
        tau_base: float = 0.996,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, tau_base=tau_base, **kwargs)
        self.num_global_views = num_global_views
        self.projector = DINOHead(encoder.out_dim, head_out_dim, head_hidden_dim, head_bottleneck_dim)
        self.criterion = DINOLoss(head_out_dim, student_temp=student_temp, center_momentum=center_momentum)
        self.build_teacher("encoder", "projector")

    def current_teacher_temp(self) -> float:
        hp = self.hparams
        return dino_teacher_temperature(
            self.current_epoch, hp.warmup_teacher_temp, hp.teacher_temp, hp.warmup_teacher_temp_epochs
        )

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        teacher_out = self.teacher_forward(out.batch, num_views=self.num_global_views)
        temp = self.current_teacher_temp()
        loss = self.criterion(out.projections, teacher_out, teacher_temp=temp)
        return {"loss": loss, "teacher_temp": loss.new_tensor(temp)}

    def on_after_backward(self) -> None:
        if self.current_epoch < self.hparams.freeze_last_layer_epochs:
            for p in self.projector.last_layer.parameters():
                p.grad = None
