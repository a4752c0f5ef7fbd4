"""OnlineLinearProbe (linear and MLP) in a real run on PneumoniaMNIST: what it logs, and its checkpoint state."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_ssl.callbacks import OnlineLinearProbe
from probe_knn_helpers import RecordEpochMetrics
from ssl_method_helpers import ENCODER_OUT_DIM, make_datamodule, make_method, make_trainer

VAL_METRICS = ("val_acc", "val_balanced_acc", "val_auroc")


def test_linear_and_mlp_probe_log_metrics_and_checkpoint_separately(tmp_path):
    linear = OnlineLinearProbe()
    mlp = OnlineLinearProbe(hidden_dim=16, name="mlp", lr=3e-3)
    record = RecordEpochMetrics()
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    trainer = make_trainer(max_steps=-1, max_epochs=2, limit_train_batches=4, limit_val_batches=3,
                           callbacks=[linear, mlp, ckpt, record])
    trainer.fit(make_method("SimCLR"), datamodule=make_datamodule("SimCLR", batch_size=16))

    assert linear.num_classes == 2 and mlp.num_classes == 2  # read from the datamodule
    assert isinstance(linear.classifier, nn.Linear)
    assert isinstance(mlp.classifier, nn.Sequential) and mlp.classifier[0].out_features == 16

    assert set(record.per_epoch) == {0, 1}
    for epoch, metrics in record.per_epoch.items():
        for prefix in ("probe", "mlp"):
            for name in VAL_METRICS:
                value = metrics[f"{prefix}/{name}"]
                assert math.isfinite(value) and 0.0 <= value <= 1.0, (epoch, prefix, name, value)
            assert math.isfinite(metrics[f"{prefix}/val_loss"]) and metrics[f"{prefix}/val_loss"] > 0
            assert math.isfinite(metrics[f"{prefix}/train_loss"]) and metrics[f"{prefix}/train_loss"] > 0
    # the probes are evaluated on the validation set of this epoch: the values move between epochs
    assert record.per_epoch[0]["probe/val_loss"] != record.per_epoch[1]["probe/val_loss"]

    # each probe has its own entry in the checkpoint (a linear and an MLP probe can run together)
    state = torch.load(tmp_path / "epoch=1.ckpt", map_location="cpu", weights_only=False)["callbacks"]
    probe_states = {k: v for k, v in state.items() if k.startswith("OnlineLinearProbe")}
    assert len(probe_states) == 2, list(state)
    shapes = sorted(tuple(v["classifier"]["0.weight" if "0.weight" in v["classifier"] else "weight"].shape)
                    for v in probe_states.values())
    assert shapes == [(2, ENCODER_OUT_DIM), (16, ENCODER_OUT_DIM)]
    for cb in (linear, mlp):
        saved = state[cb.state_key]["classifier"]
        for name, p in cb.classifier.state_dict().items():
            assert torch.equal(saved[name], p), f"{cb.name}: {name} in the checkpoint is not the final weight"
        assert state[cb.state_key]["optimizer"]["state"], f"{cb.name}: optimizer state missing"
