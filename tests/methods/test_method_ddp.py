"""Every method trains with strategy="ddp" on 2 CPU processes (gloo), through the real CLI.

Lightning's "ddp" strategy re-launches the running script for the other rank, so these tests run the CLI
in a subprocess: one job that fits all methods in turn (``ssl_ddp_driver.py``, which calls the CLI entry
point per config) and one plain ``python -m lightning_ssl.cli fit`` with SyncBatchNorm. A callback from
``ssl_ddp_callbacks.py`` (found through PYTHONPATH) makes every rank write its world size, final loss and
parameters; the test checks that both ranks ran and ended with identical weights (student and EMA teacher).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ssl_method_helpers import ENCODER_OUT_DIM, ENCODER_SPEC, IMAGE_METHODS, MEDMNIST_ROOT, MOMENTUM_METHODS, REPO_ROOT, TINY_HEADS, recipe_for

HERE = Path(__file__).resolve().parent
BATCH = 8
STEPS = 2

COMMON_ARGS = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=2",
    "--trainer.strategy=ddp",
    f"--trainer.max_steps={STEPS}",
    "--trainer.limit_val_batches=1",
    "--trainer.logger=false",
    "--trainer.enable_checkpointing=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def write_config(path: Path, name: str, out_dir: Path) -> Path:
    config = {
        "seed_everything": 0,
        "model": {
            "class_path": f"lightning_ssl.methods.{name}",
            "init_args": {"encoder": ENCODER_SPEC, **TINY_HEADS[name], "optimizer": "adamw", "lr": 1e-3},
        },
        "data": {
            "class_path": "lightning_ssl.data.ImageDataModule",
            "init_args": {
                "dataset": "pneumoniamnist",
                "root": str(MEDMNIST_ROOT),
                "num_workers": 0,
                "batch_size": BATCH,
                **recipe_for(name),
            },
        },
        "trainer": {
            "callbacks": [
                {"class_path": "ssl_ddp_callbacks.RankReport", "init_args": {"out_dir": str(out_dir), "tag": name}}
            ]
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED"):
        env.pop(key, None)
    return env


def run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"exit code {proc.returncode}\n--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}"
    )
    return proc


def check_ranks(out_dir: Path, tag: str) -> list[dict]:
    reports = []
    for rank in (0, 1):
        path = out_dir / f"{tag}.rank{rank}.json"
        assert path.is_file(), f"{tag}: rank {rank} wrote no report (files: {sorted(p.name for p in out_dir.iterdir())})"
        reports.append(json.loads(path.read_text()))
    for rank, rep in enumerate(reports):
        assert rep["rank"] == rank
        assert rep["world_size"] == 2 and rep["trainer_world_size"] == 2
        assert rep["strategy"] == "DDPStrategy"
        assert rep["method"] == tag
        assert rep["global_step"] == STEPS
        assert len(rep["step_losses"]) == STEPS
        assert math.isfinite(rep["final_loss"]) and all(math.isfinite(x) for x in rep["step_losses"])
        assert rep["batch_size"] == BATCH and rep["embed_dim"] == ENCODER_OUT_DIM

    t0 = torch.load(out_dir / f"{tag}.rank0.pt", weights_only=True)
    t1 = torch.load(out_dir / f"{tag}.rank1.pt", weights_only=True)
    assert t0.keys() == t1.keys()
    assert any(k.startswith("param/encoder.") for k in t0)
    for key in t0:
        assert torch.equal(t0[key], t1[key]), f"{tag}: {key} differs between the ranks after DDP training"
    if tag in MOMENTUM_METHODS:
        teacher = [k for k in t0 if k.startswith("param/teacher.encoder.")]
        assert teacher, f"{tag}: no teacher parameters reported"
        # the teacher moved away from the student (EMA, not a copy) and is identical on both ranks
        assert any(not torch.equal(t0[k], t0[k.replace("param/teacher.", "param/")]) for k in teacher)
    if tag == "DINO":
        assert "buffer/criterion.center" in t0 and t0["buffer/criterion.center"].abs().sum() > 0
    return reports


@pytest.mark.ddp
def test_every_method_trains_with_ddp_through_the_cli(tmp_path):
    out_dir = tmp_path / "reports"
    configs = [str(write_config(tmp_path / f"{name}.yaml", name, out_dir)) for name in IMAGE_METHODS]
    cmd = [sys.executable, str(HERE / "ssl_ddp_driver.py"), *configs, "--", *COMMON_ARGS,
           f"--trainer.default_root_dir={tmp_path / 'root'}"]
    run(cmd, cwd=tmp_path, timeout=420)
    for name in IMAGE_METHODS:
        reports = check_ranks(out_dir, name)
        assert all(r["plain_batchnorm"] and not r["sync_batchnorm"] for r in reports)
        # the loss is a global-batch loss for the contrastive/redundancy methods: the same value on both ranks
        if name in ("SimCLR", "BarlowTwins", "VICReg", "MoCoV3"):
            assert reports[0]["step_losses"] == pytest.approx(reports[1]["step_losses"], rel=1e-5)


@pytest.mark.ddp
@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="SyncBatchNorm needs 2 GPUs: on CPU, torch's DistributedDataParallel refuses it "
    "(ValueError: SyncBatchNorm layers only work with GPU modules)",
)
def test_cli_ddp_with_sync_batchnorm(tmp_path):
    out_dir = tmp_path / "reports"
    cfg = write_config(tmp_path / "byol.yaml", "BYOL", out_dir)
    args = [a.replace("accelerator=cpu", "accelerator=gpu") for a in COMMON_ARGS]
    cmd = [sys.executable, "-m", "lightning_ssl.cli", "fit", "--config", str(cfg), *args,
           "--trainer.sync_batchnorm=true", f"--trainer.default_root_dir={tmp_path / 'root'}"]
    run(cmd, cwd=tmp_path, timeout=300)
    reports = check_ranks(out_dir, "BYOL")
    for rep in reports:
        assert rep["sync_batchnorm"], "sync_batchnorm=true left no SyncBatchNorm in the model"
        assert not rep["plain_batchnorm"], "some BatchNorm was not converted to SyncBatchNorm"
    # the CLI saved its resolved config where we pointed it, not in the working tree
    assert (tmp_path / "root" / "config.yaml").is_file()


@pytest.mark.ddp
def test_cli_module_entry_point_ddp(tmp_path):
    """``python -m lightning_ssl.cli fit`` itself (Lightning re-launches ``-m lightning_ssl.cli`` for rank 1)."""
    out_dir = tmp_path / "reports"
    cfg = write_config(tmp_path / "byol.yaml", "BYOL", out_dir)
    cmd = [sys.executable, "-m", "lightning_ssl.cli", "fit", "--config", str(cfg), *COMMON_ARGS,
           f"--trainer.default_root_dir={tmp_path / 'root'}"]
    run(cmd, cwd=tmp_path, timeout=300)
    check_ranks(out_dir, "BYOL")
    assert (tmp_path / "root" / "config.yaml").is_file()


def test_sync_batchnorm_flag_converts_every_batchnorm_on_cpu():
    """What can be checked without GPUs: the CLI flag reaches Lightning's layer sync, and that converts
    every BatchNorm of a method (encoder, heads and EMA teacher) to SyncBatchNorm."""
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from lightning_ssl.cli import SSLCLI

    cli = SSLCLI(args=["--model", "BYOL", "--model.encoder", "lightning_ssl.encoders.TimmEncoder",
                       "--model.encoder.name", "test_resnet", "--model.encoder.in_chans", "1",
                       "--data", "ImageDataModule", "--data.dataset", "digits", "--trainer.accelerator", "cpu",
                       "--trainer.strategy", "ddp", "--trainer.devices", "1",
                       "--trainer.sync_batchnorm", "true", "--trainer.logger", "false"], run=False)
    layer_sync = cli.trainer.strategy._layer_sync
    assert isinstance(layer_sync, TorchSyncBatchNorm)
    bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in cli.model.modules())
    assert bn > 0
    converted = layer_sync.apply(cli.model)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules()) == bn
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.teacher.modules())
