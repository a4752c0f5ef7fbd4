"""EMA teachers (BYOL, MoCo v3, DINO): update rule, cosine tau schedule, no gradients, state_dict.

Hook order in Lightning 2.x (``training_epoch_loop.advance``): callbacks' ``on_train_batch_end`` run
*before* the LightningModule's. ``ModelCheckpoint`` saves in its ``on_train_batch_end``, so the EMA update of
step k must already have happened when any callback's ``on_train_batch_end`` runs, or a checkpoint of step
k holds a teacher that misses the update of step k. These tests therefore check the update in a callback's
``on_train_batch_end`` (after the optimizer step, before the module's own hook).
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_ssl.optim import cosine_schedule
from ssl_method_helpers import MOMENTUM_METHODS, closed_form_tau, make_datamodule, make_method, make_trainer

TAU_BASE = 0.9  # far from 1 so that one EMA step moves the teacher visibly
STEPS = 4


class EMACheck(Callback):
    def __init__(self) -> None:
        self.taus: list[tuple[int, float]] = []  # (global_step before the step, tau used by its update)
        self.checked = 0
        self.max_move = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step
        self.tau = float(pl_module.tau)
        self.old_teacher = {k: v.detach().clone() for k, v in pl_module.teacher.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        assert trainer.global_step == self.step + 1
        self.taus.append((self.step, self.tau))
        tau = self.tau
        for name in pl_module.teacher.keys():
            student = dict(getattr(pl_module, name).named_parameters())
            teacher = dict(pl_module.teacher[name].named_parameters())
            assert student.keys() == teacher.keys()
            for pname, pt in teacher.items():
                old = self.old_teacher[f"{name}.{pname}"]
                expected = tau * old + (1.0 - tau) * student[pname].detach()
                torch.testing.assert_close(pt.detach(), expected, rtol=1e-5, atol=1e-6,
                                           msg=lambda m: f"teacher.{name}.{pname} at step {self.step}: {m}")
                self.max_move = max(self.max_move, (pt.detach() - old).abs().max().item())
                self.checked += 1


@pytest.mark.parametrize("name", MOMENTUM_METHODS)
def test_ema_update_and_tau_schedule(name):
    model = make_method(name, tau_base=TAU_BASE)
    assert set(model.teacher.keys()) == {"encoder", "projector"}
    # teacher starts as a copy of the student
    for key in model.teacher.keys():
        for ps, pt in zip(getattr(model, key).parameters(), model.teacher[key].parameters()):
            assert torch.equal(ps, pt)
    check = EMACheck()
    trainer = make_trainer(max_steps=STEPS, callbacks=[check])
    trainer.fit(model, datamodule=make_datamodule(name, batch_size=8))

    assert trainer.global_step == STEPS
    assert check.checked > 0 and len(check.taus) == STEPS
    assert check.max_move > 0, "the teacher never moved"
    # tau used by the update that takes global_step from k to k+1 is the cosine schedule at k
    for k, tau in check.taus:
        assert tau == pytest.approx(closed_form_tau(k, STEPS, TAU_BASE), abs=1e-12)
        assert tau == pytest.approx(cosine_schedule(k, STEPS, TAU_BASE, 1.0), abs=1e-12)
    assert check.taus[0][1] == pytest.approx(TAU_BASE)
    assert [t for _, t in check.taus] == sorted(t for _, t in check.taus)  # increasing to 1
    # after the last step tau is the schedule's end value, and train/tau is logged
    assert "train/tau" in trainer.callback_metrics
    assert float(trainer.callback_metrics["train/tau"]) == pytest.approx(closed_form_tau(STEPS, STEPS, TAU_BASE))
    assert model.tau == pytest.approx(1.0)

    # the teacher takes no gradients
    for p in model.teacher.parameters():
        assert not p.requires_grad
        assert p.grad is None
    # and it is in state_dict under teacher.*
    sd = model.state_dict()
    teacher_keys = [k for k in sd if k.startswith("teacher.")]
    assert any(k.startswith("teacher.encoder.") for k in teacher_keys)
    assert any(k.startswith("teacher.projector.") for k in teacher_keys)
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(sd[f"teacher.{k}"], v)
    # the teacher is not in the optimizer
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not any(id(p) in opt_params for p in model.teacher.parameters())


def test_cosine_schedule_closed_form():
    total = 10
    for k in (0, 3, 5, 10):
        assert cosine_schedule(k, total, 0.996, 1.0) == pytest.approx(closed_form_tau(k, total, 0.996), abs=1e-15)
    assert cosine_schedule(0, total, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_schedule(5, total, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_schedule(total, total, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(2 * total, total, 0.99, 1.0) == pytest.approx(1.0)  # clamped


class TeacherSnapshots(Callback):
    def __init__(self) -> None:
        self.snapshots: list[tuple[int, int, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        w = next(pl_module.teacher["encoder"].parameters()).detach().clone()
        self.snapshots.append((batch_idx, trainer.global_step, w))


def test_teacher_updates_once_per_optimizer_step_with_accumulation():
    model = make_method("BYOL", tau_base=TAU_BASE)
    w0 = next(model.teacher["encoder"].parameters()).detach().clone()
    snaps = TeacherSnapshots()
    trainer = make_trainer(max_steps=2, accumulate_grad_batches=2, callbacks=[snaps])
    trainer.fit(model, datamodule=make_datamodule("BYOL", batch_size=8))
    assert [(b, g) for b, g, _ in snaps.snapshots] == [(0, 0), (1, 1), (2, 1), (3, 2)]
    ws = [w0] + [w for _, _, w in snaps.snapshots]
    moved = [not torch.equal(a, b) for a, b in zip(ws[:-1], ws[1:])]
    assert moved == [False, True, False, True]  # only after the batches that stepped the optimizer
    assert model.tau == pytest.approx(1.0)  # cosine schedule over the 2 optimizer steps
