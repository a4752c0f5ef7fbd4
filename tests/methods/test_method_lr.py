"""Optimizer and learning-rate set-up of SSLMethod: opt-in batch-size scaling, optimizer names, warm-up + cosine."""

from __future__ import annotations

import csv
import math

import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from ssl_method_helpers import make_datamodule, make_method, make_trainer


class RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.initial: list[float] = []

    def on_train_start(self, trainer, pl_module):
        self.initial = [g["initial_lr"] for g in trainer.optimizers[0].param_groups]
        self.optimizer_type = type(trainer.optimizers[0]).__name__

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def test_linear_lr_scaling_sets_logs_and_prints(tmp_path, capsys):
    base_lr = 0.1
    model = make_method("SimCLR", optimizer="sgd", lr=base_lr, lr_scaling="linear", warmup_epochs=0)
    rec = RecordLR()
    logger = CSVLogger(tmp_path, name="lr", version=0)
    trainer = make_trainer(max_steps=2, logger=logger, callbacks=[rec])
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=16))

    expected = base_lr * 16 / 256
    assert model.scaled_lr == pytest.approx(expected)
    assert rec.optimizer_type == "SGD"
    assert rec.initial == pytest.approx([expected, expected])  # both parameter groups (decay / no decay)
    assert rec.lrs[0] == pytest.approx([expected, expected])  # no warm-up: step 0 runs at the peak
    assert model.hparams.lr == base_lr  # the configured value is kept as given
    assert "lr scaled (linear) for global batch 16: 0.1 -> 0.00625" in capsys.readouterr().out

    with open(tmp_path / "lr" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["train/lr_scaled"]) for r in rows if r.get("train/lr_scaled")]
    assert logged == pytest.approx([expected])


def test_sqrt_lr_scaling():
    model = make_method("SimCLR", optimizer="sgd", lr=0.1, lr_scaling="sqrt")
    trainer = make_trainer(max_steps=1)
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=16))
    assert model.scaled_lr == pytest.approx(0.1 * math.sqrt(16 / 256))


def test_no_lr_scaling_leaves_lr(capsys):
    model = make_method("SimCLR", optimizer="adamw", lr=3e-3, lr_scaling="none", warmup_epochs=0)
    rec = RecordLR()
    trainer = make_trainer(max_steps=1, callbacks=[rec])
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=16))
    assert model.scaled_lr == pytest.approx(3e-3)
    assert rec.optimizer_type == "AdamW"
    assert rec.initial == pytest.approx([3e-3, 3e-3])
    assert rec.lrs[0] == pytest.approx([3e-3, 3e-3])
    assert "lr scaled" not in capsys.readouterr().out


def test_unknown_optimizer_lists_valid_names():
    # raised when the method is built, before any data is read or any step runs
    with pytest.raises(ValueError) as err:
        make_method("SimCLR", optimizer="adam_typo")
    msg = str(err.value)
    assert "adam_typo" in msg
    for name in ("sgd", "adamw", "lars"):
        assert name in msg
    with pytest.raises(ValueError, match="linear.*sqrt"):
        make_method("SimCLR", lr_scaling="quadratic")


def test_lars_optimizer_is_built():
    from lightning_ssl.optim import LARS

    model = make_method("SimCLR", optimizer="lars", lr=0.3)
    rec = RecordLR()
    trainer = make_trainer(max_steps=1, callbacks=[rec])
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=16))
    assert isinstance(trainer.optimizers[0], LARS)
    groups = trainer.optimizers[0].param_groups
    # biases and norm parameters: no weight decay and no LARS adaptation
    assert [g["lars_exclude"] for g in groups] == [False, True]
    assert groups[1]["weight_decay"] == 0.0


def test_warmup_then_cosine_per_step():
    """2 epochs of 4 batches, warmup_epochs=1: linear ramp over 4 steps, then half-cosine to 0."""
    peak = 0.05
    model = make_method("SimCLR", optimizer="sgd", lr=peak, warmup_epochs=1, min_lr_factor=0.0)
    rec = RecordLR()
    trainer = make_trainer(max_epochs=2, max_steps=-1, limit_train_batches=4, callbacks=[rec])
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=8))
    assert trainer.global_step == 8
    lrs = [g[0] for g in rec.lrs]
    assert len(lrs) == 8
    warm, total = 4, 8
    expected = [peak * (k + 1) / warm for k in range(warm)]
    expected += [peak * 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm))) for k in range(warm, total)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    # step 0 is small but not zero, the warm-up grows, the cosine decays
    assert 0 < lrs[0] <= peak / 4 + 1e-12
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:4]))
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert all(g[0] == g[1] for g in rec.lrs)  # both parameter groups follow the schedule


def test_default_warmup_grows_over_a_short_run():
    model = make_method("SimCLR", optimizer="adamw", lr=1e-3)  # warmup_epochs=10 by default
    rec = RecordLR()
    trainer = make_trainer(max_steps=3, callbacks=[rec])
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=8))
    lrs = [g[0] for g in rec.lrs]
    assert len(lrs) == 3
    assert 0 < lrs[0] < 1e-3
    assert lrs[0] < lrs[1] < lrs[2] <= 1e-3 + 1e-12
