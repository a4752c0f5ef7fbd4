"""Every method of METHODS trains a few steps on real data (PneumoniaMNIST) and honours the step-output contract."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_ssl.methods import METHODS
from ssl_method_helpers import ENCODER_OUT_DIM, IMAGE_METHODS, PROJ_DIM, clone_params, make_datamodule, make_method, make_trainer


class CaptureOutputs(Callback):
    """Keeps what training_step / validation_step returned, with the batch it came from."""

    def __init__(self) -> None:
        self.train: list[tuple[dict, object]] = []
        self.val: list[tuple[dict, object]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train.append((outputs, batch))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val.append((outputs, batch))


def test_methods_registry_is_complete():
    assert set(METHODS) == {"SimCLR", "MoCoV3", "BYOL", "SimSiam", "BarlowTwins", "VICReg", "DINO",
                            "CCASSG", "DGI", "GraphMAE", "PointMAE", "MaskedFeatureModeling",
                            "EEGFormer", "MixedBarlowTwins", "MYOW", "GroCo", "SupCon", "MAE"}
    for name, cls in METHODS.items():
        assert cls.__name__ == name


@pytest.mark.parametrize("name", sorted(IMAGE_METHODS))
def test_method_trains_and_returns_contract(name):
    model = make_method(name)
    dm = make_datamodule(name, batch_size=16)
    before = clone_params(model.encoder)
    capture = CaptureOutputs()
    trainer = make_trainer(max_steps=3, callbacks=[capture])
    trainer.fit(model, datamodule=dm)

    assert trainer.global_step == 3
    # the encoder learned something: at least one parameter moved, none became non-finite
    after = clone_params(model.encoder)
    assert before.keys() == after.keys()
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed, f"{name}: no encoder parameter changed in 3 steps"
    assert all(torch.isfinite(p).all() for p in after.values())

    assert "train/loss" in trainer.callback_metrics
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "train/lr" in trainer.callback_metrics

    assert len(capture.train) == 3
    for out, batch in capture.train:
        assert isinstance(out, dict)
        assert {"loss", "embeddings", "projections", "target"} <= set(out)
        assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
        bsz = batch.views[0].shape[0]
        assert bsz == 16
        assert out["embeddings"].shape == (bsz, ENCODER_OUT_DIM)
        assert not out["embeddings"].requires_grad and out["embeddings"].grad_fn is None
        assert out["projections"].shape == (bsz, PROJ_DIM[name])
        assert not out["projections"].requires_grad and out["projections"].grad_fn is None
        assert torch.equal(out["target"], batch.target)
        if name == "DINO":
            assert len(batch.views) == 4  # 2 global + 2 local crops
            assert batch.views[2].shape[-1] < batch.views[0].shape[-1]
        else:
            assert len(batch.views) == 2

    # validation_step (sanity check, limit_val_batches=1): clean view embeddings and labels
    assert capture.val, "validation_step never ran"
    for out, batch in capture.val:
        assert set(out) >= {"embeddings", "target"}
        assert len(batch.views) == 1
        assert out["embeddings"].shape == (batch.views[0].shape[0], ENCODER_OUT_DIM)
        assert torch.equal(out["target"], batch.target)
        assert set(out["target"].unique().tolist()) <= {0, 1}


def test_validation_step_embeds_with_forward():
    """validation_step's embeddings are the encoder output of the clean view (eval mode, deterministic)."""
    model = make_method("SimCLR").eval()
    dm = make_datamodule("SimCLR", batch_size=8)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        out = model.validation_step(batch, 0)
        expected = model.encoder(batch.views[0])
    assert torch.allclose(out["embeddings"], expected)
    assert torch.equal(out["target"], batch.target)


def test_too_few_views_raises_clear_error():
    model = make_method("SimCLR")
    from lightning_ssl.data.batch import SSLBatch

    batch = SSLBatch(views=[torch.randn(4, 1, 28, 28)], target=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="needs >= 2 views"):
        model.training_step(batch, 0)
