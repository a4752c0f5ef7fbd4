"""MedMNIST evaluation protocol: SSL pretraining vs random init vs supervised, at 1/10/100% labels.

For each pretraining dataset (PneumoniaMNIST, BreastMNIST, RetinaMNIST from ``../shared/data/medmnist``)
and each method (Barlow Twins, Mixed Barlow Twins, SimCLR, BYOL by default), pretrain a small encoder
for a fixed number of optimizer steps without labels, then on frozen features:

- **linear probe** at class-stratified label fractions (1%, 10%, 100% of the official training split,
  seeds 0/1/2; :func:`~lightning_ssl.evaluation.linear_probe_fractions`), scored on the official test
  split: accuracy and AUROC as mean +- std over seeds;
- **transfer**: linear probe (100% labels) on each *other* dataset, through the pretraining's evaluation
  transform (:func:`~lightning_ssl.evaluation.pretraining_eval_datamodule`);
- **OOD**: kNN-distance OOD AUROC (Sun et al. 2022, k=50) of each other dataset's test split against the
  pretraining dataset's test split (:func:`~lightning_ssl.evaluation.knn_ood_auroc`).

Baselines on the same splits: the same encoder at random initialisation (same seed), and a **supervised**
encoder + linear head trained end to end with cross-entropy on the same labelled subset (its own head
scores the test split; its 100%-label seed-0 encoder also gives the transfer and OOD rows).

Encoder: timm ResNet-18 at half width (channels 32/64/128/256, 2.8M parameters, standard stride-2 stem,
out_dim 256), 3 input channels (gray images repeated), 28 px, mean/std 0.5. Views: SimCLR recipe on the
device, crop scale (0.3, 1). Run::

    python bench/medmnist_protocol.py                     # full study (time per run printed)
    python bench/medmnist_protocol.py --datasets breastmnist --methods SimCLR --steps 20 --quick

Every run is on the CPU unless ``--device cuda``; ``--encoder resnet18`` gives the full-width ResNet-18
for the GPU study. Results go to stdout and, with ``--out``, to a Markdown file and a JSON file.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.data import ImageDataModule
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.evaluation import (
    knn_ood_auroc,
    linear_probe,
    linear_probe_fractions,
    pretraining_eval_datamodule,
    stratified_subset,
)
from lightning_ssl.methods import BYOL, BarlowTwins, MixedBarlowTwins, SimCLR

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"
DATASETS = ("pneumoniamnist", "breastmnist", "retinamnist")
METHODS = ("BarlowTwins", "MixedBarlowTwins", "SimCLR", "BYOL")
BT_LAMBDA = 1.0 / 128  # Mixed Barlow Twins' CIFAR value (projector 1024); used for plain Barlow Twins too


def make_encoder(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {"zero_init_last": False}
    if kind == "resnet18-half":
        kwargs["channels"] = (32, 64, 128, 256)
        return TimmEncoder("resnet18", in_chans=3, model_kwargs=kwargs)
    return TimmEncoder(kind, in_chans=3, model_kwargs=kwargs)


def make_method(name: str, encoder: nn.Module, lr: float, warmup_epochs: float) -> L.LightningModule:
    common = dict(optimizer="adamw", lr=lr, weight_decay=1e-4, warmup_epochs=warmup_epochs)
    if name == "BarlowTwins":
        return BarlowTwins(encoder, proj_hidden_dim=1024, proj_out_dim=1024, lambda_offdiag=BT_LAMBDA, **common)
    if name == "MixedBarlowTwins":
        return MixedBarlowTwins(encoder, proj_hidden_dim=1024, proj_out_dim=1024, lambda_offdiag=BT_LAMBDA,
                                lambda_reg=4.0, **common)
    if name == "SimCLR":
        return SimCLR(encoder, proj_hidden_dim=1024, proj_out_dim=128, temperature=0.5, **common)
    if name == "BYOL":
        return BYOL(encoder, proj_hidden_dim=1024, proj_out_dim=256, pred_hidden_dim=1024, tau_base=0.99, **common)
    raise ValueError(f"Unknown method {name!r}; choose from {METHODS}.")


def datamodule(name: str, root: Path, batch_size: int) -> ImageDataModule:
    return ImageDataModule(
        name, root=str(root), batch_size=batch_size, eval_batch_size=512, num_workers=0, device_augmentation=True,
        channels=3, image_size=28, mean=(0.5,) * 3, std=(0.5,) * 3, view_overrides={"scale": [0.3, 1.0]},
        pin_memory=False,
    )


def stack(loader: Any) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for batch in loader:
        xs.append(batch.views[0])
        ys.append(batch.target.view(-1))
    return torch.cat(xs), torch.cat(ys).long()


@torch.no_grad()
def embed(encoder: nn.Module, images: Tensor, device: str, batch: int = 512) -> Tensor:
    was = encoder.training
    encoder.eval()
    out = torch.cat([encoder(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])
    encoder.train(was)
    return out


class EvalData:
    """Clean train/test tensors of every dataset, made with the pretraining's evaluation transform."""

    def __init__(self, pretrain_dm: ImageDataModule, root: Path) -> None:
        self.pretrain_dm, self.root, self.cache = pretrain_dm, root, {}

    def get(self, name: str) -> dict[str, tuple[Tensor, Tensor]]:
        if name not in self.cache:
            dm = pretraining_eval_datamodule(self.pretrain_dm, name, str(self.root), num_workers=0)
            dm.setup("fit")
            dm.setup("test")
            self.cache[name] = {"train": stack(dm.labelled_train_dataloader()), "test": stack(dm.test_dataloader())}
        return self.cache[name]


def supervised(kind: str, x: Tensor, y: Tensor, num_classes: int, steps: int, seed: int, device: str,
               lr: float) -> tuple[nn.Module, nn.Module]:
    """Encoder + linear head trained with cross-entropy (AdamW, cosine, random flips and shifts)."""
    encoder = make_encoder(kind, seed).to(device)
    head = nn.Linear(encoder.out_dim, num_classes).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    batch = min(128, len(x))
    encoder.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        xb = x[idx].to(device)
        flip = torch.rand(batch, generator=gen) < 0.5
        xb = torch.where(flip.to(device)[:, None, None, None], xb.flip(-1), xb)
        shift = torch.randint(-3, 4, (2,), generator=gen).tolist()
        xb = torch.roll(xb, shifts=shift, dims=(-2, -1))
        loss = F.cross_entropy(head(encoder(xb)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return encoder, head


@torch.no_grad()
def head_scores(encoder: nn.Module, head: nn.Module, x: Tensor, y: Tensor, device: str) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    proba = torch.softmax(head(embed(encoder, x, device).to(device)), -1).cpu().numpy()
    yy = y.numpy()
    acc = float((proba.argmax(1) == yy).mean())
    if proba.shape[1] == 2:
        auroc = float(roc_auc_score(yy, proba[:, 1]))
    else:
        auroc = float(roc_auc_score(yy, proba, multi_class="ovr", average="macro", labels=list(range(proba.shape[1]))))
    return {"acc": acc, "auroc": auroc}


def probe_rows(model: str, feats: dict[str, dict[str, Tensor]], data: EvalData, name: str, others: list[str],
               fractions: list[float], seeds: list[int]) -> dict[str, Any]:
    """Linear probe at every fraction (in-domain), transfer (100%) and OOD against each other dataset."""
    f = feats[name]
    tr_y, te_y = data.get(name)["train"][1], data.get(name)["test"][1]
    res: dict[str, Any] = {"model": model, "linear": {}, "transfer": {}, "ood": {}}
    for frac, r in linear_probe_fractions(f["train"], tr_y, f["test"], te_y, fractions=fractions, seeds=seeds).items():
        res["linear"][str(frac)] = {k: r[k] for k in ("acc_mean", "acc_std", "auroc_mean", "auroc_std", "n_train")}
    for other in others:
        g = feats[other]
        t = linear_probe(g["train"], data.get(other)["train"][1], g["test"], data.get(other)["test"][1])
        res["transfer"][other] = {"acc": t["acc"], "auroc": t["auroc"]}
        res["ood"][other] = knn_ood_auroc(f["train"], f["test"], g["test"], k=50)["auroc"]
    return res


def run_dataset(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    device = args.device
    dm = datamodule(name, args.root, args.batch_size)
    dm.setup("fit")
    steps_per_epoch = max(1, len(dm.train_set) // args.batch_size)
    warmup_epochs = 0.1 * args.steps / steps_per_epoch
    data = EvalData(dm, args.root)
    others = [d for d in DATASETS if d != name]
    names = [name, *others]
    num_classes = int(data.get(name)["train"][1].max()) + 1
    results = []

    def features(encoder: nn.Module) -> dict[str, dict[str, Tensor]]:
        return {d: {s: embed(encoder, data.get(d)[s][0], device) for s in ("train", "test")} for d in names}

    t0 = time.time()
    random_init = make_encoder(args.encoder, args.seed).to(device)
    results.append(probe_rows("random init", features(random_init), data, name, others, args.fractions, args.seeds))
    print(f"[{name}] random init evaluated in {time.time() - t0:.0f} s", flush=True)

    for method_name in args.methods:
        t0 = time.time()
        L.seed_everything(args.seed, verbose=False)
        encoder = make_encoder(args.encoder, args.seed)
        method = make_method(method_name, encoder, args.lr, warmup_epochs)
        trainer = L.Trainer(max_steps=args.steps, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, precision=args.precision)
        trainer.fit(method, datamodule(name, args.root, args.batch_size))
        pretrain_s = time.time() - t0
        row = probe_rows(method_name, features(method.encoder.to(device)), data, name, others, args.fractions, args.seeds)
        row["pretrain_s"] = pretrain_s
        results.append(row)
        print(f"[{name}] {method_name}: {args.steps} steps in {pretrain_s:.0f} s, evaluated in "
              f"{time.time() - t0 - pretrain_s:.0f} s", flush=True)

    # Supervised baseline: same encoder, same labelled subsets, trained end to end.
    t0 = time.time()
    x, y = data.get(name)["train"]
    xt, yt = data.get(name)["test"]
    sup: dict[str, Any] = {"model": "supervised", "linear": {}, "transfer": {}, "ood": {}}
    full_encoder = None
    for frac in args.fractions:
        runs = []
        for seed in args.seeds:
            idx = stratified_subset(y, frac, seed)
            enc, head = supervised(args.encoder, x[idx], y[idx], num_classes, args.sup_steps, seed, device, args.lr)
            runs.append(head_scores(enc, head, xt, yt, device))
            if frac == 1.0 and seed == args.seeds[0]:
                full_encoder = enc
        sup["linear"][str(frac)] = {
            "acc_mean": float(np.mean([r["acc"] for r in runs])), "acc_std": float(np.std([r["acc"] for r in runs])),
            "auroc_mean": float(np.mean([r["auroc"] for r in runs])),
            "auroc_std": float(np.std([r["auroc"] for r in runs])), "n_train": len(idx),
        }
    if full_encoder is not None:
        feats = features(full_encoder)
        for other in others:
            g = feats[other]
            t = linear_probe(g["train"], data.get(other)["train"][1], g["test"], data.get(other)["test"][1])
            sup["transfer"][other] = {"acc": t["acc"], "auroc": t["auroc"]}
            sup["ood"][other] = knn_ood_auroc(feats[name]["train"], feats[name]["test"], g["test"], k=50)["auroc"]
    sup["pretrain_s"] = time.time() - t0
    results.append(sup)
    print(f"[{name}] supervised ({len(args.fractions)} fractions x {len(args.seeds)} seeds, {args.sup_steps} steps "
          f"each) in {time.time() - t0:.0f} s", flush=True)
    return results


def short(name: str) -> str:
    return name.replace("mnist", "")


def markdown(name: str, rows: list[dict[str, Any]], fractions: list[float]) -> str:
    others = [d for d in DATASETS if d != name]
    head = ["model"] + [f"linear {f:g} acc" for f in fractions] + [f"linear {f:g} AUROC" for f in fractions]
    head += [f"transfer {short(o)} AUROC" for o in others] + [f"OOD {short(o)} AUROC" for o in others]
    lines = [f"**Pretrained on {name}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"]]
        for metric in ("acc", "auroc"):
            for f in fractions:
                v = r["linear"].get(str(f))
                cells.append(f"{v[metric + '_mean']:.3f} ± {v[metric + '_std']:.3f}" if v else "-")
        cells += [f"{r['transfer'][o]['auroc']:.3f}" if o in r["transfer"] else "-" for o in others]
        cells += [f"{r['ood'][o]:.3f}" if o in r["ood"] else "-" for o in others]
        lines.append("| " + " | ".join(cells) + " |")
    n = rows[0]["linear"]
    lines.append("")
    lines.append("Labelled training images per fraction: " + ", ".join(f"{f:g}: {n[str(f)]['n_train']}" for f in fractions)
                 + ". Pretraining seconds: " + ", ".join(f"{r['model']} {r['pretrain_s']:.0f}" for r in rows if "pretrain_s" in r) + ".")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--root", type=Path, default=ROOT)
    p.add_argument("--steps", type=int, default=200, help="pretraining optimizer steps per run")
    p.add_argument("--sup-steps", type=int, default=100, help="supervised baseline steps per fraction x seed")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--fractions", default="0.01,0.1,1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--seed", type=int, default=0, help="pretraining / random-init seed")
    p.add_argument("--encoder", default="resnet18-half", help="resnet18-half (CPU default) or any timm name, e.g. resnet18")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--quick", action="store_true", help="one seed, fractions 0.1 and 1 (smoke test)")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here and the raw results next to it (.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.methods = [m for m in args.methods.split(",") if m]
    args.fractions = [float(f) for f in args.fractions.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        args.fractions, args.seeds, args.sup_steps = [0.1, 1.0], [0], min(args.sup_steps, 20)
    unknown = sorted(set(args.datasets) - set(DATASETS)) + sorted(set(args.methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown dataset/method {unknown}; datasets {DATASETS}, methods {METHODS}")
    for d in DATASETS:
        if not (args.root / f"{d}.npz").is_file():
            raise SystemExit(f"missing {args.root / (d + '.npz')}: pass --root to the MedMNIST folder")
    print(f"encoder {args.encoder}, {args.steps} pretraining steps at batch {args.batch_size}, device {args.device}, "
          f"{args.threads} thread(s); fractions {args.fractions}, seeds {args.seeds}", flush=True)
    all_results, text = {}, []
    for name in args.datasets:
        rows = run_dataset(name, args)
        all_results[name] = rows
        table = markdown(name, rows, args.fractions)
        text.append(table)
        print("\n" + table + "\n", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n\n".join(text) + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                             "results": all_results}, indent=1))
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
