#!/usr/bin/env python
"""Does label-free checkpoint selection work? RankMe against label-based selection on real data.

The claim under test (Garrido et al. 2023, "RankMe", ICML): within one SSL method, picking the checkpoint
(hyperparameter setting and epoch) with the highest RankMe gives a downstream linear-probe accuracy within
about 1 point of picking it with labels.

What the script does, per dataset (default PneumoniaMNIST and RetinaMNIST, the real MedMNIST v2 files in
``--root``) and per method (default SimCLR and VICReg) and per hyperparameter setting (default: two
temperatures for SimCLR, two learning rates for VICReg):

1. ``lightning.Trainer.fit`` for ``--epochs`` epochs with the library's callbacks
   * ``RankMe()``: default settings (clean validation embeddings, ``num_samples=25,600``, which the small
     validation splits cap at 524 and 120 rows), logged as ``rankme``;
   * ``RankMe(name="rankme_train", source="train", num_samples=<one epoch of training samples>)``: the
     rolling bank of training-step embeddings (augmented first view, BatchNorm in train mode), which has
     more rows than the validation split; the bank is sized to one epoch so that it holds embeddings of
     the current epoch only (see ``--train-bank``);
   * ``OnlineLinearProbe()`` (``probe/val_acc``) and ``OnlineKNN(every_n_epochs=--checkpoint-every)``
     (``knn/val_acc``, clean bank of the labelled training set);
   * ``ModelCheckpoint(every_n_epochs=--checkpoint-every, save_top_k=-1)``: periodic checkpoints.
2. For each periodic checkpoint (and the random initialisation, "epoch 0", which is shown but is not a
   candidate for selection): load it, extract frozen encoder features with
   ``lightning_ssl.evaluation.extract_features`` on ``labelled_train_dataloader()``, ``val_dataloader()``
   and ``test_dataloader()``, and fit ``lightning_ssl.evaluation.linear_probe`` (standardised features,
   scikit-learn logistic regression) on the training split; ``C`` is chosen per checkpoint on the
   validation split from ``--probe-c`` and the test split is scored once with that ``C``.
3. Selection, per dataset and method, over every setting and epoch: the test accuracy of the checkpoint
   with the largest RankMe against that of the checkpoint with the largest offline-probe **validation**
   accuracy (the label-based reference; online-probe and kNN validation accuracy are shown as well),
   the difference in points, the "within 1 point" target, and the oracle (best test accuracy). Spearman
   correlations between RankMe and probe accuracy within each method.

It also checks the callbacks against the checkpoints: ``rankme`` must equal ``rankme()`` of the
checkpoint's validation features, and ``knn/val_acc`` the offline ``knn_classify`` with the same bank.

Run (13-16 minutes on 2 shared CPU cores with the defaults, 2026-11-26; see bench/README.md)::

    python bench/label_free_selection.py --out /tmp/lfs.json

    # a quick smoke run
    python bench/label_free_selection.py --epochs 2 --checkpoint-every 1 --datasets retinamnist \
        --methods simclr --out /tmp/lfs_smoke.csv

Options: ``--epochs``, ``--batch-size``, ``--encoder`` (timm name), ``--small-stem``, ``--methods``,
``--datasets``, ``--grid`` (JSON), ``--checkpoint-every``, ``--probe-c``, ``--out`` (``.json`` or
``.csv``), ``--workdir`` (checkpoints), ``--max-minutes`` (a hint: warns when the run is projected to
take longer), ``--threads``, ``--num-workers``, ``--seed``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import logging
import math
import platform
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from lightning_ssl.callbacks import OnlineKNN, OnlineLinearProbe, RankMe, rankme  # noqa: E402
from lightning_ssl.data.image import ImageDataModule  # noqa: E402
from lightning_ssl.encoders.image import TimmEncoder  # noqa: E402
from lightning_ssl.evaluation import extract_features, knn_classify, linear_probe  # noqa: E402
from lightning_ssl.methods import METHODS  # noqa: E402
from machine import describe_machine  # bench/machine.py (this folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
TARGET_POINTS = 1.0

# Hyperparameter grids (the settings being selected among). Common settings are in method_kwargs().
DEFAULT_GRID: dict[str, list[dict[str, Any]]] = {
    "SimCLR": [{"temperature": 0.1}, {"temperature": 0.5}],
    "VICReg": [{"lr": 3e-4}, {"lr": 3e-3}],
    "BYOL": [{"lr": 3e-4}, {"lr": 3e-3}],
    "BarlowTwins": [{"lr": 3e-4}, {"lr": 3e-3}],
    "SimSiam": [{"lr": 3e-4}, {"lr": 3e-3}],
    "MoCoV3": [{"temperature": 0.1}, {"temperature": 0.5}],
}
# view recipe per method, as in configs/image/<method>_pneumoniamnist.yaml
RECIPES = {"SimCLR": "simclr", "MoCoV3": "simclr", "SimSiam": "simclr", "VICReg": "byol", "BYOL": "byol",
           "BarlowTwins": "byol"}


def method_kwargs(method: str, proj_dim: int) -> dict[str, Any]:
    """Settings shared by every run of a method (AdamW as in the configs; projector narrowed for CPU)."""
    common: dict[str, Any] = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_epochs": 1.0}
    heads = {
        "SimCLR": {"proj_hidden_dim": proj_dim, "proj_out_dim": 128},
        "MoCoV3": {"proj_hidden_dim": proj_dim, "proj_out_dim": 128, "pred_hidden_dim": proj_dim},
        "VICReg": {"proj_hidden_dim": proj_dim, "proj_out_dim": proj_dim},
        "BarlowTwins": {"proj_hidden_dim": proj_dim, "proj_out_dim": proj_dim},
        "BYOL": {"proj_hidden_dim": proj_dim, "proj_out_dim": 128, "pred_hidden_dim": proj_dim},
        "SimSiam": {"proj_hidden_dim": proj_dim, "proj_out_dim": proj_dim},
    }
    return {**common, **heads.get(method, {})}


# ----------------------------------------------------------------------------------------- records
@dataclass
class Row:
    dataset: str
    method: str
    setting: str
    epoch: int  # completed training epochs; 0 = random initialisation
    rankme: float | None  # callback, validation source (or rankme() of the val features at epoch 0)
    rankme_train: float | None  # callback, training-embedding bank
    probe_val_acc: float | None  # OnlineLinearProbe
    knn_val_acc: float | None  # OnlineKNN (epoch 0: offline knn_classify, same protocol)
    lin_val_acc: float = math.nan  # offline linear probe, validation split (selection with labels)
    lin_test_acc: float = math.nan  # offline linear probe, test split
    lin_test_bacc: float = math.nan
    lin_c: float = math.nan
    check_rankme: float = math.nan  # rankme() of the checkpoint's validation features
    check_knn: float = math.nan  # knn_classify of the checkpoint's features
    checkpoint: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def candidate(self) -> bool:
        return self.epoch > 0


class EpochRecorder(L.Callback):
    """Keeps the epoch-level metrics the monitoring callbacks logged (read after validation)."""

    KEYS = ("rankme", "rankme_train", "probe/val_acc", "knn/val_acc", "probe/val_balanced_acc", "train/loss")

    def __init__(self) -> None:
        self.metrics: dict[int, dict[str, float]] = {}
        self.epoch_seconds: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # in Lightning 2.x the end-of-epoch validation has run (and its metrics are in callback_metrics)
        m = trainer.callback_metrics
        self.metrics[trainer.current_epoch] = {k: float(m[k]) for k in self.KEYS if k in m}
        self.epoch_seconds.append(time.perf_counter() - self._t0)


# ------------------------------------------------------------------------------------------- helpers
def build_model(method: str, encoder_name: str, in_chans: int, small_stem: bool, kwargs: dict[str, Any]):
    encoder = TimmEncoder(encoder_name, in_chans=in_chans, small_stem=small_stem)
    return METHODS[method](encoder, **kwargs)


def setting_name(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items()) or "default"


@torch.no_grad()
def eval_device(args: argparse.Namespace) -> torch.device:
    """Where checkpoints are evaluated: the training accelerator (features), sklearn on the CPU."""
    return torch.device("cuda" if args.accelerator == "gpu" else "cpu")


def offline_eval(model: torch.nn.Module, dm: ImageDataModule, cs: list[float]) -> dict[str, float]:
    """Frozen features of train/val/test; logistic-regression probe with C picked on val; checks."""
    tr_x, tr_y = extract_features(model, dm.labelled_train_dataloader())
    va_x, va_y = extract_features(model, dm.val_dataloader())
    te_x, te_y = extract_features(model, dm.test_dataloader())
    best_c, best_val = cs[0], -1.0
    for c in cs:
        acc = linear_probe(tr_x, tr_y, va_x, va_y, C=c)["acc"]
        if acc > best_val:  # ties keep the smaller C (stronger regularisation)
            best_c, best_val = c, acc
    test = linear_probe(tr_x, tr_y, te_x, te_y, C=best_c)
    return {
        "lin_val_acc": best_val,
        "lin_test_acc": test["acc"],
        "lin_test_bacc": test["balanced_acc"],
        "lin_c": best_c,
        "check_rankme": float(rankme(va_x)),
        "check_knn": knn_classify(tr_x, tr_y, va_x, va_y, k=20, temperature=0.07)["acc"],
        "n_train": tr_x.shape[0],
        "n_val": va_x.shape[0],
        "n_test": te_x.shape[0],
        "dim": tr_x.shape[1],
    }


def spearman(x: list[float], y: list[float]) -> tuple[float, float]:
    """Spearman rho and two-sided p-value (scipy), nan when undefined."""
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return math.nan, math.nan
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    return float(res.statistic), float(res.pvalue)


def fmt(v: float | None, spec: str = ".1f", scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v * scale, spec)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.rjust(w) if c[:1].isdigit() or c[:1] in "+-" else c.ljust(w)
                                     for c, w in zip(r, widths)) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- run
def machine() -> str:
    return describe_machine(torch.device("cuda") if torch.cuda.is_available() else None)


def run_one(args: argparse.Namespace, dataset: str, method: str, setting: dict[str, Any],
            workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    L.seed_everything(args.seed, workers=True, verbose=False)
    dm = ImageDataModule(
        dataset, root=args.root, recipe=RECIPES.get(method, "simclr"), device_augmentation=True,
        batch_size=args.batch_size, eval_batch_size=512, num_workers=args.num_workers, seed=args.seed,
        drop_last=True, pin_memory=False,
    )
    dm.setup("fit")
    kwargs = {**method_kwargs(method, args.proj_dim), **setting}
    model = build_model(method, args.encoder, int(dm.num_channels or 3), args.small_stem, kwargs)
    steps_per_epoch = len(dm.train_set) // args.batch_size
    train_bank = args.batch_size * steps_per_epoch if args.train_bank == "epoch" else 25_600
    ckdir = workdir / f"{dataset}-{method}-{setting_name(setting)}".replace("=", "").replace(",", "_")
    shutil.rmtree(ckdir, ignore_errors=True)
    recorder = EpochRecorder()
    callbacks = [
        RankMe(),
        RankMe(name="rankme_train", source="train", num_samples=train_bank),
        OnlineLinearProbe(),
        OnlineKNN(every_n_epochs=args.checkpoint_every),
        ModelCheckpoint(dirpath=ckdir, filename="{epoch}", every_n_epochs=args.checkpoint_every,
                        save_top_k=-1, monitor=None, save_last=False, enable_version_counter=False),
        recorder,
    ]
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=1, max_epochs=args.epochs, logger=False, callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=str(workdir), deterministic=False,
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - t0

    rows: list[Row] = []
    t1 = time.perf_counter()
    name = setting_name(setting)
    for path in sorted(ckdir.glob("*.ckpt"), key=lambda p: int(p.stem.split("=")[-1])):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        index = int(ckpt["epoch"])
        eval_model = build_model(method, args.encoder, int(dm.num_channels or 3), args.small_stem, kwargs)
        eval_model.load_state_dict(ckpt["state_dict"])
        eval_model.to(eval_device(args))
        logged = recorder.metrics.get(index, {})
        row = Row(dataset, method, name, index + 1, logged.get("rankme"), logged.get("rankme_train"),
                  logged.get("probe/val_acc"), logged.get("knn/val_acc"), checkpoint=str(path))
        ev = offline_eval(eval_model, dm, args.probe_c)
        for k in ("lin_val_acc", "lin_test_acc", "lin_test_bacc", "lin_c", "check_rankme", "check_knn"):
            setattr(row, k, ev[k])
        row.extra = {"train_loss": logged.get("train/loss", math.nan), "dim": ev["dim"]}
        rows.append(row)
        print(f"    epoch {row.epoch:3d}: rankme {fmt(row.rankme, '.2f')} (train bank {fmt(row.rankme_train, '.2f')}), "
              f"probe {fmt(row.probe_val_acc, '.1f', 100)}, knn {fmt(row.knn_val_acc, '.1f', 100)}, "
              f"linear val {fmt(row.lin_val_acc, '.1f', 100)} test {fmt(row.lin_test_acc, '.1f', 100)} "
              f"(C={row.lin_c:g})", flush=True)
    info = {
        "fit_s": fit_s, "eval_s": time.perf_counter() - t1, "epoch_s": recorder.epoch_seconds,
        "steps_per_epoch": steps_per_epoch, "train_bank": train_bank,
        "n_train": len(dm.train_set), "n_val": len(dm.val_set), "n_test": len(dm.test_set),
        "per_epoch": recorder.metrics,
    }
    if not args.keep_checkpoints:
        shutil.rmtree(ckdir, ignore_errors=True)
    return rows, info


def init_row(args: argparse.Namespace, dataset: str, method: str) -> Row:
    """The random initialisation (same seed, so the same encoder weights as every run of the dataset)."""
    L.seed_everything(args.seed, workers=True, verbose=False)
    dm = ImageDataModule(dataset, root=args.root, device_augmentation=True, batch_size=args.batch_size,
                         eval_batch_size=512, num_workers=args.num_workers, seed=args.seed, pin_memory=False)
    dm.setup("fit")
    setting = (args.grid.get(method) or [{}])[0]
    model = build_model(method, args.encoder, int(dm.num_channels or 3), args.small_stem,
                        {**method_kwargs(method, args.proj_dim), **setting})
    ev = offline_eval(model.to(eval_device(args)), dm, args.probe_c)
    row = Row(dataset, "(random init)", "-", 0, ev["check_rankme"], None, None, ev["check_knn"])
    for k in ("lin_val_acc", "lin_test_acc", "lin_test_bacc", "lin_c", "check_rankme", "check_knn"):
        setattr(row, k, ev[k])
    row.extra = {"dim": ev["dim"]}
    return row


# ------------------------------------------------------------------------------------------ report
def pick(rows: list[Row], key: str) -> tuple[Row | None, int]:
    """The first row (in run order: setting, then epoch) with the largest ``key``, and the tie count."""
    vals = [(getattr(r, key), r) for r in rows if getattr(r, key) is not None and math.isfinite(getattr(r, key))]
    if not vals:
        return None, 0
    best = max(v for v, _ in vals)
    tied = [r for v, r in vals if v == best]
    return tied[0], len(tied)


SELECTORS = [
    ("RankMe (val, callback default)", "rankme"),
    ("RankMe (train-embedding bank)", "rankme_train"),
    ("labels: offline probe val acc [reference]", "lin_val_acc"),
    ("labels: online probe val acc", "probe_val_acc"),
    ("labels: kNN val acc", "knn_val_acc"),
    ("oracle: best test acc", "lin_test_acc"),
]


def report(rows: list[Row], args: argparse.Namespace, infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    print("\n## Per checkpoint\n")
    print("Accuracies in %. rankme: RankMe callback, validation embeddings (default); rankme_train: RankMe callback "
          "on the bank of training-step embeddings; probe/knn: OnlineLinearProbe / OnlineKNN val acc; linear "
          "val/test: offline logistic-regression probe on frozen features (C chosen on val). Epoch 0 = random "
          "init (not a selection candidate; its kNN is the offline knn_classify, its rankme is rankme() of the "
          "val features).\n")
    header = ["dataset", "method", "setting", "epoch", "rankme", "rankme_train", "probe val", "kNN val",
              "linear val", "linear test"]
    body = [[r.dataset, r.method, r.setting, str(r.epoch), fmt(r.rankme, ".2f"), fmt(r.rankme_train, ".2f"),
             fmt(r.probe_val_acc, ".1f", 100), fmt(r.knn_val_acc, ".1f", 100), fmt(r.lin_val_acc, ".1f", 100),
             fmt(r.lin_test_acc, ".1f", 100)] for r in rows]
    print(md_table(header, body))

    summary: list[dict[str, Any]] = []
    print("\n## Selection within each method (over all its settings and checkpoints; random init excluded)\n")
    print(f"Reference = the checkpoint with the highest offline linear-probe VALIDATION accuracy. delta = test acc "
          f"of the selector's checkpoint minus the reference's, in points. Target: RankMe within {TARGET_POINTS:g} "
          "point of the reference (|delta| <= 1 or better). Ties: the first checkpoint in run order is taken; "
          "'ties' counts the checkpoints sharing the maximum.\n")
    header = ["dataset", "method", "selector", "picks (setting @ epoch)", "ties", "test acc", "delta", "within 1 pt"]
    body = []
    for ds in dict.fromkeys(r.dataset for r in rows):
        for m in dict.fromkeys(r.method for r in rows if r.dataset == ds and r.candidate):
            cand = [r for r in rows if r.dataset == ds and r.method == m and r.candidate]
            ref, _ = pick(cand, "lin_val_acc")
            for label, key in SELECTORS:
                sel, ties = pick(cand, key)
                if sel is None:
                    continue
                delta = 100 * (sel.lin_test_acc - ref.lin_test_acc) if ref is not None else math.nan
                verdict = ""
                if key.startswith("rankme"):
                    verdict = "met" if delta >= -TARGET_POINTS else "NOT met"
                body.append([ds, m, label, f"{sel.setting} @ {sel.epoch}", str(ties), fmt(sel.lin_test_acc, ".1f", 100),
                             "" if key == "lin_val_acc" else f"{delta:+.1f}", verdict])
                summary.append({"dataset": ds, "method": m, "selector": key, "setting": sel.setting,
                                "epoch": sel.epoch, "ties": ties, "test_acc": sel.lin_test_acc, "delta_points": delta,
                                "within_1pt": verdict or None})
    print(md_table(header, body))

    print("\n## Spearman rank correlation within each method (checkpoints of all settings; random init excluded)\n")
    header = ["dataset", "method", "n", "rankme vs linear test", "rankme vs linear val", "rankme vs kNN val",
              "rankme_train vs linear test", "rankme vs rankme_train"]
    body = []
    corr: list[dict[str, Any]] = []
    for ds in dict.fromkeys(r.dataset for r in rows):
        for m in dict.fromkeys(r.method for r in rows if r.dataset == ds and r.candidate):
            cand = [r for r in rows if r.dataset == ds and r.method == m and r.candidate]
            pairs = {
                "rankme~lin_test": spearman([r.rankme for r in cand], [r.lin_test_acc for r in cand]),
                "rankme~lin_val": spearman([r.rankme for r in cand], [r.lin_val_acc for r in cand]),
                "rankme~knn_val": spearman([r.rankme for r in cand], [r.knn_val_acc for r in cand]),
                "rankme_train~lin_test": spearman([r.rankme_train for r in cand], [r.lin_test_acc for r in cand]),
                "rankme~rankme_train": spearman([r.rankme for r in cand], [r.rankme_train for r in cand]),
            }
            body.append([ds, m, str(len(cand))] + [f"{rho:+.2f} (p={p:.2g})" if math.isfinite(rho) else "-"
                                                  for rho, p in pairs.values()])
            corr.append({"dataset": ds, "method": m, "n": len(cand),
                         **{k: {"rho": v[0], "p": v[1]} for k, v in pairs.items()}})
    print(md_table(header, body))

    # callback checks: the logged values against the checkpoints' features
    print("\n## Callback checks (logged value vs recomputed from the checkpoint)\n")
    dr = [abs(r.rankme - r.check_rankme) / max(r.check_rankme, 1e-12) for r in rows if r.candidate and r.rankme is not None]
    dk = [abs(r.knn_val_acc - r.check_knn) for r in rows if r.candidate and r.knn_val_acc is not None]
    if dr:
        print(f"rankme (callback, val) vs rankme(val features of the checkpoint): max relative difference {max(dr):.2e} "
              f"over {len(dr)} checkpoints")
    if dk:
        print(f"knn/val_acc (callback) vs knn_classify(checkpoint features): max difference {100 * max(dk):.2f} points "
              f"over {len(dk)} checkpoints")
    return {"selection": summary, "spearman": corr, "rankme_rel_diff_max": max(dr) if dr else None,
            "knn_diff_max": max(dk) if dk else None}


def write_out(path: Path, rows: list[Row], summary: dict[str, Any], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        fields = [f for f in asdict(rows[0]) if f != "extra"]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for r in rows:
                d = asdict(r)
                d.pop("extra")
                w.writerow(d)
        with open(path.with_suffix(".summary.json"), "w") as f:
            json.dump({"meta": meta, **summary}, f, indent=1, default=str)
    else:
        with open(path, "w") as f:
            json.dump({"meta": meta, "rows": [asdict(r) for r in rows], **summary}, f, indent=1, default=str)
    print(f"\nresults written to {path}")


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "medmnist"),
                   help="folder holding <flag>.npz")
    p.add_argument("--datasets", default="pneumoniamnist,retinamnist", help="comma-separated MedMNIST flags")
    p.add_argument("--methods", default="SimCLR,VICReg", help=f"comma-separated, from {sorted(METHODS)}")
    p.add_argument("--grid", default=None,
                   help='JSON {method: [setting, ...]} replacing the default grid, e.g. \'{"SimCLR": '
                        '[{"temperature": 0.2}]}\'; default: ' + json.dumps({k: DEFAULT_GRID[k] for k in ("SimCLR", "VICReg")}))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=2, help="ModelCheckpoint(every_n_epochs=...)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--encoder", default="test_resnet",
                   help="timm model name (test_resnet: timm's 0.37 M-parameter ResNet, 96-d output; resnet18 is "
                        "about 10x slower per step on 2 CPU cores)")
    p.add_argument("--small-stem", action=argparse.BooleanOptionalAction, default=False,
                   help="3x3 stride-1 stem without max-pool (about 4x the compute at 28 px)")
    p.add_argument("--proj-dim", type=int, default=1024, help="projector hidden (and VICReg output) width")
    p.add_argument("--train-bank", choices=("epoch", "paper"), default="epoch",
                   help="rankme_train bank size: one epoch of training samples (embeddings of the current "
                        "epoch only) or the paper's 25,600 (spans several epochs of older weights here)")
    p.add_argument("--probe-c", default="0.01,0.1,1.0", help="offline probe C grid (picked on val)")
    p.add_argument("--out", default=None, help="results file: .json (everything) or .csv (+ .summary.json)")
    p.add_argument("--workdir", default="/tmp/lightning_ssl_label_free_selection", help="checkpoints go here")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--max-minutes", type=float, default=30.0,
                   help="hint: after the first run, warn if the projected total exceeds it (nothing is cut)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads; on the shared 2-core machine 1 thread ran a step 1.6-3.7 ms/img "
                        "against 1.2-25 ms/img with 2 (OpenMP threads stall when the other core is busy)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu",
                   help="Lightning accelerator for pretraining and feature extraction (the probe fits on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="keep Lightning's info messages and warnings")
    args = p.parse_args(argv)
    names = {k.lower(): k for k in METHODS}
    methods = []
    for m in args.methods.split(","):
        if m.strip().lower() not in names:
            p.error(f"unknown method {m!r}; valid: {sorted(METHODS)}")
        methods.append(names[m.strip().lower()])
    args.methods = methods
    args.datasets = [d.strip().lower() for d in args.datasets.split(",") if d.strip()]
    grid = dict(DEFAULT_GRID)
    if args.grid:
        grid.update({names.get(k.lower(), k): v for k, v in json.loads(args.grid).items()})
    args.grid = grid
    for m in args.methods:
        if m not in grid:
            p.error(f"no hyperparameter grid for {m}; pass --grid '{{\"{m}\": [{{...}}]}}'")
    args.probe_c = [float(c) for c in args.probe_c.split(",")]
    if args.epochs < 1 or args.checkpoint_every < 1:
        p.error("--epochs and --checkpoint-every must be >= 1")
    if args.epochs % args.checkpoint_every:
        print(f"note: --epochs {args.epochs} is not a multiple of --checkpoint-every {args.checkpoint_every}; "
              "the last epochs get no checkpoint", file=sys.stderr)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.verbose:
        warnings.filterwarnings("ignore")
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    n_runs = len(args.datasets) * sum(len(args.grid[m]) for m in args.methods)
    print(f"# lightning_ssl: label-free checkpoint selection ({_dt.datetime.now():%Y-%m-%d %H:%M})")
    print(f"machine  : {machine()}")
    print(f"software : python {platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}")
    print(f"command  : python {' '.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}")
    print(f"runs     : {n_runs} = datasets {args.datasets} x settings "
          + "; ".join(f"{m}: {[setting_name(s) for s in args.grid[m]]}" for m in args.methods))
    print(f"training : {args.epochs} epochs, batch {args.batch_size}, TimmEncoder({args.encoder!r}, small_stem="
          f"{args.small_stem}), AdamW (lr 1e-3 unless set, wd 1e-4, 1 warm-up epoch, cosine), projector width "
          f"{args.proj_dim}, device augmentation (views made batched on the CPU), seed {args.seed}")
    print(f"monitor  : RankMe() [val], RankMe(name='rankme_train', source='train', bank={args.train_bank}), "
          f"OnlineLinearProbe(), OnlineKNN(every_n_epochs={args.checkpoint_every}), "
          f"ModelCheckpoint(every_n_epochs={args.checkpoint_every}, save_top_k=-1)")
    print(f"offline  : extract_features + linear_probe (StandardScaler + LogisticRegression), C in {args.probe_c} "
          "chosen on val, test scored once")
    print(flush=True)

    rows: list[Row] = []
    infos: dict[str, dict[str, Any]] = {}
    done = 0
    for ds in args.datasets:
        init = init_row(args, ds, args.methods[0])
        rows.append(init)
        dim = int(init.extra["dim"])
        dm = ImageDataModule(ds, root=args.root)
        dm.setup("fit")
        n_val = len(dm.val_set)
        print(f"## {ds}: train {len(dm.train_set)}, val {n_val}, test {len(dm.test_set)}, {dm.num_classes} classes; "
              f"embedding dim K = {dim}")
        bank_n = args.batch_size * (len(dm.train_set) // args.batch_size)
        print(f"   RankMe (train bank) uses N = {bank_n if args.train_bank == 'epoch' else 25_600} training-step "
              f"embeddings ({'one epoch' if args.train_bank == 'epoch' else 'the paper' + chr(39) + 's 25,600'}).")
        print(f"   RankMe (val) uses N = min(25,600, {n_val}) = {min(25_600, n_val)} validation rows "
              f"({'fewer than K: RankMe is capped at N and biased down' if n_val < dim else f'>= K={dim}, but far below the paper' + chr(39) + 's 25,600'}).")
        print(f"   random init: rankme {init.rankme:.2f}, kNN val {100 * init.knn_val_acc:.1f}, linear val "
              f"{100 * init.lin_val_acc:.1f} test {100 * init.lin_test_acc:.1f}", flush=True)
        for m in args.methods:
            for s in args.grid[m]:
                t = time.perf_counter()
                print(f"-- {ds} {m} {setting_name(s)}", flush=True)
                r, info = run_one(args, ds, m, s, workdir)
                rows.extend(r)
                infos[f"{ds}/{m}/{setting_name(s)}"] = info
                done += 1
                el = (time.perf_counter() - start) / 60
                print(f"   fit {info['fit_s']:.0f} s ({args.epochs} epochs, median epoch "
                      f"{sorted(info['epoch_s'])[len(info['epoch_s']) // 2]:.1f} s), offline eval "
                      f"{info['eval_s']:.0f} s; {el:.1f} min elapsed, run {done}/{n_runs}", flush=True)
                if done == 1 and n_runs > 1:
                    # rough: later datasets may be smaller or larger
                    projected = el * n_runs
                    if projected > args.max_minutes:
                        print(f"   warning: the first run projects to about {projected:.0f} min in all (> --max-minutes "
                              f"{args.max_minutes:g}); lower --epochs or use a smaller --encoder", flush=True)

    summary = report(rows, args, infos)
    wall = time.perf_counter() - start
    print(f"\nwall time: {wall / 60:.1f} min ({machine()})")
    if args.out:
        meta = {"args": {k: v for k, v in vars(args).items()}, "wall_s": wall, "machine": machine(),
                "torch": torch.__version__, "lightning": L.__version__, "runs": infos}
        write_out(Path(args.out), rows, summary, meta)


if __name__ == "__main__":
    main()
