"""Every configs/graph/*.yaml parses through the CLI into its documented method and a GraphDataModule over
the shared Cora; two of them fit for one step (fast_dev_run) through the real entry point."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from graph_helpers import CORA_FEATURES, PLANETOID, REPO_ROOT
from lightning_ssl.cli import SSLCLI, main
from lightning_ssl.data import GraphDataModule, GraphView
from lightning_ssl.encoders import GNNEncoder
from lightning_ssl.methods import METHODS

GRAPH_CONFIGS = sorted((REPO_ROOT / "configs" / "graph").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]

# the documented method of each config (the comment at its top and the README)
EXPECTED_METHOD = {
    "bgrl_cora": "BYOL", "cca_ssg_cora": "CCASSG", "dgi_cora": "DGI", "gbt_cora": "BarlowTwins",
    "grace_cora": "SimCLR", "grace_cora_neighbor": "SimCLR", "graphmae_cora": "GraphMAE",
}


@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path):
    """In-process runs: the parser must not see pytest's arguments; relative outputs go to tmp."""
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])
    monkeypatch.chdir(tmp_path)


def _common(tmp_path: Path) -> list[str]:
    return ["--data.init_args.root", str(PLANETOID), "--data.init_args.cache_dir", str(tmp_path / "cache"),
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", *QUIET]


def test_every_graph_config_is_listed():
    assert sorted(p.stem for p in GRAPH_CONFIGS) == sorted(EXPECTED_METHOD)


@pytest.mark.parametrize("config", GRAPH_CONFIGS, ids=lambda p: p.stem)
def test_graph_config_parses(config: Path, tmp_path: Path):
    raw = yaml.safe_load(config.read_text())
    cli = SSLCLI(args=["--config", str(config), *_common(tmp_path)], run=False)
    model, dm = cli.model, cli.datamodule
    assert type(model).__name__ == EXPECTED_METHOD[config.stem] and type(model) is METHODS[type(model).__name__]
    assert raw["model"]["class_path"].rsplit(".", 1)[-1] == type(model).__name__
    assert isinstance(dm, GraphDataModule) and isinstance(model.encoder, GNNEncoder)
    assert dm.dataset_name == "Cora" and dm.root == str(PLANETOID)
    # views given as dicts in YAML become GraphView specs, one per view
    assert all(isinstance(v, GraphView) for v in dm.views)
    assert len(dm.views) == len(raw["data"]["init_args"]["views"])
    assert len(dm.views) >= model.min_views
    # the encoder fits the data: feature width and, for sampled batches, one fan-out per layer
    assert model.encoder.in_channels == CORA_FEATURES == dm.num_features
    dm.check_encoder(model.encoder)
    enc_args = raw["model"]["init_args"]["encoder"]["init_args"]
    assert model.encoder.conv_type == enc_args["conv"] and model.encoder.num_layers == enc_args["num_layers"]
    assert dm.mode == raw["data"]["init_args"]["mode"]
    assert not list(PLANETOID.rglob("processed")), "parsing wrote next to the shared data"


def test_method_specific_settings_survive_parsing(tmp_path: Path):
    def parsed(stem):
        return SSLCLI(args=["--config", str(REPO_ROOT / "configs" / "graph" / f"{stem}.yaml"), *_common(tmp_path)],
                      run=False)

    dgi = parsed("dgi_cora")
    assert [v.shuffle_features for v in dgi.datamodule.views] == [False, True]
    bgrl = parsed("bgrl_cora")
    assert isinstance(bgrl.model.projector, torch.nn.Identity)  # proj_layers: 0
    neighbor = parsed("grace_cora_neighbor")
    assert neighbor.datamodule.mode == "neighbor" and neighbor.datamodule.num_neighbors == [10, 10]
    cca = parsed("cca_ssg_cora")
    assert cca.model.lambd == pytest.approx(1e-3) and not cca.model.encoder.act_last


@pytest.mark.parametrize("stem", ["cca_ssg_cora", "grace_cora_neighbor"])
def test_graph_config_fast_dev_run(stem: str, tmp_path: Path):
    config = REPO_ROOT / "configs" / "graph" / f"{stem}.yaml"
    small = ["--model.init_args.encoder.init_args.hidden_channels", "16",
             "--model.init_args.encoder.init_args.out_channels", "16"]
    args = ["fit", "--config", str(config), *_common(tmp_path), *small, "--trainer.fast_dev_run=true"]
    try:
        cli = SSLCLI(args=args)
    finally:
        shutil.rmtree(tmp_path / "checkpoints", ignore_errors=True)  # fast_dev_run still writes last.ckpt
    assert cli.trainer.global_step == 1
    assert cli.model.encoder.out_dim == 16
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]), metrics
    assert "rankme" in metrics and torch.isfinite(metrics["rankme"])
    assert not list(PLANETOID.rglob("processed"))
    assert list((tmp_path / "cache").rglob("processed/data.pt"))


def test_graph_config_through_main(tmp_path: Path):
    """The ``lightning-ssl`` entry point (``cli.main``) runs a graph config."""
    config = REPO_ROOT / "configs" / "graph" / "dgi_cora.yaml"
    rc = main(["fit", "--config", str(config), *_common(tmp_path), "--trainer.fast_dev_run=true",
               "--model.init_args.encoder.init_args.hidden_channels", "16"])
    assert rc == 0


def test_evaluate_graph_cli_on_a_trained_checkpoint(tmp_path: Path, capsys):
    """``lightning-ssl fit`` with a link split, then ``lightning-ssl evaluate-graph`` on its checkpoint: node
    classification, clustering and link prediction on edges the encoder never saw, written as JSON."""
    config = REPO_ROOT / "configs" / "graph" / "cca_ssg_cora.yaml"
    small = ["--model.init_args.encoder.init_args.hidden_channels", "16",
             "--model.init_args.encoder.init_args.out_channels", "16", "--data.init_args.link_split", "true"]
    assert main(["fit", "--config", str(config), *_common(tmp_path), *small, "--trainer.max_epochs", "1",
                 "--trainer.check_val_every_n_epoch", "1"]) == 0
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), sorted(str(p) for p in tmp_path.rglob("*.ckpt"))
    out = tmp_path / "eval.json"
    eval_args = ["--config", str(config), "--ckpt", str(ckpt), "--tasks", "node,cluster,link", "--seeds", "0,1",
                 "--out", str(out), "--data.init_args.root", str(PLANETOID),
                 "--data.init_args.cache_dir", str(tmp_path / "cache"), *small]
    assert main(["evaluate-graph", *eval_args]) == 0
    res = json.loads(out.read_text())
    assert 1 / 7 < res["node"]["mean"] <= 1.0 and "public" in res["node"]["protocol"]
    assert len(res["node"]["accs"]) == 2
    assert 0.0 <= res["cluster"]["nmi"] <= 1.0
    for part in ("val", "test"):
        assert 0.5 < res["link"][part]["auc"] <= 1.0 and 0.0 <= res["link"][part]["ap"] <= 1.0
    # the checkpoint's weights were loaded: the random-init encoder scores differently
    rand = tmp_path / "rand.json"
    assert main(["evaluate-graph", *[a if a != str(out) else str(rand) for a in eval_args if a not in ("--ckpt", str(ckpt))]]) == 0
    assert json.loads(rand.read_text())["node"]["accs"] != res["node"]["accs"]
    # bad input: a missing checkpoint and link prediction without a link split are clear errors
    with pytest.raises(SystemExit):
        main(["evaluate-graph", "--config", str(config), "--ckpt", str(tmp_path / "nope.ckpt")])
    assert "Checkpoint not found" in capsys.readouterr().err
    no_link = [a for a in eval_args if a not in ("--data.init_args.link_split", "true")]
    with pytest.raises(ValueError, match="link_split: true"):
        main(["evaluate-graph", *no_link])
