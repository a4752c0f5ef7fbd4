"""Methods with an EMA teacher (BYOL, MoCo v3, DINO and, later, MYOW, BGRL)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.optim import cosine_schedule


class MomentumSSLMethod(SSLMethod):
    """An :class:`SSLMethod` with a teacher that is an exponential moving average of the student.

    The momentum follows the cosine schedule of BYOL (Grill et al. 2020):
    ``tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2`` from ``tau_base`` to ``tau_final``
    over the K optimizer steps of the run. The teacher is updated after every optimizer step, is
    part of ``state_dict`` (so resume restores it), and its momentum is logged as ``train/tau``.

    Subclasses build their heads, then call :meth:`build_teacher` with the names of the student
    modules to copy (e.g. ``"encoder", "projector"``).
    """

    def __init__(self, encoder: nn.Module, tau_base: float = 0.99, tau_final: float = 1.0, **kwargs: Any) -> None:
        super().__init__(encoder, **kwargs)
        self.tau_base = tau_base
        self.tau_final = tau_final
        self.tau = tau_base
        self.teacher = nn.ModuleDict()
        self._teacher_pairs: list[str] = []

    def build_teacher(self, *names: str) -> None:
        """Copy the student modules ``names`` into ``self.teacher`` (no gradients)."""
        for name in names:
            module = copy.deepcopy(getattr(self, name))
            module.requires_grad_(False)
            self.teacher[name] = module
        self._teacher_pairs = list(names)

    @torch.no_grad()
    def teacher_forward(self, batch: SSLBatch, num_views: int | None = None) -> list[Tensor]:
        """Teacher encoder (+ projector when copied) on the first ``num_views`` views: the targets.

        Rows are restricted by ``batch.mask`` like the student's. No gradients.
        """
        views = batch.views if num_views is None else batch.views[:num_views]
        h = [self.apply_mask(x, batch) for x in self.encode_views(views, module=self.teacher["encoder"])]
        if "projector" in self.teacher:
            h = [self.teacher["projector"](x) for x in h]
        return h

    @torch.no_grad()
    def update_teacher(self) -> None:
        """teacher <- tau * teacher + (1 - tau) * student, for parameters.

        Buffers (BatchNorm running statistics) are the teacher's own: it runs in the same train/eval
        mode as the student and updates them from its forward passes.
        """
        for name in self._teacher_pairs:
            student, teacher = getattr(self, name), self.teacher[name]
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(self.tau).add_(ps.detach(), alpha=1.0 - self.tau)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # The EMA update runs right after the optimizer step, not in on_train_batch_end: Lightning calls
        # the callbacks' on_train_batch_end (ModelCheckpoint saves there) before the module's, so a
        # checkpoint of step k would otherwise hold a teacher (and tau) that misses the update of step k.
        super().optimizer_step(*args, **kwargs)
        self.update_teacher()
        total = self.total_steps()
        # global_step counts completed steps; Lightning increments it after this hook returns
        self.tau = cosine_schedule(self.global_step + 1, total, self.tau_base, self.tau_final)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log("train/tau", self.tau)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_ssl_tau"] = self.tau

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tau = checkpoint.get("lightning_ssl_tau", self.tau)
