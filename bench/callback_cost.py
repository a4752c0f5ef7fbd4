#!/usr/bin/env python
"""What the monitoring callbacks cost, as a share of one training epoch (a benchmark, not a test).

Measured on one device (``--device cpu`` or ``cuda``), with ``torch.cuda.synchronize()`` around every
timed region on CUDA:

* **RankMe** at the paper's size, N = ``--n`` (25,600) embeddings of width K = ``--k`` (2048), through the
  callback's own hooks (a stub trainer and module stand in for Lightning; ``all_reduce`` is the
  single-process no-op), as in a run:
  - validation source: ``on_validation_batch_end`` for N / ``--batch-size`` (100) batches of
    ``[256, 2048]`` (float64 Gram accumulation ``Z^T Z``), then ``on_validation_epoch_end``
    (``singular_values_from_gram`` = ``eigvalsh`` of the K x K Gram + ``rankme_from_singular_values``);
    the two pieces are also timed on their own;
  - training source (``source="train"``): the per-step bank update (100 steps) and the end-of-epoch Gram
    of the whole ``[N, K]`` bank in float64 + ``eigvalsh``;
  - for comparison, the reference ``rankme()``: a full SVD of the ``[N, K]`` matrix in float64 (not
    what the callback does).
* **The epoch** (denominator): N / batch (100) steps of SimCLR with ``TimmEncoder(--encoder)`` (default
  ``resnet50``, out_dim 2048, ``num_classes=0``) on two views of ``--image-size`` px images at batch
  ``--batch-size``: forward, NT-Xent, backward, AdamW and schedule step, in a bare loop on synthetic
  views that already sit on the device (no data loading, no augmentation, no Lightning). ``--warmup``
  untimed steps, then ``--steps`` timed steps, **extrapolated** to 100 steps. Leaving data and
  framework out makes the epoch shorter than a real one, so the callbacks' shares are upper bounds.
* **OnlineLinearProbe**: 100 calls of its ``on_train_batch_end`` (a ``2048 -> --num-classes`` linear
  layer, AdamW step, the single-process all-reduce no-op and its one ``.item()`` per step).
* **OnlineKNN** (``bank="clean"``, one evaluated epoch): the encoder's forward-only pass over N images
  (eval mode, no grad; ``--knn-batches`` batches timed and extrapolated to N / batch) plus the vote
  (``knn_predict``, k = 20) of ``--knn-queries`` validation embeddings against a 25,600-row bank
  (on CPU only ``--knn-queries-timed`` of them are voted and the time is scaled up).

The table gives each component's time, its share of the epoch and the target (RankMe < 1% of an epoch,
on a GPU). Run::

    # GPU (default: ResNet-50, small stem, 32 px, batch 256; about a minute on an H100)
    python bench/callback_cost.py --device cuda --bf16 --channels-last

    # CPU (short: ResNet-18 for the epoch; RankMe still at N = 25,600, K = 2048)
    python bench/callback_cost.py --device cpu --encoder resnet18 --no-small-stem --steps 2 --warmup 1 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from lightning_ssl.callbacks import OnlineLinearProbe, RankMe  # noqa: E402
from lightning_ssl.callbacks.rankme import (  # noqa: E402
    rankme,
    rankme_from_singular_values,
    singular_values_from_gram,
)
from lightning_ssl.encoders.image import TimmEncoder  # noqa: E402
from lightning_ssl.evaluation import knn_predict  # noqa: E402
from lightning_ssl.methods import SimCLR  # noqa: E402
from lightning_ssl.methods.base import ViewOutputs  # noqa: E402
from machine import describe_machine, sync, timed_calls  # bench/machine.py (this folder is on sys.path)

TARGET_RANKME_PCT = 1.0


# ------------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` untimed runs (synchronized)."""
    times = timed_calls(fn, device, repeats, warmup)
    return statistics.median(times), times


class StubModule:
    """What the callbacks use of a LightningModule: ``device`` and ``log``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.logged: dict[str, Tensor] = {}

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        self.logged[name] = value


def stub_trainer() -> SimpleNamespace:
    """What the callbacks use of a Trainer, single process, epoch 0, not sanity-checking."""
    return SimpleNamespace(sanity_checking=False, current_epoch=0, world_size=1, global_rank=0, global_step=0,
                           loggers=[], datamodule=None, state=SimpleNamespace(fn="fit"))


# ------------------------------------------------------------------------------------------ pieces
def embeddings(n: int, k: int, device: torch.device, seed: int) -> Tensor:
    """``[n, k]`` float32 embeddings with a decaying spectrum (content does not change the timings)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n, k, generator=g) * torch.linspace(1.0, 0.01, k).sqrt()
    return z.relu_().to(device)  # post-ReLU/avg-pool features are non-negative, like a ResNet's


def measure_rankme(z: Tensor, batch: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    n, k = z.shape
    batches = [z[i : i + batch] for i in range(0, n, batch)]
    trainer, module = stub_trainer(), StubModule(device)
    out: dict[str, Any] = {"batches": len(batches)}
    reps, warm = args.repeats, args.warm

    # the callback's validation path, hook by hook
    cb = RankMe(num_samples=n)

    def val_epoch() -> None:
        cb.on_validation_epoch_start(trainer, module)
        for i, zb in enumerate(batches):
            cb.on_validation_batch_end(trainer, module, {"embeddings": zb}, None, i)
        cb.on_validation_epoch_end(trainer, module)

    out["val_total"], _ = timed(val_epoch, device, reps, warm)
    out["value"] = float(cb.last_value["embeddings"])

    def val_accumulate() -> None:
        cb.on_validation_epoch_start(trainer, module)
        for i, zb in enumerate(batches):
            cb.on_validation_batch_end(trainer, module, {"embeddings": zb}, None, i)

    out["val_accumulate"], _ = timed(val_accumulate, device, reps, warm)
    gram = cb._gram["embeddings"].clone()

    # the pieces the brief names: float64 Gram accumulation and the end-of-epoch eigendecomposition
    def gram_loop() -> Tensor:
        g = torch.zeros(k, k, dtype=torch.float64, device=device)
        for zb in batches:
            zd = zb.double()
            g += zd.T @ zd
        return g

    out["gram_loop"], _ = timed(gram_loop, device, reps, warm)

    def eig() -> Tensor:
        return rankme_from_singular_values(singular_values_from_gram(gram, n))

    out["eig"], _ = timed(eig, device, reps, warm)
    out["value_from_gram"] = float(eig())

    # training source: per-step bank update, then the Gram of the whole bank at the epoch's end
    tcb = RankMe(num_samples=n, source="train")

    def train_steps() -> None:
        for i, zb in enumerate(batches):
            tcb.on_train_batch_end(trainer, module, {"embeddings": zb}, None, i)

    out["train_bank_steps"], _ = timed(train_steps, device, reps, warm)

    def train_end() -> None:
        tcb._done_epoch = -1  # let the same epoch be finished again (it runs once per epoch in a run)
        tcb.on_train_epoch_end(trainer, module)

    out["train_end"], _ = timed(train_end, device, reps, warm)
    out["value_train"] = float(tcb.last_value["embeddings"])

    # the reference: full SVD of the [N, K] matrix in float64
    if args.svd:
        box: dict[str, Tensor] = {}

        def svd() -> None:
            box["v"] = rankme(z)

        rankme(z[:64, :64])  # initialise the solver library; then one full-size run (it is slow, and only a reference)
        out["svd"], _ = timed(svd, device, 1, 0)
        out["value_svd"] = float(box["v"])
    return out


def build_model(args: argparse.Namespace, device: torch.device) -> SimCLR:
    encoder = TimmEncoder(args.encoder, in_chans=3, small_stem=args.small_stem)
    model = SimCLR(encoder, proj_hidden_dim=2048, proj_out_dim=128, temperature=0.2, optimizer="adamw", lr=1e-3,
                   weight_decay=1e-4, warmup_epochs=0.0).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(args: argparse.Namespace, device: torch.device):
    if args.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def measure_epoch(model: SimCLR, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    steps_per_epoch = args.n // args.batch_size
    optimizer, schedule = model.build_optimizer_and_schedule(1e-3, total_steps=steps_per_epoch, steps_per_epoch=steps_per_epoch)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    views = [torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device)
             .contiguous(memory_format=fmt) for _ in range(2)]
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(args, device):
            h = model.encode_views(views)
            z = [model.project(x) for x in h]
            loss = model.compute_loss(ViewOutputs(embeddings=h, projections=z, batch=None))  # type: ignore[arg-type]
        loss.backward()
        optimizer.step()
        schedule.step()

    for _ in range(args.warmup):
        step()
    sync(device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    per_step = sum(times) / len(times)
    return {"step": per_step, "step_min": min(times), "step_max": max(times), "epoch": per_step * steps_per_epoch,
            "steps_per_epoch": steps_per_epoch, "out_dim": model.encoder.out_dim}


def measure_probe(k: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    steps = args.n // args.batch_size
    trainer, module = stub_trainer(), StubModule(device)
    probe = OnlineLinearProbe(num_classes=args.num_classes)
    probe.setup(trainer, module, "fit")  # type: ignore[arg-type]
    z = embeddings(args.batch_size * 4, k, device, args.seed + 1)
    y = torch.randint(0, args.num_classes, (z.shape[0],), device=device)
    idx = torch.arange(z.shape[0], device=device)
    outs = [{"embeddings": z[i : i + args.batch_size], "target": y[i : i + args.batch_size],
             "index": idx[i : i + args.batch_size]} for i in range(0, z.shape[0], args.batch_size)]

    def run() -> None:
        for s in range(steps):
            probe.on_train_batch_end(trainer, module, outs[s % len(outs)], None, s)  # type: ignore[arg-type]

    t, _ = timed(run, device, args.repeats, args.warm)
    return {"probe_epoch": t, "probe_step": t / steps}


@torch.no_grad()
def measure_knn(model: SimCLR, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    steps = math.ceil(args.n / args.batch_size)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size).to(device).contiguous(memory_format=fmt)
    model.eval()
    timed_batches = min(steps, args.knn_batches if args.knn_batches else (steps if device.type == "cuda" else 2))

    def forward() -> None:
        for _ in range(timed_batches):
            with autocast(args, device):
                model(x).float()

    with autocast(args, device):
        model(x)  # warm-up (cudnn autotuning for eval shapes)
    t_fwd, _ = timed(forward, device, 1, 0)
    fwd_epoch = t_fwd / timed_batches * steps

    k = model.encoder.out_dim if args.knn_dim is None else args.knn_dim
    bank = embeddings(args.n, k, device, args.seed + 2)
    labels = torch.randint(0, args.num_classes, (args.n,), device=device)
    n_q = args.knn_queries
    n_timed = n_q if device.type == "cuda" else min(n_q, args.knn_queries_timed)
    queries = embeddings(n_timed, k, device, args.seed + 3)
    knn_predict(bank, labels, queries[:256], args.num_classes)  # warm-up
    t_vote, _ = timed(lambda: knn_predict(bank, labels, queries, args.num_classes), device, 1, 0)
    model.train()
    return {"knn_forward": fwd_epoch, "knn_forward_batches_timed": timed_batches, "knn_vote": t_vote * n_q / n_timed,
            "knn_queries_timed": n_timed, "knn_dim": k}


# ------------------------------------------------------------------------------------------ report
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--n", type=int, default=25_600, help="samples per epoch = RankMe rows = kNN bank rows")
    p.add_argument("--k", type=int, default=2048, help="RankMe embedding width")
    p.add_argument("--batch-size", type=int, default=256, help="training and evaluation batch")
    p.add_argument("--encoder", default="resnet50", help="timm name for the training step and the kNN forward pass")
    p.add_argument("--small-stem", action=argparse.BooleanOptionalAction, default=True,
                   help="3x3 stride-1 stem without max-pool (CIFAR-style, for 32 px)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed training steps (extrapolated to n / batch)")
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    p.add_argument("--bf16", action="store_true", help="torch.autocast(bfloat16) for the training step and the kNN forward")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--num-classes", type=int, default=10, help="probe and kNN classes")
    p.add_argument("--knn-queries", type=int, default=None, help="validation embeddings voted by kNN (default: --n)")
    p.add_argument("--knn-queries-timed", type=int, default=2048,
                   help="on CPU, vote this many and scale up (the vote is linear in the queries)")
    p.add_argument("--knn-batches", type=int, default=None,
                   help="forward batches timed for the kNN clean pass (default: all on cuda, 2 on cpu)")
    p.add_argument("--knn-dim", type=int, default=None, help="kNN bank width (default: the encoder's out_dim)")
    p.add_argument("--svd", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the reference rankme() (full float64 SVD of [n, k])")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats of each callback piece (default 3 cuda, 1 cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--matmul-precision", choices=("highest", "high", "medium"), default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.n < args.batch_size or args.steps < 1 or args.warmup < 0:
        p.error("need --n >= --batch-size, --steps >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    if args.bf16 and device.type != "cuda":
        print("note: --bf16 on CPU runs CPU autocast (bf16); the GPU recipe is what it is meant for")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.matmul_precision:
        torch.set_float32_matmul_precision(args.matmul_precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    args.repeats = args.repeats or (3 if device.type == "cuda" else 1)
    args.warm = 1 if device.type == "cuda" else 0
    args.knn_queries = args.knn_queries or args.n
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    print(f"# lightning_ssl callback cost ({_dt.datetime.now():%Y-%m-%d %H:%M})")
    print(f"device   : {describe_machine(device)}")
    print(f"software : python {platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}")
    print(f"command  : python {' '.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}")
    steps_per_epoch = args.n // args.batch_size
    print(f"epoch    : {args.n:,} samples = {steps_per_epoch} steps of batch {args.batch_size}; SimCLR + "
          f"TimmEncoder({args.encoder!r}, small_stem={args.small_stem}), 2 views of {args.image_size} px, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, channels_last {args.channels_last}")
    print(f"RankMe   : N = {args.n:,}, K = {args.k}, {math.ceil(args.n / args.batch_size)} batches of "
          f"[{args.batch_size}, {args.k}]; median of {args.repeats} timed repeat(s) after {args.warm} warm-up", flush=True)

    z = embeddings(args.n, args.k, device, args.seed)
    r = measure_rankme(z, args.batch_size, args, device)
    del z
    print(f"  RankMe done ({time.perf_counter() - start:.0f} s): value {r['value']:.2f} (from the Gram) "
          + (f"vs {r['value_svd']:.2f} (reference SVD)" if r.get("value_svd") is not None else ""), flush=True)
    model = build_model(args, device)
    e = measure_epoch(model, args, device)
    print(f"  training step done ({time.perf_counter() - start:.0f} s): {e['step'] * 1000:.1f} ms/step "
          f"(min {e['step_min'] * 1000:.1f}, max {e['step_max'] * 1000:.1f}), encoder out_dim {e['out_dim']}", flush=True)
    pr = measure_probe(args.k, args, device)
    kn = measure_knn(model, args, device)
    print(f"  probe and kNN done ({time.perf_counter() - start:.0f} s)", flush=True)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"  peak GPU memory allocated: {peak:.1f} GiB")

    epoch = e["epoch"]
    where = "GPU" if device.type == "cuda" else "the target is for a GPU; CPU shown for reference"
    rankme_total = r["val_total"]
    rows: list[tuple[str, float | None, str, str]] = [
        (f"training epoch: {steps_per_epoch} SimCLR steps, {args.encoder} (EXTRAPOLATED from {args.steps} timed steps)",
         epoch, "100%", "(denominator)"),
        (f"RankMe (val source), callback hooks: {r['batches']} x on_validation_batch_end + on_validation_epoch_end",
         rankme_total, "", f"< {TARGET_RANKME_PCT:g}%: "
         + ("met" if 100 * rankme_total / epoch < TARGET_RANKME_PCT else "NOT met") + f" [{where}]"),
        (f"  of which: float64 Gram accumulation, {r['batches']} x [{args.batch_size}, {args.k}] (hooks)",
         r["val_accumulate"], "", ""),
        ("  of which: end of epoch (total minus accumulation)", rankme_total - r["val_accumulate"], "", ""),
        (f"  piece: bare Gram loop, {r['batches']} x z.double().T @ z.double()", r["gram_loop"], "", ""),
        (f"  piece: singular_values_from_gram ({args.k} x {args.k} eigvalsh) + rankme_from_singular_values",
         r["eig"], "", ""),
        (f"RankMe (source='train'): {r['batches']} x bank update (on_train_batch_end)", r["train_bank_steps"], "", ""),
        (f"RankMe (source='train'): epoch end, Gram of the [{args.n}, {args.k}] bank in float64 + eigvalsh",
         r["train_end"], "", ""),
        (f"reference rankme(): full float64 SVD of [{args.n}, {args.k}] (not used by the callback)",
         r.get("svd"), "", ""),
        (f"OnlineLinearProbe: {steps_per_epoch} x on_train_batch_end ({args.k} -> {args.num_classes} linear, AdamW, "
         "1 .item() per step)", pr["probe_epoch"], "", ""),
        (f"OnlineKNN clean bank: forward-only pass over {args.n:,} images ({args.encoder}; "
         f"{kn['knn_forward_batches_timed']} batch(es) timed"
         + (", extrapolated)" if kn["knn_forward_batches_timed"] < math.ceil(args.n / args.batch_size) else ")"),
         kn["knn_forward"], "", ""),
        (f"OnlineKNN vote: {args.knn_queries:,} queries vs {args.n:,}-row bank, dim {kn['knn_dim']}, k=20"
         + (f" ({kn['knn_queries_timed']:,} timed, scaled)" if kn["knn_queries_timed"] < args.knn_queries else ""),
         kn["knn_vote"], "", ""),
        ("OnlineKNN total (one evaluated epoch)", kn["knn_forward"] + kn["knn_vote"], "", ""),
    ]
    width = max(len(c[0]) for c in rows)
    print()
    print(f"| {'component':<{width}} | {'time (s)':>9} | {'share of epoch':>14} | target |")
    print(f"|{'-' * (width + 2)}|{'-' * 11}|{'-' * 16}|--------|")
    for name, t, share, target in rows:
        if t is None:
            continue
        share = share or f"{100 * t / epoch:.2f}%"
        print(f"| {name:<{width}} | {t:9.3f} | {share:>14} | {target} |")
    print()
    print(f"RankMe value check: callback {r['value']:.4f}, from the accumulated Gram {r['value_from_gram']:.4f}, "
          f"train-source bank {r['value_train']:.4f}"
          + (f", reference SVD {r['value_svd']:.4f}" if r.get("value_svd") is not None else ""))
    print(f"training step: {e['step'] * 1000:.1f} ms mean over {args.steps} timed steps (min {e['step_min'] * 1000:.1f}, "
          f"max {e['step_max'] * 1000:.1f}); epoch = mean x {steps_per_epoch} (extrapolated); synthetic views on the "
          "device, no data loading or Lightning: a real epoch is longer, so the shares are upper bounds.")
    print(f"OnlineLinearProbe: {1000 * pr['probe_step']:.2f} ms per step. The validation forward pass that RankMe "
          "(val) reads is not counted: the validation loop runs anyway.")
    print(f"wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
