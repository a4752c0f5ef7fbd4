"""Bad input through the CLI and the encoders: an early failure whose message names the problem and the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_ssl.cli import SSLCLI, main
from lightning_ssl.encoders import TORCHVISION_RESNETS, TimmEncoder, TorchvisionEncoder

REPO = Path(__file__).resolve().parents[2]
MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"
CONFIG = REPO / "configs" / "image" / "simclr_pneumoniamnist.yaml"
FAST = ["--trainer.fast_dev_run=true", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--data.init_args.root", str(MEDMNIST),
        "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
        "--model.init_args.encoder.init_args.name", "test_resnet"]



@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])
    monkeypatch.chdir(tmp_path)


def _typo_config(tmp_path: Path, section: str, key: str) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    args = config[section]["init_args"]
    if section == "model":
        args[key] = args.pop("temperature")
    else:
        args[key] = args.pop("batch_size")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("section, key", [("model", "temprature"), ("data", "batchsize")])
def test_config_typo_exits_and_names_the_key(tmp_path: Path, capsys, section: str, key: str) -> None:
    path = _typo_config(tmp_path, section, key)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(path), *FAST])
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err
    assert f"'{key}'" in err and "not accepted" in err
    assert not list(tmp_path.rglob("*.ckpt")), "nothing may run after a parse error"


def test_config_typo_on_the_command_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(CONFIG), "--model.init_args.temprature", "0.1", *FAST])
    assert exc.value.code not in (0, None)
    assert "temprature" in capsys.readouterr().err


def test_unknown_method_name(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--model", "SimCLRR", "--data", "ImageDataModule"])
    assert exc.value.code not in (0, None)
    assert "SimCLRR" in capsys.readouterr().err


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(tmp_path / "nope.yaml")])
    assert exc.value.code not in (0, None)
    assert "nope.yaml" in capsys.readouterr().err


def test_unknown_dataset_through_the_cli() -> None:
    with pytest.raises(ValueError, match=r"Unknown dataset 'cifar11'. Valid names: \[.*'cifar10'"):
        SSLCLI(args=["fit", "--config", str(CONFIG), *FAST, "--data.init_args.dataset", "cifar11"])


def test_unknown_recipe_through_the_cli() -> None:
    with pytest.raises(ValueError, match=r"Unknown recipe 'simclrr'. Valid recipes: \['simclr', 'byol', 'dino', 'mae'\]"):
        SSLCLI(args=["fit", "--config", str(CONFIG), *FAST, "--data.init_args.recipe", "simclrr"])


def test_unknown_timm_model_through_the_cli() -> None:
    with pytest.raises(ValueError, match=r"Unknown timm model 'resnet_18x'.*'resnet18'.*timm.list_models\(\)"):
        SSLCLI(args=["fit", "--config", str(CONFIG), *FAST, "--model.init_args.encoder.init_args.name", "resnet_18x"])


def test_channel_mismatch_through_the_cli(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data has 1 channel\(s\).*expects 3.*in_chans: 1"):
        SSLCLI(args=["fit", "--config", str(CONFIG), *FAST, "--model.init_args.encoder.init_args.in_chans", "3"])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_unknown_view_overrides_through_the_cli() -> None:
    with pytest.raises(ValueError, match=r"Unknown view_overrides \['scal'\]; valid fields"):
        SSLCLI(args=["fit", "--config", str(CONFIG), *FAST, "--data.init_args.view_overrides", "{scal: [0.5, 1.0]}"])


@pytest.mark.parametrize("name, suggestion", [("resnet_18x", "resnet18"), ("resnt50", "resnet50"),
                                              ("vit_small_patch16", "vit_small_patch16_224")])
def test_unknown_timm_model(name: str, suggestion: str) -> None:
    with pytest.raises(ValueError) as exc:
        TimmEncoder(name)
    msg = str(exc.value)
    assert f"Unknown timm model {name!r}" in msg
    assert f"'{suggestion}'" in msg  # close names are suggested
    assert "timm.list_models()" in msg


def test_unknown_torchvision_model() -> None:
    with pytest.raises(ValueError, match=r"Unknown torchvision model 'resnet19'; valid names: \[") as exc:
        TorchvisionEncoder("resnet19")
    for name in TORCHVISION_RESNETS:
        assert f"'{name}'" in str(exc.value)


def test_small_stem_on_a_vit_names_the_fix() -> None:
    with pytest.raises(ValueError, match="small_stem=False or a resnet"):
        TimmEncoder("test_vit", small_stem=True)
