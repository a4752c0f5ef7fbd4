"""Every configs/eeg/*.yaml parses through the CLI into its documented method and encoder on an EEGDataModule over
the real EEGMMIDB sample, and fits one step (fast_dev_run) through the real entry point; ``evaluate-eeg`` scores a
checkpoint from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lightning_ssl.cli import SSLCLI, main
from lightning_ssl.data import EEGDataModule, EEGView
from lightning_ssl.methods import METHODS

REPO_ROOT = Path(__file__).resolve().parents[2]
EEGMMIDB = REPO_ROOT.parent / "shared" / "data" / "eegmmidb"
EEG_CONFIGS = sorted((REPO_ROOT / "configs" / "eeg").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
EXPECTED = {  # config stem -> (method, encoder): what each config's header says
    "eegformer_eegmmidb": ("EEGFormer", "EEGPatchTransformer"),
    "simclr_eegmmidb": ("SimCLR", "ShallowConvNetEncoder"),
    "byol_eegmmidb": ("BYOL", "ShallowConvNetEncoder"),
    "vicreg_eegmmidb": ("VICReg", "ShallowConvNetEncoder"),
}
SHRINK = {  # small models so one step takes about a second
    "EEGPatchTransformer": ["--model.encoder.init_args.embed_dim", "32", "--model.encoder.init_args.depth", "1",
                            "--model.encoder.init_args.patch_size", "64", "--model.decoder_depth", "1",
                            "--model.num_codes", "32"],
    "ShallowConvNetEncoder": ["--model.encoder.init_args.n_filters", "8"],
}


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])


def _data(tmp_path: Path) -> list[str]:
    assert EEGMMIDB.is_dir(), f"real data missing: {EEGMMIDB}"
    return ["--data.init_args.root", str(EEGMMIDB), "--data.init_args.batch_size", "16",
            "--trainer.default_root_dir", str(tmp_path), *QUIET]


def test_every_eeg_config_is_listed() -> None:
    assert sorted(p.stem for p in EEG_CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("config", EEG_CONFIGS, ids=lambda p: p.stem)
def test_eeg_config_parses(config: Path, tmp_path: Path) -> None:
    cli = SSLCLI(args=["--config", str(config), "--trainer.logger", "false", *_data(tmp_path)], run=False)
    method, encoder = EXPECTED[config.stem]
    model, dm = cli.model, cli.datamodule
    assert type(model) is METHODS[method] and type(model.encoder).__name__ == encoder
    assert isinstance(dm, EEGDataModule) and dm.label_maps is not None and dm.straddle == "unlabel"
    assert all(isinstance(v, EEGView) for v in dm.views) and len(dm.views) >= model.min_views
    assert (model.encoder.in_channels, model.encoder.num_samples) == (64, 320)
    assert dm.test_recordings == ["S001R06"] and dm.val_recordings == ["S001R04"]
    callbacks = {type(c).__name__ for c in cli.trainer.callbacks}
    assert {"RankMe", "OnlineLinearProbe", "OnlineKNN"} <= callbacks
    if method == "EEGFormer":
        assert "LogCodebookPatterns" in callbacks and model.quantizer.num_codes == 512


@pytest.mark.parametrize("config", EEG_CONFIGS, ids=lambda p: p.stem)
def test_eeg_config_fits_one_step(config: Path, tmp_path: Path) -> None:
    encoder = EXPECTED[config.stem][1]
    args = ["fit", "--config", str(config), *_data(tmp_path), *SHRINK[encoder], "--trainer.fast_dev_run", "1",
            "--trainer.logger", "false"]
    assert main(args) == 0


def test_evaluate_eeg_cli(tmp_path: Path, capsys) -> None:
    config = str(REPO_ROOT / "configs" / "eeg" / "simclr_eegmmidb.yaml")
    common = ["--config", config, *_data(tmp_path), *SHRINK["ShallowConvNetEncoder"]]
    cli = SSLCLI(args=[*common, "--trainer.logger", "false"], run=False)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": cli.model.state_dict()}, ckpt)
    out = tmp_path / "result.json"
    assert main(["evaluate-eeg", *common, "--ckpt", str(ckpt), "--tasks", "eegmmidb", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"encoder", "band_power"}
    for kind in results.values():
        assert 0.0 <= kind["rest_vs_movement"]["balanced_acc"] <= 1.0
        assert "skipped" in kind["left_vs_right_fist"]  # run 6 (test) is fists vs feet
    with pytest.raises(SystemExit):
        main(["evaluate-eeg", *common, "--features", "wavelets"])
    assert "Unknown features" in capsys.readouterr().err
