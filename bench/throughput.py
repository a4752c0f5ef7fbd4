#!/usr/bin/env python
"""Training throughput: the Lightning Trainer against a bare PyTorch loop (a benchmark, not a test).

Both paths train the SAME model object (an SSL method from ``lightning_ssl.methods.METHODS`` around a
``TimmEncoder``), on the SAME batches (one ``ImageDataModule`` and its ``train_dataloader()``), with the
SAME optimizer and schedule (the ones ``SSLMethod.configure_optimizers`` builds, rebuilt from
``lightning_ssl.optim`` in the bare loop) and the SAME loss path:

* Trainer: ``trainer.fit(model, datamodule)``; views are made in the datamodule's
  ``on_after_batch_transfer`` (device augmentation) or in DataLoader workers (CPU augmentation), and
  ``SSLMethod.training_step`` runs ``encode_views -> project -> compute_loss``.
* bare: ``next(loader) -> .to(device) -> DeviceAugmentation -> model.encode_views -> model.project ->
  model.compute_loss -> backward -> optimizer.step -> scheduler.step`` (+ ``update_teacher`` for EMA
  methods), under ``torch.autocast`` exactly when the Trainer's precision is ``bf16-mixed``.

Paths are measured alternately in one process: every round runs each configuration once, and the order
of trainer and bare flips from round to round (T B | B T | T B ...) so that a slow drift of a shared
machine hits both alike. Every run starts a fresh DataLoader, trains ``--warmup`` untimed steps, then
``--steps`` timed steps.

Timing: wall time of the ``--steps`` complete iterations after warm-up, from the end of step
``warmup`` to the end of step ``warmup + steps`` (Trainer: a callback's ``on_train_batch_end``; bare:
the same points of the loop), with ``torch.cuda.synchronize()`` at both ends on GPU. It includes data
fetching, host-to-device copy, device augmentation, forward, backward, optimizer and scheduler steps and
every Lightning hook in between; Trainer set-up and tear-down are excluded. ``img/s`` counts source
images (``batch_size * steps / seconds``); each image gives ``len(views)`` views (2 for SimCLR).

Peak memory, over the timed window: on GPU ``torch.cuda.max_memory_allocated`` (reset at the start of
the window). On CPU the peak resident set size of the main process (``VmHWM``), reset at the start of
the window through ``/proc/self/clear_refs`` where Linux allows it; otherwise ``ru_maxrss``, which is the
process-lifetime peak and so never decreases from run to run. ``tracemalloc`` does not see torch's
allocations, so it is not used. DataLoader worker processes are not included on CPU.

Examples::

    # CPU smoke run (a few minutes on 2 cores)
    python bench/throughput.py --device cpu --batch-size 64 --image-size 32 --steps 10 --rounds 3

    # GPU recipe: ResNet-18 (small stem) at 32 px, two views, device augmentation, bf16
    python bench/throughput.py --device cuda --precision bf16-mixed --channels-last \
        --batch-size 512 --image-size 32 --aug device

    # real data
    python bench/throughput.py --dataset pneumoniamnist --root ../shared/data/medmnist
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from lightning_ssl.data.batch import SSLBatch  # noqa: E402
from lightning_ssl.data.image import MEDMNIST_FLAGS, ImageDataModule, ImageSamples  # noqa: E402
from lightning_ssl.encoders.image import TimmEncoder  # noqa: E402
from lightning_ssl.methods import METHODS  # noqa: E402
from lightning_ssl.methods.base import SSLMethod, ViewOutputs  # noqa: E402
from lightning_ssl.methods.momentum import MomentumSSLMethod  # noqa: E402
from machine import describe_machine  # bench/machine.py (this folder is on sys.path)

TARGET_OVERHEAD_PCT = 5.0
GPU_GOAL_IMG_S = 20_000


# ----------------------------------------------------------------------------------------------- data
class BenchDataModule(ImageDataModule):
    """``ImageDataModule`` with two additions for the benchmark.

    * ``synthetic``: in-memory uint8 images ``[N, C, H, W]`` used instead of a named dataset.
    * ``channels_last``: views are converted to ``torch.channels_last`` after the library's own
      ``on_after_batch_transfer`` (the bare loop does the same conversion).
    """

    synthetic: tuple[Tensor, Tensor] | None = None
    channels_last: bool = False

    def _load_raw(self) -> dict[str, Any]:
        if self.synthetic is None:
            return super()._load_raw()
        if not self._splits:
            images, labels = self.synthetic
            self._native = (int(images.shape[-1]), int(images.shape[1]))
            self._splits = {"train": ImageSamples(images, labels), "val": ImageSamples(images[:8], labels[:8])}
        return self._splits

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.channels_last and isinstance(batch, SSLBatch):
            batch.views = [to_channels_last(v) for v in batch.views]
        return batch


def to_channels_last(x: Any) -> Any:
    return x.contiguous(memory_format=torch.channels_last) if isinstance(x, Tensor) and x.dim() == 4 else x


def synthetic_images(n: int, channels: int, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return images, labels


# --------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory over a window: CUDA allocator peak, or the main process's peak RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_resettable = False
        if device.type == "cuda":
            self.label = "torch.cuda.max_memory_allocated (timed window)"
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.cpu_resettable = self._vmhwm_kib() is not None
            except OSError:
                self.cpu_resettable = False
            self.label = (
                "peak RSS of the main process (VmHWM, reset via /proc/self/clear_refs; workers excluded)"
                if self.cpu_resettable
                else "ru_maxrss: process-LIFETIME peak RSS (never decreases; workers excluded)"
            )

    @staticmethod
    def _vmhwm_kib() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.cpu_resettable:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.cpu_resettable:
            return (self._vmhwm_kib() or 0) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- runs
@dataclass
class Result:
    seconds: float
    peak_mib: float


class WindowTimer(L.Callback):
    """Wall time from the end of training step ``warmup`` to the end of step ``warmup + steps``."""

    def __init__(self, warmup: int, steps: int, device: torch.device, memory: PeakMemory) -> None:
        self.warmup, self.steps, self.device, self.memory = warmup, steps, device, memory
        self.seen = 0
        self.t0 = self.t1 = None
        self.peak = float("nan")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.seen += 1
        if self.seen == self.warmup:
            synchronize(self.device)
            self.memory.reset()
            self.t0 = time.perf_counter()
        elif self.seen == self.warmup + self.steps:
            synchronize(self.device)
            self.t1 = time.perf_counter()
            self.peak = self.memory.peak_mib()


def run_trainer(model: SSLMethod, dm: BenchDataModule, args: argparse.Namespace, device: torch.device,
                memory: PeakMemory) -> Result:
    timer = WindowTimer(args.warmup, args.steps, device, memory)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        benchmark=torch.backends.cudnn.benchmark if device.type == "cuda" else None,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    if timer.t0 is None or timer.t1 is None:
        raise RuntimeError(f"The Trainer ran {timer.seen} steps; expected {args.warmup + args.steps}.")
    # detach so that the next (bare) run does not keep this Trainer's optimizer state alive
    model.trainer = None  # type: ignore[assignment]
    dm.trainer = None
    del trainer
    return Result(timer.t1 - timer.t0, timer.peak)


def run_bare(model: SSLMethod, dm: BenchDataModule, args: argparse.Namespace, device: torch.device,
             memory: PeakMemory) -> Result:
    dm.setup("fit")  # as Trainer.fit does: a fresh train set and DeviceAugmentation
    loader = dm.train_dataloader()
    model.to(device)
    model.train()
    aug = dm.device_aug.to(device) if dm.device_aug is not None else None
    opt, sched = model.build_optimizer_and_schedule(model.hparams.lr, args.warmup + args.steps, max(1, len(loader)))
    non_blocking = device.type == "cuda"
    bf16 = args.precision == "bf16-mixed"
    momentum = isinstance(model, MomentumSSLMethod)
    total = args.warmup + args.steps
    done, t0 = 0, None
    it = iter(loader)
    while done < total:
        try:
            batch = next(it)
        except StopIteration:  # next epoch, as the Trainer does
            it = iter(loader)
            continue
        views = [v.to(device, non_blocking=non_blocking) for v in batch.views]
        if aug is not None:
            views = aug(views[0])
        if args.channels_last:
            views = [to_channels_last(v) for v in views]
        batch = SSLBatch(
            views=views,
            target=batch.target.to(device, non_blocking=non_blocking) if batch.target is not None else None,
            index=batch.index.to(device, non_blocking=non_blocking) if batch.index is not None else None,
        )
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            h = [model.apply_mask(x, batch) for x in model.encode_views(batch.views)]
            z = [model.project(x) for x in h]
            result = model.compute_loss(ViewOutputs(embeddings=h, projections=z, batch=batch))
            loss = result["loss"] if isinstance(result, dict) else result
        loss.backward()
        model.on_after_backward()  # the method's own hook (DINO freezes its last layer); no-op otherwise
        if args.bare_check_finite:  # where the Trainer checks: after backward, before the optimizer step
            model._check_finite(loss.detach().reshape(1), [done])
        opt.step()
        sched.step()
        if momentum:
            model.update_teacher()
        done += 1
        if done == args.warmup:
            synchronize(device)
            memory.reset()
            t0 = time.perf_counter()
    synchronize(device)
    t1 = time.perf_counter()
    peak = memory.peak_mib()
    if hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    del it, loader, opt, sched
    model.cpu()  # as Lightning's teardown does
    assert t0 is not None
    return Result(t1 - t0, peak)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    p.add_argument("--channels-last", action="store_true", help="model and inputs in torch.channels_last (both paths)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=50, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps at the start of every run (>= 1)")
    p.add_argument("--rounds", type=int, default=5, help="each configuration runs once per round")
    p.add_argument("--method", default="SimCLR", help=f"one of {sorted(METHODS)}")
    p.add_argument("--method-kwargs", default="{}", help='JSON, e.g. \'{"temperature": 0.2}\'')
    p.add_argument("--recipe", default=None, help="view recipe (default: dino for DINO, else simclr)")
    p.add_argument("--encoder", default="resnet18", help="timm model name")
    p.add_argument("--small-stem", action=argparse.BooleanOptionalAction, default=True,
                   help="3x3 stride-1 stem without max-pool (ResNet-style encoders)")
    p.add_argument("--aug", choices=("device", "cpu", "both"), default="both",
                   help="device: DeviceAugmentation in on_after_batch_transfer; cpu: MultiViewTransform in workers")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers (default: min(8, cpu_count) on cuda, 1 on cpu)")
    p.add_argument("--dataset", default="synthetic", help=f"synthetic or a MedMNIST flag {MEDMNIST_FLAGS}")
    p.add_argument("--root", default="../shared/data/medmnist", help="folder holding <flag>.npz")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="channels of synthetic images (default 3) / conversion of real ones (default: keep)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="synthetic images (default: enough for one run without an epoch boundary, <= 1 GiB)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder in place (both paths)")
    p.add_argument("--matmul-precision", choices=("highest", "high", "medium"), default=None,
                   help="torch.set_float32_matmul_precision (TF32 for 32-true on Ampere+)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the main process (CPU runs; 1 often wins on a loaded machine)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--bare-check-finite", action="store_true",
                   help="bare loop also runs SSLMethod._check_finite after backward (one host-device sync "
                        "per step, as the Trainer path does): isolates that cost")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="keep Lightning's info messages and warnings")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        p.error("--warmup, --steps and --rounds must be >= 1")
    names = {k.lower(): k for k in METHODS}
    if args.method.lower() not in names:
        p.error(f"unknown --method {args.method!r}; valid: {sorted(METHODS)}")
    args.method = names[args.method.lower()]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.verbose:
        warnings.filterwarnings("ignore")
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    if args.num_workers is None:
        args.num_workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 1
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.matmul_precision:
        torch.set_float32_matmul_precision(args.matmul_precision)
    torch.manual_seed(args.seed)

    # data --------------------------------------------------------------------------------------
    augs = ("device", "cpu") if args.aug == "both" else (args.aug,)
    recipe = args.recipe or ("dino" if args.method == "DINO" else "simclr")
    synthetic = None
    if args.dataset == "synthetic":
        args.channels = args.channels or 3
        per_image = args.channels * args.image_size**2
        n = args.num_samples or min(args.batch_size * (args.warmup + args.steps + 1), max(args.batch_size, 2**30 // per_image))
        synthetic = synthetic_images(n, args.channels, args.image_size, args.seed)
        data_desc = f"synthetic uint8 {n} x {args.channels} x {args.image_size} x {args.image_size} (in memory)"
        dataset, channels = "medmnist", None  # a name without preset statistics; _load_raw is replaced
    elif args.dataset in MEDMNIST_FLAGS:
        dataset, channels = args.dataset, args.channels
        data_desc = f"{args.dataset} train split from {args.root} (resized to {args.image_size} px)"
    else:
        raise SystemExit(f"--dataset must be 'synthetic' or a MedMNIST flag {MEDMNIST_FLAGS}")

    dms: dict[str, BenchDataModule] = {}
    for aug in augs:
        dm = BenchDataModule(
            dataset=dataset, root=args.root, recipe=recipe, image_size=args.image_size,
            device_augmentation=aug == "device", channels=channels, batch_size=args.batch_size,
            num_workers=args.num_workers, seed=args.seed, drop_last=True,
        )
        dm.synthetic = synthetic
        dm.channels_last = args.channels_last
        dm.setup("fit")
        dms[aug] = dm
    first = next(iter(dms.values()))
    in_chans = int(first.num_channels or args.channels or 3)
    num_views = len(first.view_specs())

    # model -------------------------------------------------------------------------------------
    encoder = TimmEncoder(args.encoder, in_chans=in_chans, small_stem=args.small_stem)
    model = METHODS[args.method](encoder, **json.loads(args.method_kwargs))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model.encoder.compile()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    memory = PeakMemory(device)

    print(f"# lightning_ssl throughput: Trainer vs bare PyTorch loop ({_dt.datetime.now():%Y-%m-%d %H:%M})")
    print(f"machine   : {describe_machine(device, load=False)}")
    print(f"software  : python {platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}")
    print(f"model     : {args.method} + TimmEncoder({args.encoder!r}, small_stem={args.small_stem}, in_chans={in_chans}),"
          f" {n_params / 1e6:.2f} M trainable parameters, optimizer {model.hparams.optimizer}")
    print(f"data      : {data_desc}; recipe {recipe} ({num_views} views); batch {args.batch_size}; "
          f"{args.num_workers} worker(s)")
    print(f"settings  : device {device}, precision {args.precision}, channels_last {args.channels_last}, "
          f"compile {args.compile}, warmup {args.warmup} + {args.steps} timed steps x {args.rounds} rounds")
    print(f"timing    : wall time of {args.steps} full steps after warm-up (Trainer: callback "
          f"on_train_batch_end to on_train_batch_end), cuda-synchronized on GPU; order alternates per round")
    print(f"memory    : {memory.label}")
    print(flush=True)

    # measure -----------------------------------------------------------------------------------
    results: dict[tuple[str, str], list[Result]] = defaultdict(list)
    runners = {"trainer": run_trainer, "bare": run_bare}
    for r in range(args.rounds):
        order = ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")
        for aug in augs:
            for path in order:
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                res = runners[path](model, dms[aug], args, device, memory)
                results[(aug, path)].append(res)
                ips = args.batch_size * args.steps / res.seconds
                print(f"round {r + 1}/{args.rounds}  aug={aug:<6} {path:<7} {ips:10.1f} img/s  "
                      f"{1000 * res.seconds / args.steps:8.1f} ms/step  peak {res.peak_mib:8.0f} MiB", flush=True)

    # report ------------------------------------------------------------------------------------
    def ips(res: Result) -> float:
        return args.batch_size * args.steps / res.seconds

    summary: dict[str, tuple[float, float, float, str]] = {}
    for aug in augs:
        t = [ips(x) for x in results[(aug, "trainer")]]
        b = [ips(x) for x in results[(aug, "bare")]]
        pairs = [ti / bi for ti, bi in zip(t, b)]
        paired = statistics.median(pairs)
        of_medians = statistics.median(t) / statistics.median(b)
        overhead = (1.0 / paired - 1.0) * 100.0
        verdict = "met" if overhead < TARGET_OVERHEAD_PCT else "NOT met"
        if len(pairs) == 1:
            verdict += " (one round only)"
        elif (max(pairs) - min(pairs)) * 100.0 > TARGET_OVERHEAD_PCT:
            verdict = (f"inconclusive: per-round ratios span {min(pairs):.3f}-{max(pairs):.3f}, wider than "
                       "the target; use more rounds/steps or a quieter machine")
        summary[aug] = (paired, of_medians, overhead, verdict)

    print()
    header = (f"| {'aug':<6} | {'path':<7} | {'img/s (median)':>14} | {'min - max':>17} | {'ms/step':>8} | "
              f"{'peak MiB':>8} | {'trainer/bare':>12} | {'overhead':>8} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for aug in augs:
        for path in ("trainer", "bare"):
            rs = results[(aug, path)]
            v = [ips(x) for x in rs]
            med = statistics.median(v)
            ratio = f"{summary[aug][0]:12.3f}" if path == "trainer" else f"{'':12}"
            over = f"{summary[aug][2]:+7.1f}%" if path == "trainer" else f"{'':8}"
            print(f"| {aug:<6} | {path:<7} | {med:14.1f} | {min(v):8.1f} - {max(v):6.1f} | "
                  f"{1000 * args.batch_size / med:8.1f} | {max(x.peak_mib for x in rs):8.0f} | {ratio} | {over} |")
    print()
    print("trainer/bare: median over rounds of (trainer img/s / bare img/s) of the same round; overhead = "
          "1 / ratio - 1, the Trainer's extra time per step relative to the bare loop.")
    for aug, (paired, of_medians, overhead, verdict) in summary.items():
        print(f"aug={aug:<6} trainer/bare {paired:.3f} (ratio of medians {of_medians:.3f}), overhead "
              f"{overhead:+.1f}% [target < {TARGET_OVERHEAD_PCT:.0f}%: {verdict}]")
    if len(augs) == 2:
        d = statistics.median([ips(x) for x in results[("device", "trainer")]])
        c = statistics.median([ips(x) for x in results[("cpu", "trainer")]])
        print(f"Trainer, device aug / CPU-worker aug = {d / c:.2f}x ({d:.1f} vs {c:.1f} img/s, "
              f"{args.num_workers} worker(s))")
    if device.type == "cuda":
        best = max(statistics.median([ips(x) for x in results[(aug, "trainer")]]) for aug in augs)
        print(f"GPU goal (ResNet-18 small stem, 32 px, 2 views, bf16, device aug): >= {GPU_GOAL_IMG_S:,} img/s "
              f"through the Trainer; best here {best:,.0f} img/s")
    else:
        print(f"Target: Trainer overhead < {TARGET_OVERHEAD_PCT:.0f}% of the bare loop. CPU numbers on a shared "
              f"machine are noisy; the GPU goal (>= {GPU_GOAL_IMG_S:,} img/s) needs --device cuda.")


if __name__ == "__main__":
    main()
