#!/usr/bin/env python
"""EEG SSL on the real EEGMMIDB recordings: pretrained vs random-init encoder vs band power (a benchmark, not a test).

Data: ``../shared/data/eegmmidb/S001/S001R03-06.edf`` (subject S001, 64 channels, 160 Hz, 125 s per run),
z-scored per recording and channel, 2 s windows every 0.5 s (``--window-s``, ``--stride-s``), labels from the
per-run map ``label_maps: eegmmidb`` (rest, left fist, right fist, both fists, both feet; runs 3/4 are
left/right fist, runs 5/6 both fists/feet, 3 and 5 real movement, 4 and 6 imagined). Windows that straddle two
events are kept unlabelled (``straddle="unlabel"``): pretraining sees every window, the probes only windows
inside one event.

Protocol, per held-out run (``--folds``, default all four: leave one run out):

1. Pretrain each method in ``--methods`` on every window of the other three runs (no labels), for
   ``--epochs`` epochs (default 10; ``lightning.Trainer``, CPU unless ``--device cuda``), seeds ``--seeds``:
   ``eegformer``: ``EEGFormer`` on ``EEGPatchTransformer`` (patches of 64 samples = 0.4 s, width 64, depth 2,
   4 heads, ``pooling="channel"``: each channel's mean token, 64 x 64 features), 256 codes of width 32, mask
   0.5, signal target, one mild view (amplitude x 0.8-1.2); ``simclr`` / ``vicreg``: ``ShallowConvNetEncoder``
   with the time axis averaged (40 features), two views (amplitude, noise, shift, time mask, channel
   dropout). AdamW lr 1e-3, wd 0.05, 1 warm-up epoch, batch 64.
2. Freeze the encoder; features of the labelled windows. Logistic regression (standardised features, C=1)
   trained on the three training runs, scored on the held-out run, for the tasks of
   ``lightning_ssl.evaluation.eeg.EEGMMIDB_TASKS``: rest vs movement (every run), left vs right fist
   (trained on the other run of runs 3/4 only) and both fists vs feet (runs 5/6). A task is scored only
   in the folds whose held-out run has it.
3. The same probe on the same encoder before pretraining (random init, same seed) and on log band
   power (theta/alpha/beta per channel).

Printed: one Markdown table per fold and task (balanced accuracy, AUROC, windows per class, chance) and a
summary averaged over folds (mean +- std over folds x seeds). Chance balanced accuracy is 0.5 for every task.

Examples::

    OMP_NUM_THREADS=1 python bench/eeg.py --methods eegformer --out eeg.md  # ~15 min on one CPU core
    python bench/eeg.py --quick                                            # one fold, 1 epoch: a smoke run
    python bench/eeg.py --device cuda --epochs 100 --seeds 0,1,2 --out eeg_gpu.md
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402

from bench.machine import describe_machine  # noqa: E402
from lightning_ssl.data import EEGDataModule, EEGView  # noqa: E402
from lightning_ssl.data.eeg_labels import EEGMMIDB_CLASSES  # noqa: E402
from lightning_ssl.encoders.eeg import EEGPatchTransformer, ShallowConvNetEncoder  # noqa: E402
from lightning_ssl.evaluation.eeg import EEGMMIDB_TASKS, evaluate_eeg  # noqa: E402
from lightning_ssl.evaluation.eeg_codes import codebook_report  # noqa: E402
from lightning_ssl.methods import EEGFormer, SimCLR, VICReg  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "eegmmidb" / "S001"
RUNS = ("S001R03", "S001R04", "S001R05", "S001R06")
AUG = EEGView(amplitude_scale=(0.8, 1.2), noise_std=0.1, time_shift_s=0.25, time_mask_s=0.25, channel_dropout=0.1)


def build(method: str, channels: int, samples: int, args: argparse.Namespace) -> tuple[L.LightningModule, list[EEGView]]:
    """A method with its encoder and the training views it needs (small sizes for a CPU budget)."""
    common = dict(optimizer="adamw", lr=args.lr, weight_decay=0.05, warmup_epochs=1)
    if method == "eegformer":
        enc = EEGPatchTransformer(channels, samples, patch_size=args.patch_size, embed_dim=args.width, depth=args.depth,
                                  num_heads=4, pooling=args.pooling)
        return EEGFormer(enc, mask_ratio=0.5, num_codes=args.codes, code_dim=32, target=args.target, **common), [
            EEGView(amplitude_scale=(0.8, 1.2))]
    enc = ShallowConvNetEncoder(channels, samples, pooling="mean")
    cls = {"simclr": SimCLR, "vicreg": VICReg}[method]
    return cls(enc, **common), [AUG, AUG]


def datamodule(held_out: str, views: list[EEGView], args: argparse.Namespace) -> EEGDataModule:
    return EEGDataModule(files=[str(DATA / f"{r}.edf") for r in RUNS], label_maps="eegmmidb", straddle="unlabel",
                         window_s=args.window_s, stride_s=args.stride_s, test_recordings=[held_out], views=views,
                         batch_size=args.batch_size)


def row(name: str, r: dict) -> str:
    if "skipped" in r:
        return f"| {name} | skipped | | {r['train_per_class']} | {r['test_per_class']} | |"
    return (f"| {name} | {r['balanced_acc']:.3f} | {r['auroc']:.3f} | {r['train_per_class']} | {r['test_per_class']} | "
            f"{r['chance']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="eegformer,simclr")
    p.add_argument("--folds", default=",".join(RUNS), help="held-out runs")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--window-s", type=float, default=2.0)
    p.add_argument("--stride-s", type=float, default=0.5)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--codes", type=int, default=256)
    p.add_argument("--target", default="signal")
    p.add_argument("--pooling", default="channel", help="EEGPatchTransformer readout: mean or channel")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="one fold, one epoch, eegformer only")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.methods, args.folds, args.epochs = "eegformer", "S001R06", 1
    methods, folds = args.methods.split(","), args.folds.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = [f"# EEG SSL on EEGMMIDB S001 runs 3-6 ({_dt.date.today()}, torch {torch.__version__})", "",
             describe_machine(torch.device(args.device)), "",
             f"Settings: {vars(args)}", ""]
    summary: dict[tuple[str, str, str], list[float]] = {}
    for held_out in folds:
        results: list[tuple[str, dict]] = []  # (features name, task -> result)
        dm = datamodule(held_out, [AUG], args)
        dm.setup()
        results.append(("band power", evaluate_eeg(None, dm, EEGMMIDB_TASKS, features="band_power")))
        for method in methods:
            for seed in seeds:
                L.seed_everything(seed, verbose=False)
                model, views = build(method, dm.num_channels, dm.num_samples, args)
                dm.views = views
                initial = copy.deepcopy(model.encoder)
                t0 = time.time()
                trainer = L.Trainer(max_epochs=args.epochs, accelerator=args.device, devices=1, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                    limit_val_batches=0, num_sanity_val_steps=0)
                trainer.fit(model, dm)
                minutes = (time.time() - t0) / 60
                metrics = {k: round(float(v), 4) for k, v in trainer.logged_metrics.items() if "codebook" in k or k == "train/loss"}
                print(f"[{held_out}] {method} seed {seed}: {minutes:.1f} min, {metrics}", flush=True)
                results.append((f"{method} random init", evaluate_eeg(initial, dm, EEGMMIDB_TASKS)))
                results.append((f"{method} pretrained", evaluate_eeg(model.cpu(), dm, EEGMMIDB_TASKS)))
                if hasattr(model, "tokenize"):  # EEGFormer's interpretability view on the held-out run
                    codes = codebook_report(model, dm.test_dataloader(), class_names=list(EEGMMIDB_CLASSES))
                    print(f"[{held_out}] codebook on the held-out run: perplexity {codes.perplexity:.1f}, "
                          f"{codes.used_codes}/{codes.num_codes} codes used; top codes per class (code, lift): "
                          f"{codes.top_codes(k=3)}", flush=True)
        n_train, n_test = dm.splits["train"].numel(), dm.splits["test"].numel()
        lines += [f"## Held-out run {held_out} ({n_train} training windows for pretraining, {n_test} test windows)", ""]
        for task in EEGMMIDB_TASKS:
            if all("skipped" in r[task] for _, r in results):
                continue
            lines += [f"**{task}**", "", "| features | balanced acc | AUROC | train windows/class | test windows/class | chance |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for name, r in results:
                lines.append(row(name, r[task]))
                if "skipped" not in r[task]:
                    summary.setdefault((task, name, "bacc"), []).append(r[task]["balanced_acc"])
                    summary.setdefault((task, name, "auroc"), []).append(r[task]["auroc"])
            lines.append("")
        print("\n".join(lines[-40:]), flush=True)
    lines += ["## Summary over folds (mean +- std over held-out runs x seeds)", "",
              "| task | features | balanced acc | AUROC | n |", "| --- | --- | --- | --- | --- |"]
    for (task, name, metric), values in sorted(summary.items()):
        if metric == "bacc":
            auc = summary[(task, name, "auroc")]
            lines.append(f"| {task} | {name} | {np.mean(values):.3f} +- {np.std(values):.3f} | "
                         f"{np.mean(auc):.3f} +- {np.std(auc):.3f} | {len(values)} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
