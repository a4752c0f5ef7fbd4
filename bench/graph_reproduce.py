#!/usr/bin/env python
"""Reproduce the published Cora numbers of the graph SSL methods with the configs in ``configs/graph/``.

For every row (method) and every seed:

1. the row's config is instantiated through the CLI (``lightning_ssl.cli.SSLCLI``, the same path as
   ``lightning-ssl fit --config configs/graph/<row>.yaml``) with ``--seed_everything <seed>``, the
   data root pointed at ``--root`` (the read-only ``../shared/data/planetoid`` works), and trained with
   the config's own trainer settings (epochs, label-free early stopping for DGI);
2. frozen node embeddings of the clean full graph (encoder in eval mode) are scored with
   ``lightning_ssl.evaluation.node_classification``: a logistic-regression probe trained with Adam on the
   training nodes, test accuracy at the epoch of best validation accuracy (never selected on test), with
   the probe settings of the paper's code (lr, weight decay, epochs in the table);
3. the same architecture with random weights (no training) is scored the same way (``random-init``).

Splits: ``public`` is the Planetoid split (140/500/1000); ``random 10/10/80`` is GRACE's protocol, a new
random split per seed (``data.split_seed = seed``). Each row reports mean +- population std over the seeds
(each seed = a new pretraining, and for GRACE a new split) next to the published mean and the gap.

Run (GPU recommended: GraphMAE trains 1500 full-graph epochs of a 4-head GAT)::

    python bench/graph_reproduce.py --root ../shared/data/planetoid --accelerator gpu --out graph_reproduce.md
    # a quick plumbing run on CPU (numbers meaningless)
    python bench/graph_reproduce.py --epochs-scale 0.02 --seeds 0 --rows cca_ssg,dgi
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe_machine  # noqa: E402
from lightning_ssl.cli import SSLCLI  # noqa: E402
from lightning_ssl.evaluation import masks_to_split, node_classification  # noqa: E402
from lightning_ssl.evaluation.graph import NodeSplit  # noqa: E402
from lightning_ssl.evaluation.graph_tasks import embed_graph  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "graph"


@dataclass
class Row:
    key: str
    method: str
    config: str
    split: str  # "public" or "random"
    published: float | None
    published_std: float | None
    source: str
    probe: dict = field(default_factory=dict)


ROWS = [
    # GRACE's own evaluation: l2-normalised embeddings, liblinear logistic regression, C by 5-fold CV on the
    # 10% training nodes, scored on the held-out nodes (here the 80% test nodes; the 10% validation unused)
    Row("grace", "GRACE", "grace_cora.yaml", "random", 83.3, 0.4, "GRACE (Zhu et al. 2020), Table 3",
        dict(probe="sklearn_cv")),
    Row("bgrl", "BGRL", "bgrl_cora.yaml", "public", 82.7, 0.6, "GraphMAE (Hou et al. 2022), Table 1",
        dict(lr=0.01, weight_decay=1e-4, epochs=300)),
    Row("gbt", "GBT", "gbt_cora.yaml", "public", None, None, "no Cora result in Bielak et al. 2022",
        dict(lr=0.01, weight_decay=1e-4, epochs=300)),
    Row("cca_ssg", "CCA-SSG", "cca_ssg_cora.yaml", "public", 84.0, 0.4, "CCA-SSG (Zhang et al. 2021), Table 2",
        dict(lr=0.01, weight_decay=1e-4, epochs=300)),
    Row("dgi", "DGI", "dgi_cora.yaml", "public", 82.3, 0.6, "DGI (Velickovic et al. 2019), Table 2",
        dict(lr=0.01, weight_decay=0.0, epochs=100)),
    Row("graphmae", "GraphMAE", "graphmae_cora.yaml", "public", 84.2, 0.4, "GraphMAE (Hou et al. 2022), Table 1",
        dict(lr=0.01, weight_decay=1e-4, epochs=300)),
]


def build(row: Row, seed: int, args: argparse.Namespace, workdir: str, epochs: int | None,
          extra: list[str] | None = None) -> SSLCLI:
    argv = ["--config", str(CONFIGS / row.config), "--seed_everything", str(seed),
            "--data.init_args.root", args.root, "--data.init_args.split_seed", str(seed),
            "--trainer.default_root_dir", workdir, "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", args.accelerator, "--trainer.devices", "1"]
    if epochs is not None:
        argv += ["--trainer.max_epochs", str(epochs)]
    return SSLCLI(args=argv + list(extra or []) + shlex.split(getattr(args, "override", "") or ""), run=False)


def embed(cli: SSLCLI, device: torch.device) -> tuple[torch.Tensor, NodeSplit, torch.Tensor]:
    """Frozen embeddings of the clean graph (``evaluate_graph``'s path), the row's split and the labels."""
    dm = cli.datamodule
    dm.setup("fit")
    z = embed_graph(cli.model.encoder.to(device), dm.graph, device)
    g = dm.graph.cpu()
    name = "public" if dm.split == "public" else "random 10/10/80"
    return z, masks_to_split(g.train_mask, g.val_mask, g.test_mask, name=name), g.y


def run_row(row: Row, args: argparse.Namespace) -> dict:
    accs, rand_accs, secs, epochs_run = [], [], [], []
    protocol = ""
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            cli = build(row, seed, args, tmp, None)
            epochs = cli.trainer.max_epochs
            if args.epochs_scale != 1.0:
                cli = build(row, seed, args, tmp, max(1, int(round(epochs * args.epochs_scale))))
            z0, split, y = embed(cli, args.device)  # random-init encoder, same seed
            rand = node_classification(z0, y, split, probe_seeds=[seed], **row.probe)
            t = time.perf_counter()
            cli.trainer.fit(cli.model, cli.datamodule)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            secs.append(time.perf_counter() - t)
            epochs_run.append(cli.trainer.current_epoch)
            z, split, y = embed(cli, args.device)
            if args.save_embeddings:
                Path(args.save_embeddings).mkdir(parents=True, exist_ok=True)
                torch.save({"embeddings": z, "y": y, "split": split, "random_init": z0},
                           Path(args.save_embeddings) / f"{row.key}_seed{seed}.pt")
            res = node_classification(z, y, split, probe_seeds=[seed], **row.probe)
        accs.append(100 * res["mean"])
        rand_accs.append(100 * rand["mean"])
        protocol = res["protocol"]
        print(f"  {row.method:9s} seed {seed}: {accs[-1]:.2f}  (random-init {rand_accs[-1]:.2f}, "
              f"{epochs_run[-1]} epochs, {secs[-1]:.1f} s)", flush=True)
    mean, std = float(np.mean(accs)), float(np.std(accs))
    gap = None if row.published is None else mean - row.published
    return dict(method=row.method, config=f"configs/graph/{row.config}", split=row.split, protocol=protocol,
                accs=accs, mean=mean, std=std, random_init_mean=float(np.mean(rand_accs)),
                random_init_std=float(np.std(rand_accs)), published=row.published, published_std=row.published_std,
                source=row.source, gap=gap, within_1_5=None if gap is None else bool(gap >= -1.5),
                train_seconds_mean=float(np.mean(secs)), epochs_mean=float(np.mean(epochs_run)))


def table(results: list[dict], seeds: list[int]) -> str:
    lines = [f"| method | protocol | ours (mean +- std, {len(seeds)} seeds) | random-init encoder | published | gap | "
             "within 1.5 | train s/seed (epochs) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        pub = "n/a" if r["published"] is None else f"{r['published']:.1f} +- {r['published_std']:.1f} ({r['source']})"
        gap = "n/a" if r["gap"] is None else f"{r['gap']:+.2f}"
        ok = "n/a" if r["within_1_5"] is None else ("yes" if r["within_1_5"] else "**no**")
        lines.append(f"| {r['method']} | {r['protocol']} | {r['mean']:.2f} +- {r['std']:.2f} | "
                     f"{r['random_init_mean']:.2f} +- {r['random_init_std']:.2f} | {pub} | {gap} | {ok} | "
                     f"{r['train_seconds_mean']:.1f} ({r['epochs_mean']:.0f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="../shared/data/planetoid", help="folder holding Cora/raw (read-only is fine)")
    p.add_argument("--rows", default=",".join(r.key for r in ROWS), help="comma-separated: " + ",".join(r.key for r in ROWS))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply each config's max_epochs (smoke runs)")
    p.add_argument("--override", default="",
                   help="extra CLI arguments for every row, one string: --override='--model.init_args.lr 5e-4'")
    p.add_argument("--save-embeddings", default=None, help="folder: frozen embeddings per row and seed (.pt)")
    p.add_argument("--out", default=None, help="write the Markdown table (and a .json beside it)")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    rows = {r.key: r for r in ROWS}
    unknown = [k for k in args.rows.split(",") if k not in rows]
    if unknown:
        p.error(f"unknown rows {unknown}; valid: {', '.join(rows)}")
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    device = torch.device("cuda") if args.accelerator in ("gpu", "cuda") or (
        args.accelerator == "auto" and torch.cuda.is_available()) else torch.device("cpu")
    args.device = device
    header = (f"# Graph SSL on Cora: reproduction of published numbers\n\n{describe_machine(device)}\n"
              f"torch {torch.__version__}; seeds {args.seeds}; epochs x{args.epochs_scale}"
              f"{'; overrides: ' + args.override if args.override else ''}\n")
    print(header, flush=True)
    results = []
    for key in args.rows.split(","):
        print(f"== {rows[key].method} ({rows[key].config})", flush=True)
        results.append(run_row(rows[key], args))
    text = header + "\n" + table(results, args.seeds) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
