#!/usr/bin/env python
"""Point-cloud operators and Point-MAE training throughput (a benchmark, not a test).

Four parts, each printed as a Markdown table whose header line names the machine
(``bench.machine.describe_machine``), the torch version and the date:

1. ``fps``: ``lightning_ssl.encoders.point_ops.farthest_point_sample(xyz, N // 8, deterministic=True,
   backend="torch")`` (the pure-torch loop) on clouds of 1,024 / 8,192 / 32,768 points drawn with
   ``torch.rand`` in the unit cube (fixed seed), batch 8 / 4 / 1 clouds, 128 / 1,024 / 4,096 centres.
   ``ms/call`` is the median over ``--repeats`` calls after one untimed warm-up call
   (``torch.cuda.synchronize()`` before and after every call on GPU); ``clouds/s = B / median``.
2. ``knn``: ``knn(x, x, k=16, chunk_size=--knn-chunk, backend="torch")``, the self-kNN of every point of
   the same clouds (chunked ``torch.cdist`` + ``topk``); same timing; ``query points/s = B * N / median``.
3. ``mem``: peak memory of ``knn(x, x, 16, chunk_size=c)`` on one cloud (B = 1) of 16,384 and 32,768
   points for ``c`` in {N (unchunked), 4096, 1024, 256}. CPU: every setting runs in a FRESH SUBPROCESS
   that imports torch and ``point_ops``, builds the cloud, calls ``knn`` once and reports
   ``resource.getrusage(RUSAGE_SELF).ru_maxrss``; a baseline subprocess does the same without calling
   ``knn`` (``--mem-baselines`` of them per N; the median is subtracted, their spread is printed).
   Children are started through ``/bin/sh``, which forks them: a child exec'd straight from this process
   would inherit this process's peak RSS in its ``ru_maxrss``.
   Settings whose estimated peak (two ``[B, c, N]`` float32 blocks: ``cdist`` and its square) exceeds
   ``--mem-limit-gb`` are skipped and marked so. GPU: in process, ``torch.cuda.max_memory_allocated()``
   (reset right before the call) minus ``torch.cuda.memory_allocated()`` before the call. Each row also
   shows the size of the largest distance block, ``B * c * N * 4`` bytes.
4. ``mae``: Point-MAE training steps/s, ``PointMAE(PointPatchTransformer(), optimizer="adamw", lr=1e-3,
   weight_decay=0.05, warmup_epochs=0)`` (encoder defaults = the paper: 64 groups of 32 points, width 384,
   depth 12, 6 heads; decoder 4 blocks, mask 0.6) on a fixed random batch of ``--mae-batch`` x
   ``--mae-points`` points (xyz in [-1, 1]), in a bare loop without a Trainer: ``zero_grad ->
   method.encode_training_views([x], extra) -> method.compute_loss(ViewOutputs(...)) -> backward ->
   AdamW step -> scheduler step`` (optimizer and schedule from ``SSLMethod.build_optimizer_and_schedule``,
   as ``configure_optimizers`` builds them). 2 untimed warm-up steps, then ``--steps`` timed steps
   (default 5 on CPU, 50 on GPU; synchronized at both ends on GPU). On GPU it runs in float32 and under
   ``torch.autocast("cuda", dtype=torch.bfloat16)``; the GPU rows also give the peak
   ``torch.cuda.max_memory_allocated()`` of the timed window.

Examples::

    OMP_NUM_THREADS=2 python bench/points.py --device cpu --out points_cpu.md   # a few minutes on 2 cores
    python bench/points.py --device cuda --out points_gpu.md
    python bench/points.py --quick                                          # smoke run, seconds
    python bench/points.py --parts fps,knn                                  # a subset
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.machine import describe_machine, sync, timed_calls  # noqa: E402

PARTS = ("fps", "knn", "mem", "mae")
SIZES = [(1024, 8), (8192, 4), (32768, 1)]  # (points per cloud, clouds per batch)
QUICK_SIZES = [(1024, 8), (4096, 2)]
MEM_SIZES = [16384, 32768]
QUICK_MEM_SIZES = [4096]
K = 16
RESULT_TAG = "POINTS_BENCH_RESULT "
MIB = 2**20


def header(title: str, device: torch.device, extra: str = "") -> str:
    date = _dt.datetime.now().isoformat(timespec="seconds")
    line = f"**{title}** | {describe_machine(device)} | torch {torch.__version__} | {date}"
    return line + (f" | {extra}" if extra else "")


def median_ms(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, float, float]:
    """One untimed warm-up call, then ``repeats`` timed calls: (median, min, max) in ms."""
    times = [t * 1e3 for t in timed_calls(fn, device, repeats, warmup=1)]
    return statistics.median(times), min(times), max(times)


def make_cloud(batch: int, n: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, 3, generator=g).to(device)


# ----------------------------------------------------------------------------------------------- parts 1, 2
def run_fps(args: argparse.Namespace, device: torch.device) -> str:
    from lightning_ssl.encoders.point_ops import farthest_point_sample

    lines = [header("FPS throughput", device, f"farthest_point_sample(deterministic=True, backend='torch'), "
                    f"median of {args.repeats} calls after 1 warm-up"), "",
             "| points/cloud | clouds/batch (B) | centres (N/8) | ms/call median | min-max ms | clouds/s |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n, b in args.sizes:
        x = make_cloud(b, n, device, args.seed)
        m = n // 8
        med, lo, hi = median_ms(lambda: farthest_point_sample(x, m, deterministic=True, backend="torch"),
                                args.repeats, device)
        lines.append(f"| {n:,} | {b} | {m:,} | {med:.2f} | {lo:.2f}-{hi:.2f} | {b / (med / 1e3):,.1f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def run_knn(args: argparse.Namespace, device: torch.device) -> str:
    from lightning_ssl.encoders.point_ops import knn

    lines = [header("kNN throughput", device, f"knn(x, x, k={K}, chunk_size={args.knn_chunk}, backend='torch'), "
                    f"self-kNN of every point, median of {args.repeats} calls after 1 warm-up"), "",
             "| points/cloud | clouds/batch (B) | ms/call median | min-max ms | query points/s |",
             "|---:|---:|---:|---:|---:|"]
    for n, b in args.sizes:
        x = make_cloud(b, n, device, args.seed)
        med, lo, hi = median_ms(lambda: knn(x, x, K, chunk_size=args.knn_chunk, backend="torch"),
                                args.repeats, device)
        lines.append(f"| {n:,} | {b} | {med:.2f} | {lo:.2f}-{hi:.2f} | {b * n / (med / 1e3):,.0f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- part 3
def mem_child(spec: dict) -> None:
    """Fresh interpreter: build the cloud, optionally call knn once, report ru_maxrss (bytes)."""
    from lightning_ssl.encoders.point_ops import knn

    x = make_cloud(1, spec["n"], torch.device("cpu"), spec["seed"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if spec["chunk"]:
        dist2, idx = knn(x, x, K, chunk_size=spec["chunk"], backend="torch")
        assert idx.shape == (1, spec["n"], K)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(RESULT_TAG + json.dumps(dict(spec, maxrss_before=before, maxrss=after)), flush=True)


def run_mem_child(spec: dict, timeout: float) -> dict:
    # Through a shell that FORKS the interpreter (the command is not the shell's last, so no exec
    # shortcut): a process started straight from this one inherits this process's peak RSS in its
    # ru_maxrss (Linux records the old mm's high-water mark at execve, and subprocess uses vfork), which
    # would hide every allocation below that peak. The shell's fork copies only the shell's small RSS.
    cmd = ["/bin/sh", "-c", '"$0" "$@"; rc=$?; exit $rc',
           sys.executable, str(Path(__file__).resolve()), "--_mem-child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return dict(spec, error=f"timed out after {timeout} s")
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    return dict(spec, error=f"exit code {proc.returncode}: {proc.stderr.strip()[-500:]}")


def fmt_bytes(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if abs(b) >= 2**30 else f"{b / MIB:,.1f} MiB"


def run_mem(args: argparse.Namespace, device: torch.device) -> str:
    from lightning_ssl.encoders.point_ops import knn

    cpu = device.type == "cpu"
    how = (f"CPU: ru_maxrss of a fresh subprocess per setting minus the median of {args.mem_baselines} baseline "
           "subprocesses (same imports and cloud, no knn call)" if cpu else
           "GPU: max_memory_allocated() during the call minus memory_allocated() before it")
    lines = [header("Chunked kNN peak memory", device, f"knn(x, x, k={K}, chunk_size=c, backend='torch'), one cloud "
                    f"(B=1); {how}"), "",
             "| points N | chunk c | largest distance block B*c*N*4 | peak memory added by knn | added / block | note |",
             "|---:|---:|---:|---:|---:|---|"]
    limit = args.mem_limit_gb * 2**30
    for n in args.mem_sizes:
        base = None
        if cpu:
            runs = [run_mem_child(dict(n=n, chunk=0, seed=args.seed), args.mem_timeout) for _ in range(args.mem_baselines)]
            ok = [r["maxrss"] for r in runs if "error" not in r]
            if not ok:
                lines.append(f"| {n:,} | - | - | baseline failed: {runs[0]['error']} | | |")
                continue
            base = statistics.median(ok)
            print(f"  baseline N={n}: ru_maxrss {fmt_bytes(base)} (spread {fmt_bytes(max(ok) - min(ok))})", flush=True)
        for c in dict.fromkeys([n, 4096, 1024, 256]):  # N first (unchunked); duplicates dropped
            if c > n:
                continue
            label = f"{c:,}" + (" (= N, unchunked)" if c == n else "")
            block = 1 * c * n * 4
            estimate = 2 * block
            note = ""
            if cpu:
                if estimate > limit:
                    lines.append(f"| {n:,} | {label} | {fmt_bytes(block)} | skipped | | estimated peak "
                                 f"{fmt_bytes(estimate)} (cdist + square) > --mem-limit-gb {args.mem_limit_gb:g} |")
                    print(lines[-1], flush=True)
                    continue
                r = run_mem_child(dict(n=n, chunk=c, seed=args.seed), args.mem_timeout)
                if "error" in r:
                    lines.append(f"| {n:,} | {label} | {fmt_bytes(block)} | failed | | {r['error'][:200]} |")
                    continue
                added = r["maxrss"] - base
                note = (f"child ru_maxrss {fmt_bytes(r['maxrss'])} (its own increase over the call "
                        f"{fmt_bytes(r['maxrss'] - r['maxrss_before'])}), baseline {fmt_bytes(base)}")
            else:
                free, _ = torch.cuda.mem_get_info(device)
                if estimate > 0.8 * free:
                    lines.append(f"| {n:,} | {label} | {fmt_bytes(block)} | skipped | | estimated peak "
                                 f"{fmt_bytes(estimate)} > 80% of free GPU memory {fmt_bytes(free)} |")
                    continue
                x = make_cloud(1, n, device, args.seed)
                torch.cuda.empty_cache()
                sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                out = knn(x, x, K, chunk_size=c, backend="torch")
                sync(device)
                added = torch.cuda.max_memory_allocated(device) - before
                del out, x
            lines.append(f"| {n:,} | {label} | {fmt_bytes(block)} | {fmt_bytes(added)} | {added / block:.2f} | {note} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- part 4
def mae_steps(args: argparse.Namespace, device: torch.device, bf16: bool) -> dict:
    from lightning_ssl.data.batch import SSLBatch
    from lightning_ssl.encoders import PointPatchTransformer
    from lightning_ssl.methods import PointMAE
    from lightning_ssl.methods.base import ViewOutputs

    torch.manual_seed(args.seed)
    encoder = PointPatchTransformer()
    method = PointMAE(encoder, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=0).to(device)
    method.train()
    n_params = sum(p.numel() for p in method.parameters())
    warmup = 2
    opt, sched = method.build_optimizer_and_schedule(1e-3, warmup + args.steps, 1)
    g = torch.Generator().manual_seed(args.seed)
    x = (torch.rand(args.mae_batch, args.mae_points, 3, generator=g) * 2 - 1).to(device)
    batch = SSLBatch(views=[x])

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            extra: dict[str, Any] = {}
            h = method.encode_training_views(batch.views, extra)
            loss = method.compute_loss(ViewOutputs(embeddings=h, projections=h, batch=batch, extra=extra))
        loss.backward()
        opt.step()
        sched.step()
        return loss

    for _ in range(warmup):
        loss = step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(device)
    seconds = time.perf_counter() - t0
    out = dict(seconds=seconds, steps=args.steps, params=n_params, loss=float(loss.detach()))
    if device.type == "cuda":
        out["peak"] = torch.cuda.max_memory_allocated(device)
    return out


def run_mae(args: argparse.Namespace, device: torch.device) -> str:
    modes = [False, True] if device.type == "cuda" else [False]
    cfg = (f"PointMAE(PointPatchTransformer(), adamw, lr 1e-3, wd 0.05, warmup_epochs 0), batch {args.mae_batch} x "
           f"{args.mae_points} points, bare loop, 2 warm-up + {args.steps} timed steps")
    lines = [header("Point-MAE training", device, cfg), "",
             "| precision | steps/s | s/step | clouds/s | peak GPU memory | params | last loss |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for bf16 in modes:
        name = "bf16 autocast" if bf16 else "float32"
        try:
            r = mae_steps(args, device, bf16)
        except Exception as e:  # noqa: BLE001 - report what fails instead of hiding the other parts
            import traceback

            tb = traceback.format_exc()
            print(tb, flush=True)
            lines.append(f"| {name} | FAILED: {type(e).__name__}: {str(e)[:300]} | | | | | |")
            continue
        sps = r["steps"] / r["seconds"]
        peak = fmt_bytes(r["peak"]) if "peak" in r else "n/a (CPU)"
        lines.append(f"| {name} | {sps:.3f} | {1 / sps:.3f} | {sps * args.mae_batch:,.1f} | {peak} | "
                     f"{r['params'] / 1e6:.2f} M | {r['loss']:.4f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: clouds of 1k/4k points, memory at 4k, Point-MAE batch 4 x 1 timed step")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per FPS/kNN setting (default 5, quick 2)")
    p.add_argument("--knn-chunk", type=int, default=4096, help="chunk_size of the kNN throughput part")
    p.add_argument("--mem-limit-gb", type=float, default=6.0, help="CPU: skip memory settings estimated above this")
    p.add_argument("--mem-baselines", type=int, default=3, help="CPU: baseline subprocesses per cloud size")
    p.add_argument("--mem-timeout", type=float, default=600.0, help="seconds per memory subprocess")
    p.add_argument("--steps", type=int, default=None, help="timed Point-MAE steps (default 5 on CPU, 50 on GPU)")
    p.add_argument("--mae-batch", type=int, default=None, help="Point-MAE clouds per batch (default 32)")
    p.add_argument("--mae-points", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the Markdown tables here")
    p.add_argument("--_mem-child", dest="mem_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mem_child is None:
        args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
        bad = [s for s in args.parts if s not in PARTS]
        if bad:
            p.error(f"unknown parts {bad}; valid: {', '.join(PARTS)}")
        if args.device == "cuda" and not torch.cuda.is_available():
            p.error("--device cuda but torch.cuda.is_available() is False")
        args.sizes = QUICK_SIZES if args.quick else SIZES
        args.mem_sizes = QUICK_MEM_SIZES if args.quick else MEM_SIZES
        if args.repeats is None:
            args.repeats = 2 if args.quick else 5
        if args.steps is None:
            args.steps = 1 if args.quick else (50 if args.device == "cuda" else 5)
        if args.mae_batch is None:
            args.mae_batch = 4 if args.quick else 32
        if args.quick:
            args.mem_baselines = min(args.mem_baselines, 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mem_child is not None:
        mem_child(json.loads(args.mem_child))
        return 0
    import warnings

    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    runners = dict(fps=run_fps, knn=run_knn, mem=run_mem, mae=run_mae)
    sections = []
    for part in args.parts:
        t0 = time.perf_counter()
        print(f"== {part}", flush=True)
        sections.append(runners[part](args, device))
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    text = "\n\n".join(sections) + "\n"
    print("\n" + text, flush=True)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
