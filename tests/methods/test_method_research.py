"""MixedBarlowTwins, SupCon and GroCo: a few training steps on real PneumoniaMNIST through a Lightning Trainer
with the step-output contract, method-specific guarantees and bad input, and their configs (parse + one step)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from lightning_ssl.cli import SSLCLI, main
from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.methods.groco import GroCo
from lightning_ssl.methods.mixed_barlow_twins import MixedBarlowTwins
from lightning_ssl.methods.supcon import SupCon
from ssl_method_helpers import ENCODER_OUT_DIM, MEDMNIST_ROOT, clone_params, make_datamodule, make_trainer, tiny_encoder

REPO = Path(__file__).resolve().parents[2]
HEADS = dict(proj_hidden_dim=32, proj_out_dim=16)
METHODS = {"MixedBarlowTwins": MixedBarlowTwins, "SupCon": SupCon, "GroCo": GroCo}


class CaptureOutputs(Callback):
    def __init__(self) -> None:
        self.train: list[tuple[dict, SSLBatch]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train.append((outputs, batch))


def _batch(batch_size: int = 8, recipe: str = "simclr") -> SSLBatch:
    dm = make_datamodule(batch_size=batch_size, recipe=recipe)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_trains_and_returns_contract(name):
    model = METHODS[name](tiny_encoder(), **HEADS)
    dm = make_datamodule(batch_size=16, recipe="byol" if name == "GroCo" else "simclr")
    before = clone_params(model.encoder)
    capture = CaptureOutputs()
    trainer = make_trainer(max_steps=3, callbacks=[capture])
    if name == "SupCon":
        with pytest.warns(UserWarning, match="SupCon is a SUPERVISED method"):
            trainer.fit(model, datamodule=dm)
    else:
        trainer.fit(model, datamodule=dm)

    assert trainer.global_step == 3
    after = clone_params(model.encoder)
    assert any(not torch.equal(before[k], after[k]) for k in before), f"{name}: the encoder did not move"
    assert all(torch.isfinite(p).all() for p in after.values())
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    if name == "MixedBarlowTwins":
        assert metrics["train/mix_reg"] > 0 and torch.isfinite(metrics["train/barlow_twins"])
        assert 0.0 <= float(metrics["train/mix_lambda"]) <= 1.0
        assert float(metrics["train/loss"]) == pytest.approx(
            float(metrics["train/barlow_twins"] + metrics["train/mix_reg"]), rel=1e-5)
    assert len(capture.train) == 3
    for out, batch in capture.train:
        assert {"loss", "embeddings", "projections", "target"} <= set(out)
        assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
        assert len(batch.views) == 2  # the mixed view is the method's own, not added to the batch
        assert out["embeddings"].shape == (16, ENCODER_OUT_DIM) and out["embeddings"].grad_fn is None
        assert not out["embeddings"].requires_grad
        assert out["projections"].shape == (16, 16) and out["projections"].grad_fn is None
        assert torch.equal(out["target"], batch.target)


def test_mixed_view_does_not_disturb_view_zero():
    """embeddings/projections of the step output are those of view 0, encoded exactly as BarlowTwins does."""
    model = MixedBarlowTwins(tiny_encoder(), **HEADS).train()
    batch = _batch()
    out = model.training_step(batch, 0)
    with torch.no_grad():
        h = model.encode_views(batch.views)  # what BarlowTwins computes: the two views in one pass
        expected_h = h[0]
        expected_z = [model.project(x) for x in h][0]
    torch.testing.assert_close(out["embeddings"], expected_h)
    torch.testing.assert_close(out["projections"], expected_z)


def test_mix_lambda_same_on_every_rank_and_resumes():
    """lambda comes from a generator seeded with mix_seed only: ranks with different torch/NumPy seeds draw the
    same sequence; the generator state travels in the checkpoint."""
    torch.manual_seed(1)
    np.random.seed(1)
    rank0 = MixedBarlowTwins(tiny_encoder(), **HEADS, mix_seed=3)
    torch.manual_seed(2)
    np.random.seed(2)
    rank1 = MixedBarlowTwins(tiny_encoder(), **HEADS, mix_seed=3)
    draws = [rank0.draw_mix_lambda() for _ in range(5)]
    assert draws == [rank1.draw_mix_lambda() for _ in range(5)]
    assert len(set(draws)) == 5 and all(0 <= d <= 1 for d in draws)
    other = MixedBarlowTwins(tiny_encoder(), **HEADS, mix_seed=4)
    assert [other.draw_mix_lambda() for _ in range(5)] != draws
    ckpt: dict = {}
    rank0.on_save_checkpoint(ckpt)
    next_draws = [rank0.draw_mix_lambda() for _ in range(3)]
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    resumed = MixedBarlowTwins(tiny_encoder(), **HEADS, mix_seed=3)
    resumed.on_load_checkpoint(torch.load(buffer, weights_only=True))  # plain ints and strings: safe to load
    assert [resumed.draw_mix_lambda() for _ in range(3)] == next_draws


def test_bad_input_errors():
    with pytest.raises(ValueError, match="Beta parameters of the mixing weight must be > 0"):
        MixedBarlowTwins(tiny_encoder(), mix_alpha=0.0)
    with pytest.raises(ValueError, match="Beta parameters of the mixing weight must be > 0"):
        MixedBarlowTwins(tiny_encoder(), mix_beta=-1.0)
    with pytest.raises(ValueError, match="lambda_reg must be >= 0"):
        MixedBarlowTwins(tiny_encoder(), lambda_reg=-0.5)
    x = torch.randn(4, 1, 28, 28)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="must have the same shape"):
        MixedBarlowTwins(tiny_encoder(), **HEADS).training_step(SSLBatch(views=[x, x[..., :24, :24]], target=y), 0)

    supcon = SupCon(tiny_encoder(), **HEADS)
    with pytest.raises(ValueError, match="SupCon is supervised: it needs class labels"):
        supcon.training_step(SSLBatch(views=[x, x.clone()], target=None), 0)
    with pytest.raises(ValueError, match="-1 marks an unlabelled sample"):
        supcon.training_step(SSLBatch(views=[x, x.clone()], target=torch.tensor([0, 1, -1, 0])), 0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        SupCon(tiny_encoder(), temperature=0.0)

    with pytest.raises(ValueError, match="Unknown relaxation 'softmax'"):
        GroCo(tiny_encoder(), relaxation="softmax")
    with pytest.raises(ValueError, match="num_positive_views must be >= 2"):
        GroCo(tiny_encoder(), num_positive_views=1)
    with pytest.raises(ValueError, match="steepness must be positive"):
        GroCo(tiny_encoder(), steepness=0.0)


def test_supcon_loss_reads_labels():
    """Same images, different labels: a different loss (the one method whose loss reads batch.target)."""
    model = SupCon(tiny_encoder(), **HEADS).train()
    batch = _batch()
    torch.manual_seed(0)
    a = model.training_step(SSLBatch(views=batch.views, target=torch.zeros(8, dtype=torch.long)), 0)["loss"]
    torch.manual_seed(0)
    b = model.training_step(SSLBatch(views=batch.views, target=torch.arange(8)), 0)["loss"]
    assert abs(a.item() - b.item()) > 1e-3


# ---------------------------------------------------------------------------------------- configs
MBT = "lightning_ssl.methods.MixedBarlowTwins"
MBT_PAPER = {"lambda_reg": 4.0, "lambda_offdiag": 0.0078125}  # the paper's CIFAR-10/100 weights (wgcban/mix-bt README)
CONFIGS = {
    "mixed_barlow_twins_pneumoniamnist.yaml": (MBT, MBT_PAPER),
    "mixed_barlow_twins_cifar10.yaml": (MBT, MBT_PAPER),
    "mixed_barlow_twins_cifar100.yaml": (MBT, MBT_PAPER),
    "supcon_pneumoniamnist.yaml": ("lightning_ssl.methods.SupCon", {"temperature": 0.1}),
    "groco_pneumoniamnist.yaml": ("lightning_ssl.methods.GroCo", {"steepness": 1.0, "num_negatives": 10}),
}
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture
def _argv(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_config_parses(config, capsys, _argv):
    path = REPO / "configs" / "image" / config
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(path), "--print_config"])
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    class_path, values = CONFIGS[config]
    assert printed["model"]["class_path"] == class_path
    for key, value in values.items():
        assert printed["model"]["init_args"][key] == value
    callbacks = [cb["class_path"].rsplit(".", 1)[-1] for cb in printed["trainer"]["callbacks"]]
    assert {"RankMe", "OnlineLinearProbe", "OnlineKNN", "ModelCheckpoint"} <= set(callbacks)


@pytest.mark.parametrize("config", ["mixed_barlow_twins_pneumoniamnist.yaml", "supcon_pneumoniamnist.yaml",
                                    "groco_pneumoniamnist.yaml"])
def test_config_one_step_on_real_data(config, tmp_path, monkeypatch, _argv):
    """One step from the shipped config on the real PneumoniaMNIST file (the CIFAR configs run as shipped, on
    RetinaMNIST, in tests/cli/test_cli_configs.py)."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO / "configs" / "image" / config), "--trainer.fast_dev_run=true",
            "--trainer.logger", "false", *QUIET, "--model.init_args.encoder.init_args.name", "test_resnet",
            "--data.init_args.root", str(MEDMNIST_ROOT), "--data.init_args.batch_size", "12",
            "--data.init_args.num_workers", "0"]
    cli = SSLCLI(args=args)
    assert f"lightning_ssl.methods.{type(cli.model).__name__}" == CONFIGS[config][0]
    assert cli.trainer.global_step == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
