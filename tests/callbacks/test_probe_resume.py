"""Resume: the probe's state (weights and optimizer) round-trips, and a run resumed from a mid-run
checkpoint logs the same RankMe, probe and kNN metrics as the uninterrupted run.

Determinism of the resumed run (CPU, one thread): Lightning restores the model, optimizer, scheduler,
loops and callback states but not the global RNG, which drives the augmentations. The data module of
these runs draws its training order from a one-replica ``DistributedSampler`` (a function of the epoch)
with a private loader generator, and :class:`EpochSeeded` reseeds the global RNG at every training epoch
start, so epoch e sees the same batches in both runs. What the callbacks restore must do the rest.

Tolerance: relative 1e-6 (absolute 1e-7) on every logged value; on this CPU path the values come out
bitwise equal. The negative control resumes with the probe's state removed from the checkpoint and
must log another ``probe/val_loss`` (while RankMe, which has no state here, still agrees).
"""

from __future__ import annotations

import io

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_ssl.callbacks import OnlineKNN, OnlineLinearProbe, RankMe
from probe_knn_helpers import (
    EpochSeeded,
    FakeModule,
    FakeTrainer,
    RecordEpochMetrics,
    SpyKNN,
    clustered,
    drive_probe_train,
    epoch_deterministic_datamodule,
    probe_params,
    train_out,
)
from ssl_method_helpers import make_method, make_trainer

EPOCHS = 3
PROBE_METRICS = ("probe/val_acc", "probe/val_balanced_acc", "probe/val_auroc", "probe/val_loss", "probe/train_loss")
OTHER_METRICS = ("rankme", "knn/val_acc", "knn/val_balanced_acc", "knn_tb/val_acc", "train/loss")


# ---------------------------------------------------------------------------------------- state round trip
def _batches(n: int, seed: int = 0):
    return [train_out(*clustered(16, seed=seed + i)) for i in range(n)]


@pytest.mark.parametrize("kwargs", [dict(), dict(hidden_dim=6, optimizer="sgd", lr=0.1)])
def test_probe_state_dict_round_trip_continues_identically(kwargs):
    trainer, module = FakeTrainer(), FakeModule()
    probe = OnlineLinearProbe(**kwargs)
    probe.setup(trainer, module, "fit")
    drive_probe_train(probe, trainer, module, _batches(3))

    buffer = io.BytesIO()
    torch.save(probe.state_dict(), buffer)  # as in a checkpoint file
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["in_dim"] == 8 and state["num_classes"] == 3
    assert state["optimizer"]["state"], "no optimizer state (Adam moments / SGD momentum) saved"

    restored = OnlineLinearProbe(**kwargs)
    restored.setup(trainer, module, "fit")
    restored.load_state_dict(state)
    for a, b in zip(probe_params(restored), probe_params(probe)):
        assert torch.equal(a, b)
    fresh = OnlineLinearProbe(**kwargs)
    fresh.setup(trainer, module, "fit")

    # one more step: identical only if the optimizer state (moments, momentum, step count) came back too
    nxt = _batches(1, seed=50)
    for cb in (probe, restored, fresh):
        drive_probe_train(cb, trainer, module, nxt)
    for a, b in zip(probe_params(restored), probe_params(probe)):
        assert torch.equal(a, b), "the resumed probe took another step than the uninterrupted one"
    assert any(not torch.equal(a, b) for a, b in zip(probe_params(fresh), probe_params(probe)))


def test_probe_state_of_a_probe_never_built_and_class_mismatch():
    probe = OnlineLinearProbe(num_classes=3)
    assert probe.state_dict() == {}
    probe.load_state_dict({})  # nothing to restore: stays unbuilt
    assert probe.classifier is None

    trainer, module = FakeTrainer(), FakeModule()
    probe.setup(trainer, module, "fit")
    drive_probe_train(probe, trainer, module, _batches(1))
    other = OnlineLinearProbe(num_classes=5)
    with pytest.raises(ValueError, match="3 classes but num_classes=5"):
        other.load_state_dict(probe.state_dict())


# ---------------------------------------------------------------------------------------- real resumed run
class SpyOnlineKNN(SpyKNN, OnlineKNN):
    pass


def _fit(ckpt_path=None, ckpt_dir=None, epochs: int = EPOCHS):
    record = RecordEpochMetrics()
    # bank_size 96 > the 64 rows of one epoch (4 batches of 16): the train bank spans two epochs, so
    # after resume it is right only if its state came back from the checkpoint
    knn_tb = SpyOnlineKNN(bank="train_batches", k=5, bank_size=96, name="knn_tb")
    callbacks = [EpochSeeded(), RankMe(), OnlineLinearProbe(lr=3e-3), OnlineKNN(bank="clean", k=5), knn_tb]
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_top_k=-1, every_n_epochs=1))
    torch.manual_seed(0)
    model = make_method("SimCLR", lr=3e-3, warmup_epochs=1)
    trainer = make_trainer(max_steps=-1, max_epochs=epochs, limit_train_batches=4, limit_val_batches=4,
                           num_sanity_val_steps=0, deterministic=True, callbacks=[*callbacks, record])
    trainer.fit(model, datamodule=epoch_deterministic_datamodule(batch_size=16), ckpt_path=ckpt_path)
    return record, knn_tb.banks


def test_resumed_run_logs_the_same_rankme_probe_and_knn_metrics(tmp_path):
    full, full_banks = _fit(ckpt_dir=tmp_path)
    assert set(full.per_epoch) == set(range(EPOCHS))
    ckpt = tmp_path / "epoch=0.ckpt"  # written after the first epoch (and its validation)
    assert ckpt.is_file()

    resumed, resumed_banks = _fit(ckpt_path=str(ckpt))
    assert set(resumed.per_epoch) == {1, 2}
    for epoch in (1, 2):
        assert resumed.per_epoch[epoch].keys() == full.per_epoch[epoch].keys()
        assert full_banks[epoch][0].shape[0] == 96
        assert torch.equal(resumed_banks[epoch][0], full_banks[epoch][0]), f"epoch {epoch}: kNN train bank differs"
        assert torch.equal(resumed_banks[epoch][1], full_banks[epoch][1])
        for name in PROBE_METRICS + OTHER_METRICS:
            assert name in full.per_epoch[epoch], name
            assert resumed.per_epoch[epoch][name] == pytest.approx(full.per_epoch[epoch][name], rel=1e-6, abs=1e-7), (
                f"epoch {epoch}: {name} of the resumed run differs from the uninterrupted run"
            )

    # negative control: the same resume without the probe's state (and the kNN train bank) in the checkpoint
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    dropped = [k for k in state["callbacks"] if k.startswith(("OnlineLinearProbe", "OnlineKNN", "SpyOnlineKNN"))]
    assert len(dropped) == 3, list(state["callbacks"])
    for key in dropped:
        del state["callbacks"][key]
    torch.save(state, tmp_path / "no_probe_state.ckpt")
    forgetful, forgetful_banks = _fit(ckpt_path=str(tmp_path / "no_probe_state.ckpt"), epochs=2)
    assert forgetful_banks[1][0].shape[0] == 64  # only this epoch's rows: the bank started empty
    assert forgetful.per_epoch[1]["rankme"] == pytest.approx(full.per_epoch[1]["rankme"], rel=1e-6, abs=1e-7)
    assert forgetful.per_epoch[1]["probe/val_loss"] != pytest.approx(full.per_epoch[1]["probe/val_loss"], rel=1e-3)
