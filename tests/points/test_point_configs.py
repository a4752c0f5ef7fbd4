"""Every configs/points/*.yaml parses through the CLI into its documented method, encoder and a
PointCloudDataModule, and fits for two steps (fast_dev_run) through the real entry point on the synthetic
shapes, with the encoder shrunk so that the run takes seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from lightning_ssl.cli import SSLCLI, main
from lightning_ssl.data import PointCloudDataModule, PointView
from lightning_ssl.methods import METHODS

REPO_ROOT = Path(__file__).resolve().parents[2]
POINT_CONFIGS = sorted((REPO_ROOT / "configs" / "points").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]

EXPECTED = {  # config stem -> (method, encoder, dataset): what each config's header comment says
    "point_mae_shapenet": ("PointMAE", "PointPatchTransformer", "shapenet"),
    "point_mae_modelnet40": ("PointMAE", "PointPatchTransformer", "modelnet40"),
    "masked_features_modelnet40": ("MaskedFeatureModeling", "PointPatchTransformer", "modelnet40"),
    "masked_features_shapenet": ("MaskedFeatureModeling", "PointPatchTransformer", "shapenet"),
    "simclr_modelnet40": ("SimCLR", "DGCNN", "modelnet40"),
    "byol_modelnet40": ("BYOL", "DGCNN", "modelnet40"),
    "barlow_twins_modelnet40": ("BarlowTwins", "DGCNN", "modelnet40"),
    "vicreg_modelnet40": ("VICReg", "DGCNN", "modelnet40"),
}
SHRINK = {
    "PointPatchTransformer": ["--model.encoder.init_args.num_groups", "16", "--model.encoder.init_args.group_size", "16",
                              "--model.encoder.init_args.depth", "3"],
    "DGCNN": ["--model.encoder.init_args.k", "8", "--model.encoder.init_args.emb_dim", "64"],
}


@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])
    monkeypatch.chdir(tmp_path)


def _synthetic(tmp_path: Path) -> list[str]:
    return ["--data.init_args.dataset", "synthetic", "--data.init_args.root", "null", "--data.init_args.num_points", "128",
            "--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0",
            "--data.init_args.synthetic_samples_per_class", "8", "--data.init_args.cache_dir", str(tmp_path / "cache"),
            "--trainer.default_root_dir", str(tmp_path), *QUIET]


def test_every_point_config_is_listed():
    assert sorted(p.stem for p in POINT_CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("config", POINT_CONFIGS, ids=lambda p: p.stem)
def test_point_config_parses_with_paper_settings(config: Path, tmp_path: Path):
    raw = yaml.safe_load(config.read_text())
    cli = SSLCLI(args=["--config", str(config), "--trainer.logger", "false", *QUIET], run=False)
    method, encoder, dataset = EXPECTED[config.stem]
    model, dm = cli.model, cli.datamodule
    assert type(model) is METHODS[method] and type(model.encoder).__name__ == encoder
    assert isinstance(dm, PointCloudDataModule) and dm.dataset == dataset and dm.num_points == 1024
    assert all(isinstance(v, PointView) for v in dm.views)
    assert len(dm.views) == len(raw["data"]["init_args"]["views"]) >= model.min_views
    if encoder == "PointPatchTransformer":  # Point-MAE's settings
        enc = model.encoder
        assert (enc.num_groups, enc.group_size, enc.embed_dim, len(enc.blocks)) == (64, 32, 384, 12)
        assert model.mask_ratio == 0.6 and model.hparams.weight_decay == 0.05
        assert model.hparams.warmup_epochs == 10 and cli.config.trainer.max_epochs == 300


@pytest.mark.parametrize("config", POINT_CONFIGS, ids=lambda p: p.stem)
def test_point_config_fits_on_synthetic_shapes(config: Path, tmp_path: Path):
    encoder = EXPECTED[config.stem][1]
    args = ["fit", "--config", str(config), *_synthetic(tmp_path), *SHRINK[encoder],
            "--trainer.fast_dev_run", "2", "--trainer.logger", "false"]
    assert main(args) == 0


def test_evaluate_points_cli(tmp_path: Path, capsys):
    import json

    import torch

    config = str(REPO_ROOT / "configs" / "points" / "point_mae_modelnet40.yaml")
    common = ["--config", config, *_synthetic(tmp_path), *SHRINK["PointPatchTransformer"],
              "--model.encoder.init_args.embed_dim", "48", "--model.decoder_num_heads", "2",
              "--model.encoder.init_args.num_heads", "2"]
    cli = SSLCLI(args=[*common, "--trainer.logger", "false"], run=False)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": cli.model.state_dict()}, ckpt)
    out = tmp_path / "result.json"
    assert main(["evaluate-points", *common, "--ckpt", str(ckpt), "--tasks", "classification,segmentation",
                 "--seg-epochs", "2", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"classification", "segmentation"}
    assert 0.0 <= results["classification"]["linear"]["acc"] <= 1.0
    assert 0.0 <= results["segmentation"]["instance_miou"] <= 1.0
    with pytest.raises(SystemExit):
        main(["evaluate-points", *common, "--ckpt", str(tmp_path / "missing.ckpt")])
    assert "Checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate-points", *common, "--tasks", "detection"])
    assert "Unknown task" in capsys.readouterr().err
