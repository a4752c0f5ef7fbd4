"""Checkpoint/resume of methods (teacher, optimizer state, step counter) and the non-finite-loss stop."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_ssl.methods import NonFiniteLossError, SimCLR
from ssl_method_helpers import (
    clone_params,
    closed_form_tau,
    make_datamodule,
    make_method,
    make_trainer,
    teacher_tensors,
)

TOTAL = 4


class StopAt(Callback):
    """Stops the run after ``step`` optimizer steps (an interrupted run whose schedule spans TOTAL steps)."""

    def __init__(self, step: int) -> None:
        self.stop_step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.stop_step:
            trainer.should_stop = True


class RecordResumeState(Callback):
    def on_train_start(self, trainer, pl_module):
        self.global_step = trainer.global_step
        # state_dict() holds references to the live buffers: copy them before training goes on
        self.optimizer_state = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.state_dict = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.tau = getattr(pl_module, "tau", None)
        self.lr = [g["lr"] for g in trainer.optimizers[0].param_groups]
        self.scheduler_epoch = trainer.lr_scheduler_configs[0].scheduler.last_epoch


def _assert_optimizer_state_equal(restored: dict, saved: dict, buffer_key: str) -> None:
    assert restored["state"].keys() == saved["state"].keys()
    assert len(saved["state"]) > 0
    n_buffers = 0
    for idx, s in saved["state"].items():
        r = restored["state"][idx]
        assert r.keys() == s.keys()
        for key, value in s.items():
            if torch.is_tensor(value):
                assert torch.equal(r[key], value), f"optimizer state {idx}.{key} differs after resume"
            else:
                assert r[key] == value
        n_buffers += buffer_key in s
    assert n_buffers == len(saved["state"]), f"no {buffer_key} buffers in the optimizer state"
    for rg, sg in zip(restored["param_groups"], saved["param_groups"]):
        assert rg["lr"] == pytest.approx(sg["lr"])


@pytest.mark.parametrize(
    "name, optimizer, buffer_key",
    [("BYOL", "adamw", "exp_avg"), ("SimCLR", "sgd", "momentum_buffer")],
)
def test_resume_restores_step_optimizer_and_teacher(tmp_path, name, optimizer, buffer_key):
    ckpt_dir = tmp_path / "ckpt"
    model = make_method(name, optimizer=optimizer, lr=0.01, **({"tau_base": 0.9} if name == "BYOL" else {}))
    trainer = make_trainer(
        max_steps=TOTAL,
        callbacks=[StopAt(2), ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=2)],
    )
    trainer.fit(model, datamodule=make_datamodule(name, batch_size=8))
    assert trainer.global_step == 2
    last = ckpt_dir / "last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    # the checkpoint holds the state the run ended with, teacher included (EMA update of step 2 done)
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][k], v), f"{k} in last.ckpt differs from the trained model"
    if name == "BYOL":
        assert teacher_tensors(ckpt["state_dict"]), "no teacher.* weights in the checkpoint"
        assert ckpt["lightning_ssl_tau"] == pytest.approx(closed_form_tau(2, TOTAL, 0.9))
    assert "lightning_ssl_encoder" in ckpt

    # resume with a fresh model (other seed: different initial weights) and a new trainer
    torch.manual_seed(123)
    model2 = make_method(name, optimizer=optimizer, lr=0.01, **({"tau_base": 0.9} if name == "BYOL" else {}))
    assert not torch.equal(model2.encoder.model.conv1[0].weight, model.encoder.model.conv1[0].weight)
    record = RecordResumeState()
    trainer2 = make_trainer(max_steps=TOTAL, callbacks=[record])
    trainer2.fit(model2, datamodule=make_datamodule(name, batch_size=8), ckpt_path=str(last))

    assert record.global_step == 2
    assert trainer2.global_step == TOTAL
    assert record.scheduler_epoch == 2
    _assert_optimizer_state_equal(record.optimizer_state, ckpt["optimizer_states"][0], buffer_key)
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(record.state_dict[k], v), f"{k} not restored from the checkpoint"
    if name == "BYOL":
        assert record.tau == pytest.approx(ckpt["lightning_ssl_tau"])
        teacher = teacher_tensors(record.state_dict)
        assert teacher and all(torch.equal(v, ckpt["state_dict"][k]) for k, v in teacher.items())
    # training went on from there
    final = model2.state_dict()
    moved = [k for k in ckpt["state_dict"] if k.startswith("encoder.") and ckpt["state_dict"][k].is_floating_point()
             and not torch.equal(final[k], ckpt["state_dict"][k])]
    assert moved, "nothing changed after resuming"
    if name == "BYOL":
        assert any(not torch.equal(final[k], v) for k, v in teacher_tensors(ckpt["state_dict"]).items())


class NaNAtStep3(SimCLR):
    """Research-style subclass: overrides only compute_loss; the loss turns NaN at global step 3."""

    def compute_loss(self, out):
        loss = super().compute_loss(out)
        if self.global_step == 3:
            loss = loss * float("nan")
        return loss


def test_non_finite_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    model = make_method("SimCLR", cls=NaNAtStep3)
    ckpt_dir = tmp_path / "ckpt"
    trainer = make_trainer(
        max_steps=6, callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=1)]
    )
    with pytest.raises(NonFiniteLossError, match="global step 3") as err:
        trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=8))
    assert isinstance(err.value, FloatingPointError)
    assert "NaNAtStep3" in str(err.value)
    assert trainer.global_step == 3  # the NaN step never stepped the optimizer
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all(), f"{n} became non-finite in memory"

    last = ckpt_dir / "last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    # the last good step is 3 (steps 1, 2, 3 completed; the 4th forward produced NaN)
    assert ckpt["global_step"] == 3
    for k, v in ckpt["state_dict"].items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), f"{k} non-finite in last.ckpt"
    # and its parameters are the model's when training stopped (the failed forward of step 3 may still
    # have moved BatchNorm running statistics in memory, so buffers are not compared)
    for k, v in model.named_parameters():
        assert torch.equal(ckpt["state_dict"][k], v.detach())
