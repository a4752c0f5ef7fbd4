"""Learning check for point clouds: a short Point-MAE pretraining on the procedural shapes gives frozen
features that a linear probe trained on few labels (10 clouds per class) and a kNN classify better than the
random-init encoder's.

SYNTHETIC DATA: this proves that the point pipeline learns (data -> device views -> patch tokenizer ->
masked reconstruction -> frozen features -> probes), not a published number; the ModelNet40 / ShapeNet
configs carry the papers' settings for users with the data.

Set-up: ``configs/points/point_mae_modelnet40.yaml`` through the CLI on ``dataset: synthetic`` (6 classes,
128 shapes each: 534 train / 78 validation / 156 test clouds of 256 points), with a small patch transformer (16
patches of 16 points, width 64, depth 4) and 10 epochs. Both encoders are the same initialisation (seed 0).
Measured here (the config's seed 0, 1 thread): 10-label linear probe (mean of 5 label draws) 0.483 -> 0.606,
kNN 0.301 -> 0.660 (chance 1/6 = 0.167); seeds 1 and 2 give +0.10 / +0.12 and +0.26 / +0.42 (README).
The full-label probe (C picked on the validation split) does not reliably improve on these shapes (seeds
0-2: between -0.02 and +0.03): random patch features of simple primitives are already linearly separable with
534 labels; the test prints it and asserts nothing on it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from lightning_ssl.cli import SSLCLI
from lightning_ssl.evaluation import evaluate_point_classification

ROOT = Path(__file__).resolve().parents[2]
MIN_FEW_LABEL_GAIN = 0.05  # accuracy points over the random-init encoder (measured: +0.10 to +0.13)
MIN_KNN_GAIN = 0.10  # measured: +0.26 to +0.42


@pytest.mark.slow
def test_point_mae_beats_random_init_on_synthetic_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])
    torch.set_num_threads(os.cpu_count() or 1)  # conftest restores one thread afterwards
    args = [
        "--config", str(ROOT / "configs" / "points" / "point_mae_modelnet40.yaml"),
        "--data.init_args.dataset", "synthetic", "--data.init_args.root", "null",
        "--data.init_args.num_points", "256", "--data.init_args.batch_size", "32", "--data.init_args.num_workers", "0",
        "--data.init_args.synthetic_samples_per_class", "128",
        "--model.encoder.init_args.num_groups", "16", "--model.encoder.init_args.group_size", "16",
        "--model.encoder.init_args.embed_dim", "64", "--model.encoder.init_args.depth", "4",
        "--model.encoder.init_args.num_heads", "4", "--model.encoder.init_args.drop_path_rate", "0.0",
        "--model.decoder_depth", "2", "--model.decoder_num_heads", "4", "--model.warmup_epochs", "1",
        "--trainer.max_epochs", "10", "--trainer.check_val_every_n_epoch", "10", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
    ]
    cli = SSLCLI(args=args, run=False)
    before = evaluate_point_classification(cli.model, cli.datamodule, labels_per_class=10)
    cli.trainer.fit(cli.model, cli.datamodule)
    after = evaluate_point_classification(cli.model, cli.datamodule, labels_per_class=10)
    msg = (f"10-label linear probe {before['linear_few']['acc']:.3f} -> {after['linear_few']['acc']:.3f}, "
           f"kNN {before['knn']['acc']:.3f} -> {after['knn']['acc']:.3f}, full-label linear probe "
           f"{before['linear']['acc']:.3f} (C {before['linear']['C']}) -> {after['linear']['acc']:.3f} "
           f"(C {after['linear']['C']}), {after['linear']['n_test']} test clouds")
    print(msg)
    assert after["linear_few"]["acc"] >= before["linear_few"]["acc"] + MIN_FEW_LABEL_GAIN, msg
    assert after["knn"]["acc"] >= before["knn"]["acc"] + MIN_KNN_GAIN, msg
    # the monitoring callbacks of the config ran on the clouds
    metrics = cli.trainer.callback_metrics
    assert {"rankme", "probe/val_acc", "knn/val_acc"} <= set(metrics), sorted(metrics)
    assert float(metrics["train/loss"]) < 0.06, float(metrics["train/loss"])  # Chamfer-L2 starts near 0.1 here
