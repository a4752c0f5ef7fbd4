"""Every shipped config parses and trains one step on real data; validate/test from a checkpoint; class-name
selection; ``lightning-ssl --help``.

The configs are run in-process (``lightning_ssl.cli.main`` / ``SSLCLI``) in a temporary working directory.
Each config runs as shipped (its own ResNet-18, heads, recipe and optimizer); only the data root, the
batch size, the workers and the logger are overridden.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_ssl.cli import SSLCLI, main
from lightning_ssl.data import ImageDataModule
from lightning_ssl.methods import METHODS

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
MEDMNIST = SHARED / "medmnist"
CONFIGS = sorted((REPO / "configs" / "image").rglob("*.yaml"))  # graph configs: tests/graph/test_graph_configs.py

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]



@pytest.fixture(autouse=True)
def _argv(monkeypatch) -> None:
    """In-process runs: the parser must not see pytest's own arguments (and names itself lightning-ssl)."""
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])


def _data_overrides(config: Path) -> list[str]:
    args = [
        "--data.init_args.root", str(MEDMNIST),
        "--data.init_args.batch_size", "4",
        "--data.init_args.num_workers", "0",
    ]
    if "cifar10" in config.stem:
        # no CIFAR-10 offline: RetinaMNIST is RGB (28 px, upsampled to the config's 32 px)
        args += ["--data.init_args.dataset", "retinamnist"]
    return args


def _config(config: Path) -> dict:
    return yaml.safe_load(config.read_text())


def _id(config: Path) -> str:
    return str(config.relative_to(REPO / "configs"))


def test_there_are_enough_configs() -> None:
    assert len(CONFIGS) >= 14, f"expected >= 14 configs under configs/, found {len(CONFIGS)}: {CONFIGS}"


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_config_print_config(config: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = _config(config)["model"]["class_path"]
    assert printed["model"]["class_path"] == expected
    assert expected.rsplit(".", 1)[-1] in METHODS
    assert printed["data"]["class_path"] == _config(config)["data"]["class_path"]


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_config_fast_dev_run_on_real_data(config: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the configs write runs/ and checkpoints/ relative to the working directory
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run=true", *_data_overrides(config),
            "--trainer.logger", "false", *QUIET]
    try:
        cli = SSLCLI(args=args)
    finally:
        # Lightning 2.6 still writes ModelCheckpoint(save_last=True)'s last.ckpt under fast_dev_run: drop it
        shutil.rmtree(tmp_path / "checkpoints", ignore_errors=True)
    expected = _config(config)["model"]["class_path"].rsplit(".", 1)[-1]
    assert type(cli.model).__name__ == expected
    assert isinstance(cli.datamodule, ImageDataModule)
    assert cli.trainer.global_step == 1
    loss = cli.trainer.callback_metrics.get("train/loss")
    assert loss is not None and torch.isfinite(loss), cli.trainer.callback_metrics
    assert cli.model.encoder.in_chans == cli.datamodule.num_channels


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_config_ships_label_free_monitoring(config: Path) -> None:
    """Every config enables RankMe, the online probe, kNN and RankMe-based checkpoint selection."""
    callbacks = _config(config)["trainer"]["callbacks"]
    paths = [cb["class_path"].rsplit(".", 1)[-1] for cb in callbacks]
    for name in ("RankMe", "OnlineLinearProbe", "OnlineKNN"):
        assert name in paths, f"{config.name} lacks {name}"
    checkpoints = [cb.get("init_args", {}) for cb in callbacks if cb["class_path"].endswith("ModelCheckpoint")]
    assert any(c.get("monitor") == "rankme" and c.get("mode") == "max" for c in checkpoints), checkpoints
    # monitoring callbacks come before the checkpoint that reads their metric
    assert paths.index("RankMe") < paths.index("ModelCheckpoint")


def test_config_logs_label_free_metrics_and_selects_by_rankme(tmp_path: Path, monkeypatch) -> None:
    """A shipped config, one short epoch on PneumoniaMNIST: rankme, probe and kNN metrics are logged and
    ModelCheckpoint keeps the RankMe-best checkpoint under its rankme-named file."""
    monkeypatch.chdir(tmp_path)
    config = REPO / "configs" / "image" / "simclr_pneumoniamnist.yaml"
    cli = SSLCLI(args=["fit", "--config", str(config), *_data_overrides(config), "--trainer.logger", "false", *QUIET,
                       "--model.init_args.encoder.init_args.name", "test_resnet",
                       "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                       "--trainer.limit_val_batches", "3", "--trainer.num_sanity_val_steps", "0"])
    metrics = cli.trainer.callback_metrics
    for key in ("rankme", "probe/val_acc", "probe/val_auroc", "knn/val_acc"):
        assert key in metrics and torch.isfinite(metrics[key]), (key, sorted(metrics))
    assert 1.0 <= float(metrics["rankme"]) <= 12  # 12 validation rows: RankMe <= min(N, K)
    best = [cb for cb in cli.trainer.checkpoint_callbacks if cb.monitor == "rankme"][0]
    assert Path(best.best_model_path).name.startswith("best-rankme-epoch=0"), best.best_model_path
    assert float(best.best_model_score) == pytest.approx(float(metrics["rankme"]))


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test"])
def test_subcommands_through_main(subcommand: str, tmp_path: Path, monkeypatch) -> None:
    """``lightning_ssl.cli.main`` (the ``lightning-ssl`` entry point) runs fit, validate and test."""
    monkeypatch.chdir(tmp_path)
    config = REPO / "configs" / "image" / "vicreg_pneumoniamnist.yaml"
    assert config in CONFIGS
    rc = main([subcommand, "--config", str(config), "--trainer.fast_dev_run=true", *_data_overrides(config),
               "--trainer.logger", "false", *QUIET, "--model.init_args.encoder.init_args.name", "test_resnet"])
    assert rc == 0


def test_fit_validate_test_from_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """One config unchanged (its ResNet-18): fit 1 step with a checkpoint, then validate and test from it."""
    monkeypatch.chdir(tmp_path)
    config = REPO / "configs" / "image" / "simclr_pneumoniamnist.yaml"
    common = ["--config", str(config), *_data_overrides(config), "--trainer.logger", "false", *QUIET,
              "--trainer.default_root_dir", str(tmp_path)]
    # limit_*_batches "1" would parse as 1.0 (= 100%) through the CLI: Lightning annotates them
    # Union[float, int, None] and jsonargparse tries float first. Use 2.
    fit = SSLCLI(args=["fit", *common, "--trainer.max_steps", "1", "--trainer.limit_train_batches", "2",
                       "--trainer.limit_val_batches", "2", "--trainer.num_sanity_val_steps", "0"])
    assert fit.trainer.global_step == 1
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file(), sorted(str(p) for p in tmp_path.rglob("*.ckpt"))
    saved = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]

    val = SSLCLI(args=["validate", *common, "--ckpt_path", str(last), "--trainer.limit_val_batches", "2"])
    assert val.trainer.validate_loop.batch_progress.total.completed == 2
    for k, v in val.model.state_dict().items():  # the checkpoint's weights were evaluated, not a fresh model
        assert torch.equal(v, saved[k]), k

    test = SSLCLI(args=["test", *common, "--ckpt_path", str(last), "--trainer.limit_test_batches", "2"])
    assert test.trainer.test_loop.batch_progress.total.completed == 2
    assert torch.equal(test.model.encoder.model.conv1.weight, saved["encoder.model.conv1.weight"])


SHORT_NAMES = [
    "--model", "SimCLR",
    "--model.encoder", "TimmEncoder",
    "--model.encoder.name", "test_resnet",
    "--model.encoder.in_chans", "1",
    "--model.encoder.small_stem", "true",
    "--model.proj_hidden_dim", "32",
    "--model.proj_out_dim", "16",
    "--data", "ImageDataModule",
    "--data.dataset", "breastmnist",
    "--data.root", str(MEDMNIST),
    "--data.batch_size", "4",
    "--data.num_workers", "0",
]


def test_short_class_names_without_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = SSLCLI(args=["fit", *SHORT_NAMES, "--trainer.fast_dev_run", "true", "--trainer.logger", "false", *QUIET])
    assert type(cli.model).__name__ == "SimCLR"
    assert type(cli.model.encoder).__name__ == "TimmEncoder" and cli.model.encoder.name == "test_resnet"
    assert cli.datamodule.dataset_name == "breastmnist"
    assert cli.trainer.global_step == 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_selectable_by_short_name(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--model", name, "--model.encoder", "TimmEncoder", "--data", "ImageDataModule", "--print_config"])
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].rsplit(".", 1)[-1] == name
    assert printed["model"]["init_args"]["encoder"]["class_path"] == "lightning_ssl.encoders.TimmEncoder"
    assert printed["data"]["class_path"].endswith("ImageDataModule")


def test_help_mentions_export(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "lightning-ssl export" in out and "fit" in out


def test_entry_point_help() -> None:
    exe = shutil.which("lightning-ssl")
    cmd = [exe] if exe else [sys.executable, "-m", "lightning_ssl.cli"]
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: lightning-ssl" in proc.stdout and "export" in proc.stdout


def test_no_arguments_prints_usage_and_fails(capsys) -> None:
    assert main([]) == 2
    assert "lightning-ssl export" in capsys.readouterr().out
