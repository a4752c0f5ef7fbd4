"""DINO self-distillation loss with a centred, sharpened teacher.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in Self-Supervised
Vision Transformers." ICCV 2021. https://arxiv.org/abs/2104.14294
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.distributed import all_reduce_sum, world_size

__all__ = ["DINOLoss", "dino_teacher_temperature"]


def dino_teacher_temperature(
    epoch: int,
    warmup_teacher_temp: float = 0.04,
    teacher_temp: float = 0.04,
    warmup_epochs: int = 0,
) -> float:
    """DINO's teacher temperature schedule (Caron et al. 2021).

    Linear from ``warmup_teacher_temp`` at epoch 0 to ``teacher_temp`` at epoch
    ``warmup_epochs - 1``, then constant, exactly as the official
    ``np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs)`` followed by ``teacher_temp``.
    The paper uses 0.04 -> 0.04 (or 0.07 with a 30-epoch warm-up from 0.04).
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if epoch >= warmup_epochs:
        return float(teacher_temp)
    if warmup_epochs == 1:
        return float(warmup_teacher_temp)
    frac = epoch / (warmup_epochs - 1)
    return float(warmup_teacher_temp + (teacher_temp - warmup_teacher_temp) * frac)


class DINOLoss(nn.Module):
    """DINO loss (Caron et al. 2021): cross-entropy of student crops against centred teacher crops.

    ``forward(student_out, teacher_out, teacher_temp)`` takes lists of ``[B, out_dim]`` tensors:
    ``teacher_out`` holds the teacher outputs of the global crops, ``student_out`` the student
    outputs of all crops with the global crops first, in the same order. Teacher probabilities
    ``softmax((t - center) / teacher_temp)`` are detached; the student uses
    ``log_softmax(s / student_temp)``. The loss is ``-sum(q * log p)`` averaged over the batch,
    summed over all pairs (teacher crop i, student crop j) with ``i != j`` and divided by the number
    of pairs.

    After the loss is computed, ``forward`` updates the ``center`` buffer (``[1, out_dim]``, so it
    is in ``state_dict`` and survives resume) with the **global** batch mean of the teacher outputs,
    all-reduced across ranks: ``center = m * center + (1 - m) * mean``, as the official code does.
    The loss itself is a mean of per-sample terms and needs no gather: DDP's gradient averaging
    gives the gradient of the global mean.
    """

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: Sequence[Tensor], teacher_out: Sequence[Tensor], teacher_temp: float) -> Tensor:
        if len(teacher_out) < 1 or len(student_out) < len(teacher_out):
            raise ValueError(
                f"need >= 1 teacher crop and at least as many student crops, got "
                f"{len(teacher_out)} teacher and {len(student_out)} student crops"
            )
        if len(teacher_out) == 1 and len(student_out) == 1:
            raise ValueError("one teacher and one student crop give no (i != j) pair")
        center = self.center.to(teacher_out[0].dtype)
        teacher_probs = [F.softmax((t.detach() - center) / teacher_temp, dim=-1) for t in teacher_out]
        student_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        total = student_logp[0].new_zeros(())
        n_pairs = 0
        for i, q in enumerate(teacher_probs):
            for j, logp in enumerate(student_logp):
                if i == j:
                    continue
                total = total + torch.sum(-q * logp, dim=-1).mean()
                n_pairs += 1
        loss = total / n_pairs
        self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[Tensor]) -> None:
        """EMA update of ``center`` with the mean of the teacher outputs over all crops and ranks."""
        t = torch.cat([x.detach() for x in teacher_out], dim=0)
        batch_sum = all_reduce_sum(t.sum(dim=0, keepdim=True).to(self.center.dtype))
        batch_mean = batch_sum / (t.shape[0] * world_size())
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1 - self.center_momentum)

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, student_temp={self.student_temp}, center_momentum={self.center_momentum}"
