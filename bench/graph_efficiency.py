#!/usr/bin/env python
"""Graph SSL efficiency: full-batch vs neighbour-sampled training (a benchmark, not a test).

Part 1 (default): Cora. For every graph method (rows ``grace, bgrl, gbt, cca_ssg, dgi, graphmae``, the configs
``configs/graph/<row>_cora.yaml``) and both training modes, one configuration runs in a FRESH SUBPROCESS:

* the config is instantiated through the CLI exactly as ``lightning-ssl fit --config ...`` would
  (``lightning_ssl.cli.SSLCLI(args=[...], run=False)``), with these overrides only:
  ``--trainer.callbacks []`` (no RankMe / probes / kNN / ModelCheckpoint / EarlyStopping: their cost is
  not training cost, and ModelCheckpoint monitors ``rankme``, which would not exist without validation),
  ``--trainer.enable_checkpointing false``, ``--trainer.limit_val_batches 0``,
  ``--trainer.num_sanity_val_steps 0``, ``--trainer.logger false``, no progress bar / model summary,
  ``--trainer.max_epochs 1 + --epochs``, and the data root / cache dir;
* ``full``: the config's own ``mode: full`` (the whole graph every step, ``steps_per_epoch`` steps);
  ``neighbor``: ``--data.init_args.mode neighbor --data.init_args.num_neighbors [k, ...]`` with one fan-out
  ``k = --fanout`` per message-passing hop (``model.encoder.num_layers`` + ``model.extra_hops`` read from the
  instantiated model: GraphMAE's decoder adds a hop, DGI has
  1 layer, the others 2) and ``--data.init_args.batch_size --batch-size`` seeds (drawn from all nodes, every
  node a seed at most once per epoch, the last partial batch dropped);
* epoch 0 is a warm-up and is not timed; ``--epochs`` epochs are timed. ``s/epoch`` is the mean interval
  between consecutive ``on_train_epoch_end`` calls of a callback (``torch.cuda.synchronize()`` first on
  GPU), so it includes creating the epoch's data iterator, sampling, views, forward, backward, optimizer
  and every Lightning hook of the epoch;
* ``nodes/s``: seed nodes per second in neighbor mode (``SSLBatch.mask.sum()``), all nodes of the graph per
  step in full mode; ``nodes/step``: nodes of the (sub)graph encoded per step (per view);
* memory. CPU: ``peak RSS`` is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child process
  (process lifetime: imports, dataset load, training); ``RSS@train`` is ``VmRSS`` at ``on_train_start``
  (after datamodule set-up and loader creation); ``train peak`` is the kernel's ``VmHWM`` over the training
  loop only, reset at ``on_train_start`` through ``/proc/self/clear_refs`` (``n/a`` where Linux refuses).
  GPU (``--accelerator gpu``): ``torch.cuda.max_memory_allocated()``, reset right before ``trainer.fit``.

Part 2 (``--products``): neighbour-sampled training at the scale of ogbn-products (2,449,029 nodes,
61,859,140 directed edges, 100 float32 features, 47 classes; random graph, fixed seed, built in chunks with
``bench.graph_sampling_scale.build_graph``) through the library path a user would write:
``GraphDataModule.from_data(data, mode="neighbor", num_neighbors=[15, 10], batch_size=1024, views=GRACE's,
normalize_features=False, split="random")`` + ``SimCLR(GNNEncoder(conv="sage", 100 -> 256 -> 128), small
projector 128-128, temperature 0.5)`` + ``lightning.Trainer(max_steps=--products-steps, limit_val_batches=0,
logger=False, enable_checkpointing=False)``. The same run on a 4x smaller graph (nodes and edges / 4, same
average degree) runs next to it, each in its own subprocess, so that the memory held by the graph and the
memory added per training step can be told apart. Memory phases are measured with ``VmHWM`` reset at each
boundary (``/proc/self/clear_refs``): graph build, Trainer start-up + ``datamodule.setup``, loader creation
(``train_dataloader`` and the sampler's CSC), training loop. The report also says whether the datamodule's graph
and the train loader's graph share storage with the ``Data`` given to ``from_data`` or are copies of it
(compared by ``data_ptr``), i.e. how many copies of the features and edges the process holds.

Examples::

    python bench/graph_efficiency.py --root ../shared/data/planetoid --epochs 2 --rows grace,dgi,graphmae
    python bench/graph_efficiency.py --root ../shared/data/planetoid --accelerator gpu --out graph_eff.md
    python bench/graph_efficiency.py --products                        # full size, ~10 min on 2 cores
    python bench/graph_efficiency.py --products --products-scale 0.05 --products-steps 5   # quick look
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.machine import describe_machine  # noqa: E402

CONFIGS = REPO / "configs" / "graph"
ROWS = ["grace", "bgrl", "gbt", "cca_ssg", "dgi", "graphmae"]
OGBN_PRODUCTS = {"nodes": 2_449_029, "edges": 61_859_140, "features": 100, "classes": 47}
RESULT_TAG = "GRAPH_EFFICIENCY_RESULT "
MIB = 2**20


# ---------------------------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    """Resident set size now (``VmRSS``), -1 where ``/proc`` is unavailable."""
    return _status_kib("VmRSS:") * 1024


def hwm_bytes() -> int:
    """Peak RSS since the last :func:`reset_hwm` (``VmHWM``), -1 where unavailable."""
    return _status_kib("VmHWM:") * 1024


def _status_kib(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def reset_hwm() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``/proc/self/clear_refs``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def lifetime_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def nbytes(*tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def mib(n: float | None) -> str:
    return "n/a" if n is None or n < 0 else f"{n / MIB:,.0f}"


def gib(n: float | None) -> str:
    return "n/a" if n is None or n < 0 else f"{n / 2**30:.2f} GiB"


def quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


# ============================================================================================ part 1: Cora
def _cora_argv(spec: dict, fanouts: list[int] | None) -> list[str]:
    argv = ["--config", str(CONFIGS / f"{spec['row']}_cora.yaml"), "--seed_everything", str(spec["seed"]),
            "--data.init_args.root", spec["root"], "--data.init_args.cache_dir", spec["cache_dir"],
            "--trainer.default_root_dir", spec["workdir"], "--trainer.logger", "false",
            "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", spec["accelerator"], "--trainer.devices", "1",
            "--trainer.max_epochs", str(1 + spec["epochs"])]
    if spec["mode"] == "neighbor":
        argv += ["--data.init_args.mode", "neighbor", "--data.init_args.batch_size", str(spec["batch_size"]),
                 "--data.init_args.num_neighbors", json.dumps(fanouts or [spec["fanout"]] * 2)]
    return argv


def cora_child(spec: dict) -> dict:
    """One (method, mode) configuration; runs in its own process (peak RSS is per process)."""
    quiet()
    import lightning as L

    from lightning_ssl.cli import SSLCLI

    cuda = spec["accelerator"] == "gpu"

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.t_start = 0.0
            self.ends: list[float] = []
            self.steps: list[int] = []
            self.seeds: list[int] = []
            self.nodes: list[int] = []
            self.rss_train_start = -1
            self.hwm_ok = False

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.rss_train_start = rss_bytes()
            self.peak_before_train = lifetime_peak_bytes()  # read before the reset below, which also resets it
            self.hwm_ok = reset_hwm()
            _sync(cuda)
            self.t_start = time.perf_counter()

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._steps = self._seeds = self._nodes = 0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            n = int(batch.views[0].num_nodes)  # views are made in on_after_batch_transfer, before this hook
            self._steps += 1
            self._nodes += n
            self._seeds += int(batch.mask.sum()) if batch.mask is not None else n

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            _sync(cuda)
            self.ends.append(time.perf_counter())
            self.steps.append(self._steps)
            self.seeds.append(self._seeds)
            self.nodes.append(self._nodes)

    rss_imports = rss_bytes()
    fanouts = [spec["fanout"]] * 2 if spec["mode"] == "neighbor" else None
    cli = SSLCLI(args=_cora_argv(spec, fanouts), run=False)
    # one fan-out per message-passing hop (encoder layers + GraphMAE's decoder hop): rebuild with the right count
    layers = int(getattr(cli.model.encoder, "num_layers", 2)) + int(getattr(cli.model, "extra_hops", 0))
    if spec["mode"] == "neighbor" and layers != len(fanouts):
        fanouts = [spec["fanout"]] * layers
        cli = SSLCLI(args=_cora_argv(spec, fanouts), run=False)
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    _sync(cuda)
    fit_s = time.perf_counter() - t0
    train_hwm = hwm_bytes() if timer.hwm_ok else -1
    dm = cli.datamodule
    timed = [b - a for a, b in zip(timer.ends[:-1], timer.ends[1:])]  # epochs 1..E (epoch 0 = warm-up)
    if len(timed) != spec["epochs"]:
        raise RuntimeError(f"expected {spec['epochs']} timed epochs after the warm-up, got {len(timed)} "
                           f"(epoch ends recorded: {len(timer.ends)}); did something stop training early?")
    seeds = sum(timer.seeds[1:])
    steps = timer.steps[1:]
    return dict(
        row=spec["row"], method=type(cli.model).__name__, mode=dm.mode,
        fanouts=list(dm.num_neighbors) if dm.mode == "neighbor" else None,
        batch=int(dm.batch_size) if dm.mode == "neighbor" else int(dm.graph.num_nodes),
        num_nodes=int(dm.graph.num_nodes), num_edges=int(dm.graph.num_edges), encoder_layers=layers,
        encoder=str(getattr(cli.model.encoder, "conv_type", type(cli.model.encoder).__name__)),
        epochs_timed=len(timed), epoch_s=timed, s_per_epoch=statistics.mean(timed),
        s_per_epoch_median=statistics.median(timed), warmup_epoch_s=timer.ends[0] - timer.t_start,
        nodes_per_s=seeds / sum(timed), steps_per_epoch=statistics.mean(steps),
        nodes_per_step=sum(timer.nodes[1:]) / max(1, sum(steps)), seeds_per_epoch=seeds / len(timed),
        fit_s=fit_s, rss_after_imports=rss_imports, rss_train_start=timer.rss_train_start,
        train_peak_rss=train_hwm, peak_rss=max(timer.peak_before_train, lifetime_peak_bytes()),
        peak_gpu=torch.cuda.max_memory_allocated() if cuda else None,
        sampler_backend=getattr(dm, "sampler_backend", None),
    )


def run_child(kind: str, spec: dict, timeout: float | None) -> dict:
    """Run ``kind`` (cora | products) with ``spec`` in a fresh interpreter; the result, or an error record."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", kind, json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))
    except subprocess.TimeoutExpired as e:
        err = (e.stderr or b"")
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        return dict(spec, error=f"timed out after {timeout} s\n{err[-4000:]}")
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            out = json.loads(line[len(RESULT_TAG):])
            out["wall_s_child"] = time.perf_counter() - t0
            return out
    return dict(spec, error=f"exit code {proc.returncode}\n{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}")


def cora_tables(results: list[dict], gpu: bool) -> str:
    lines = ["| method | mode | fan-outs | batch | s/epoch | nodes/s | peak RSS MiB | RSS@train MiB | "
             "train peak RSS MiB | peak GPU MiB | steps/epoch | nodes/step |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['mode']} | FAILED (see below) | | | | | | | | | |")
            continue
        fo = "-" if r["fanouts"] is None else str(r["fanouts"])
        lines.append(
            f"| {r['row']} ({r['method']}) | {r['mode']} | {fo} | {r['batch']} | {r['s_per_epoch']:.4f} | "
            f"{r['nodes_per_s']:,.0f} | {mib(r['peak_rss'])} | {mib(r['rss_train_start'])} | "
            f"{mib(r['train_peak_rss'])} | {mib(r['peak_gpu']) if gpu else 'n/a'} | {r['steps_per_epoch']:g} | "
            f"{r['nodes_per_step']:,.0f} |")
    lines += ["", "Ratio neighbor / full (same method):", "",
              "| method | s/epoch | nodes/s | peak RSS | train peak RSS | peak GPU |", "|---|---:|---:|---:|---:|---:|"]
    by = {(r["row"], r["mode"]): r for r in results if "error" not in r}
    for row in dict.fromkeys(r["row"] for r in results):
        f, n = by.get((row, "full")), by.get((row, "neighbor"))
        if f is None or n is None:
            lines.append(f"| {row} | n/a | n/a | n/a | n/a | n/a |")
            continue

        def ratio(key: str) -> str:
            a, b = n.get(key), f.get(key)
            return "n/a" if a is None or b is None or a < 0 or b <= 0 else f"{a / b:.2f}x"

        lines.append(f"| {row} ({f['method']}) | {ratio('s_per_epoch')} | {ratio('nodes_per_s')} | {ratio('peak_rss')} | "
                     f"{ratio('train_peak_rss')} | {ratio('peak_gpu') if gpu else 'n/a'} |")
    errors = [r for r in results if "error" in r]
    for r in errors:
        lines += ["", f"**{r['row']} / {r['mode']} failed:**", "", "```", r["error"].strip(), "```"]
    return "\n".join(lines)


def run_cora(args: argparse.Namespace, device: torch.device) -> tuple[str, list[dict]]:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    rows = args.rows.split(",")
    header = (f"# Graph SSL efficiency on Cora: full-batch vs neighbour-sampled training\n\n"
              f"{describe_machine(device)}\n"
              f"torch {torch.__version__}; {_dt.datetime.now().isoformat(timespec='seconds')}; "
              f"{args.epochs} timed epochs after 1 warm-up epoch; neighbor: batch {args.batch_size} seeds, "
              f"fan-out {args.fanout} per encoder layer; trainer callbacks off, no validation, no logger\n")
    print(header, flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="graph_eff_") as tmp:
        cache = args.cache_dir or os.path.join(tmp, "cache")
        # process Cora once in the parent, so that no child pays (or holds memory for) the raw-file parsing
        from lightning_ssl.data.graph import load_graph_dataset

        load_graph_dataset("Cora", args.root, cache)
        for row in rows:
            for mode in ("full", "neighbor"):
                spec = dict(row=row, mode=mode, root=args.root, cache_dir=cache,
                            workdir=os.path.join(tmp, f"{row}_{mode}"),
                            accelerator=accelerator, epochs=args.epochs, batch_size=args.batch_size,
                            fanout=args.fanout, seed=args.seed)
                r = run_child("cora", spec, args.timeout)
                results.append(r)
                if "error" in r:
                    print(f"  {row:9s} {mode:8s} FAILED: {r['error'].strip().splitlines()[-1]}", flush=True)
                else:
                    print(f"  {r['method']:11s} {mode:8s} {r['s_per_epoch']:.4f} s/epoch  "
                          f"{r['nodes_per_s']:,.0f} nodes/s  "
                          f"peak RSS {mib(r['peak_rss'])} MiB  steps/epoch {r['steps_per_epoch']:g}  "
                          f"(child {r['wall_s_child']:.0f} s)", flush=True)
    notes = ("\nMemory: `peak RSS` = `ru_maxrss` (RUSAGE_SELF) of the child process that ran the configuration "
             "(lifetime: imports + dataset + training; read before and after the clear_refs reset at on_train_start, "
             "which also resets it, and maximised); `RSS@train` = VmRSS at `on_train_start`; `train peak RSS` = "
             "VmHWM over the training loop only (reset through /proc/self/clear_refs at `on_train_start`). "
             "`peak GPU` = torch.cuda.max_memory_allocated (reset before fit). nodes/s counts seed nodes "
             "(neighbor) or all nodes per step (full); nodes/step = nodes of the encoded (sub)graph per view.\n")
    text = header + "\n" + cora_tables(results, device.type == "cuda") + "\n" + notes
    return text, results


# ======================================================================================= part 2: products
def _build_graph(nodes: int, edges: int, features: int, classes: int, seed: int) -> Any:
    """``bench.graph_sampling_scale.build_graph``: the chunked random fill shared by both products benchmarks."""
    from bench.graph_sampling_scale import build_graph

    return build_graph(nodes, edges, features, classes, seed), "bench.graph_sampling_scale.build_graph"


def products_child(spec: dict) -> dict:
    quiet()
    import lightning as L

    from lightning_ssl.data.graph import GraphDataModule, GraphView
    from lightning_ssl.encoders import GNNEncoder
    from lightning_ssl.methods import SimCLR

    cuda = spec["accelerator"] == "gpu"
    torch.manual_seed(spec["seed"])
    hwm_ok = reset_hwm()
    phases: dict[str, dict] = {}
    lifetime = [lifetime_peak_bytes()]

    def phase(name: str) -> None:
        """Close a memory phase: RSS now and the peak since the previous boundary (then reset the peak)."""
        phases[name] = dict(rss=rss_bytes(), peak=hwm_bytes() if hwm_ok else -1, t=time.perf_counter())
        lifetime.append(lifetime_peak_bytes())  # the clear_refs reset also resets what ru_maxrss reports
        reset_hwm()

    phase("imports")
    t0 = time.perf_counter()
    data, builder = _build_graph(spec["nodes"], spec["edges"], spec["features"], spec["classes"], spec["seed"])
    build_s = time.perf_counter() - t0
    phase("graph built")
    given_bytes = nbytes(data.x, data.edge_index, data.y)

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.t_start = 0.0
            self.starts: list[float] = []
            self.ends: list[float] = []
            self.nodes: list[int] = []
            self.edges: list[int] = []
            self.seeds: list[int] = []
            self.rss_steps: list[int] = []

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            phase("datamodule.setup")  # callbacks' setup runs right after the datamodule's setup

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            phase("optimizers + train_dataloader")  # configure_optimizers reads the loader: sampler CSC

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            phase("until on_train_start")
            _sync(cuda)
            self.t_start = time.perf_counter()

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            _sync(cuda)
            self.starts.append(time.perf_counter())
            self.nodes.append(int(batch.views[0].num_nodes))
            self.edges.append(int(batch.views[0].num_edges))
            self.seeds.append(int(batch.mask.sum()) if batch.mask is not None else self.nodes[-1])

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            _sync(cuda)
            self.ends.append(time.perf_counter())
            self.rss_steps.append(rss_bytes())

    encoder = GNNEncoder(conv="sage", in_channels=spec["features"], hidden_channels=256, out_channels=128,
                         num_layers=2, activation="relu")
    model = SimCLR(encoder, proj_hidden_dim=128, proj_out_dim=128, proj_layers=2, proj_batch_norm=False,
                   temperature=0.5, optimizer="adam", lr=1e-3, weight_decay=0.0, warmup_epochs=0, min_lr_factor=1.0)
    dm = GraphDataModule.from_data(
        data, mode="neighbor", num_neighbors=spec["fanouts"], batch_size=spec["batch_size"],
        views=[GraphView(drop_edge=0.2, mask_feature=0.3), GraphView(drop_edge=0.4, mask_feature=0.4)],
        normalize_features=False, split="random", split_seed=spec["seed"])
    timer = StepTimer()
    trainer = L.Trainer(max_steps=spec["steps"], limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator=spec["accelerator"], devices=1, callbacks=[timer],
                        default_root_dir=spec["workdir"])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_fit = time.perf_counter()
    trainer.fit(model, dm)
    _sync(cuda)
    phase("training loop")
    fit_s = time.perf_counter() - t_fit

    # what holds the graph now: the given Data, the datamodule's graph, the train loader's graph (+ CSC);
    # copies or shared storage, compared by data_ptr
    loader = trainer.train_dataloader
    collate = getattr(loader, "collate_fn", None)
    collator = getattr(collate, "sampler", None)  # NeighborBatchCollator
    loader_graph = getattr(collator, "data", None)
    sampler = getattr(collator, "sampler", None)  # TorchNeighborSampler (None for the PyG backend)
    csc = nbytes(getattr(sampler, "colptr", None), getattr(sampler, "row", None), getattr(sampler, "perm", None))
    relabel = nbytes(getattr(sampler, "_local", None))
    holders = {"given Data": data, "datamodule.graph": dm.graph, "train loader graph": loader_graph}
    seen: dict[int, str] = {}
    copies = []
    for name, g in holders.items():
        if g is None:
            continue
        ptrs = [g.x.data_ptr(), g.edge_index.data_ptr()]
        shared = [seen[p] for p in ptrs if p in seen]
        for p in ptrs:
            seen.setdefault(p, name)
        copies.append(dict(holder=name, bytes=nbytes(g.x, g.edge_index, getattr(g, "y", None)),
                           shares_storage_with=sorted(set(shared))))
    distinct = sum(c["bytes"] for c in copies if not c["shares_storage_with"])

    step_s = [b - a for a, b in zip(timer.ends[:-1], timer.ends[1:])]  # steps 2..N (batch-end to batch-end)
    data_s = [s - e for e, s in zip(timer.ends[:-1], timer.starts[1:])]  # sample + collate + views
    comp_s = [e - s for s, e in zip(timer.starts[1:], timer.ends[1:])]  # forward + backward + optimizer + hooks
    p = phases
    return dict(
        nodes=spec["nodes"], edges=spec["edges"], features=spec["features"], classes=spec["classes"],
        avg_degree=spec["edges"] / spec["nodes"], builder=builder, backend=getattr(collator, "backend", None),
        fanouts=spec["fanouts"], batch_size=spec["batch_size"], steps=len(timer.ends), build_s=build_s,
        setup_s=p["datamodule.setup"]["t"] - t_fit,
        loader_s=p["optimizers + train_dataloader"]["t"] - p["datamodule.setup"]["t"],
        first_step_s=timer.ends[0] - timer.t_start if timer.ends else None, fit_s=fit_s,
        step_s=step_s, step_mean=statistics.mean(step_s) if step_s else None,
        step_median=statistics.median(step_s) if step_s else None,
        data_mean=statistics.mean(data_s) if data_s else None, compute_mean=statistics.mean(comp_s) if comp_s else None,
        nodes_mean=statistics.mean(timer.nodes), nodes_min=min(timer.nodes), nodes_max=max(timer.nodes),
        edges_view1_mean=statistics.mean(timer.edges), seeds_mean=statistics.mean(timer.seeds),
        given_bytes=given_bytes, csc_bytes=csc, relabel_buffer_bytes=relabel, copies=copies,
        graph_bytes_distinct=distinct + csc + relabel,
        rss_imports=p["imports"]["rss"], rss_graph=p["graph built"]["rss"], peak_build=p["graph built"]["peak"],
        rss_after_setup=p["datamodule.setup"]["rss"], peak_setup=p["datamodule.setup"]["peak"],
        rss_after_loader=p["optimizers + train_dataloader"]["rss"],
        peak_loader=p["optimizers + train_dataloader"]["peak"],
        rss_train_start=p["until on_train_start"]["rss"], peak_train=p["training loop"]["peak"],
        rss_end=p["training loop"]["rss"], rss_steps=timer.rss_steps,
        train_increase=(p["training loop"]["peak"] - p["until on_train_start"]["rss"]) if hwm_ok else None,
        peak_lifetime=max(lifetime), hwm_ok=hwm_ok,
        peak_gpu=torch.cuda.max_memory_allocated() if cuda else None,
    )


def products_table(results: list[dict], gpu: bool) -> str:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return "all products runs failed"
    head = "| metric | " + " | ".join(f"{r['nodes']:,} nodes / {r['edges']:,} edges" for r in ok) + " |"
    lines = [head, "|---|" + "---:|" * len(ok)]

    def row(name: str, fn: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(fn(r) for r in ok) + " |")

    f3 = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    row("average degree", lambda r: f"{r['avg_degree']:.2f}")
    row("sampler backend", lambda r: str(r["backend"]))
    row("graph build (edges + x + y) s", lambda r: f"{r['build_s']:.1f}")
    row("Trainer start-up + datamodule.setup s", lambda r: f"{r['setup_s']:.1f}")
    row("configure_optimizers + train_dataloader (sampler CSC) s", lambda r: f"{r['loader_s']:.1f}")
    row("bytes of the given graph (x + edge_index + y)", lambda r: gib(r["given_bytes"]))
    row("bytes of the sampler CSC (colptr + row + perm)", lambda r: gib(r["csc_bytes"]))
    row("bytes of the sampler relabel buffer", lambda r: gib(r["relabel_buffer_bytes"]))
    row("graph objects held (x + edge_index + y each; = means same storage)",
        lambda r: "; ".join(f"{c['holder']} {gib(c['bytes'])}" + (f" (= {', '.join(c['shares_storage_with'])})"
                                                                   if c["shares_storage_with"] else "")
                            for c in r["copies"]))
    row("graph bytes held in total (distinct copies + CSC + buffer)", lambda r: gib(r["graph_bytes_distinct"]))
    row("RSS after imports", lambda r: gib(r["rss_imports"]))
    row("RSS after building the graph", lambda r: gib(r["rss_graph"]))
    row("  peak while building", lambda r: gib(r["peak_build"]))
    row("RSS after datamodule.setup", lambda r: gib(r["rss_after_setup"]))
    row("  peak during fit start-up + setup", lambda r: gib(r["peak_setup"]))
    row("RSS after train_dataloader (at on_fit_start)", lambda r: gib(r["rss_after_loader"]))
    row("  peak while building the loader + CSC", lambda r: gib(r["peak_loader"]))
    row("RSS at on_train_start", lambda r: gib(r["rss_train_start"]))
    row("peak RSS during training (VmHWM, training loop only)", lambda r: gib(r["peak_train"]))
    row("RSS increase during training (peak - RSS at on_train_start)",
        lambda r: "n/a" if r["train_increase"] is None else f"{r['train_increase'] / MIB:,.0f} MiB")
    row("RSS at the end", lambda r: gib(r["rss_end"]))
    row("peak RSS, process lifetime (ru_maxrss, max over phases)", lambda r: gib(r["peak_lifetime"]))
    if gpu:
        row("peak GPU (max_memory_allocated)", lambda r: gib(r["peak_gpu"]))
    row("steps run (s/step is over steps 2..N)", lambda r: str(r["steps"]))
    row("first step s (incl. iterator start)", lambda r: f3(r["first_step_s"]))
    row("s/step mean / median (steps 2..N)", lambda r: f"{f3(r['step_mean'])} / {f3(r['step_median'])}")
    row("  data: sample + collate + 2 views, mean s", lambda r: f3(r["data_mean"]))
    row("  compute: fwd + bwd + Adam + hooks, mean s", lambda r: f3(r["compute_mean"]))
    row("seed nodes / s", lambda r: "n/a" if not r["step_mean"] else f"{r['seeds_mean'] / r['step_mean']:,.0f}")
    row("nodes per subgraph mean (min-max)",
        lambda r: f"{r['nodes_mean']:,.0f} ({r['nodes_min']:,}-{r['nodes_max']:,})")
    row("edges per subgraph, view 1 (after 20% drop), mean", lambda r: f"{r['edges_view1_mean']:,.0f}")
    return "\n".join(lines)


def run_products(args: argparse.Namespace, device: torch.device) -> tuple[str, list[dict]]:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    n = max(100, int(round(OGBN_PRODUCTS["nodes"] * args.products_scale)))
    e = max(100, int(round(OGBN_PRODUCTS["edges"] * args.products_scale)))
    sizes = [(n, e), (n // 4, e // 4)]
    header = (f"# Neighbour-sampled SimCLR/GRACE training at ogbn-products scale (synthetic graph)\n\n"
              f"{describe_machine(device)}\n"
              f"torch {torch.__version__}; {_dt.datetime.now().isoformat(timespec='seconds')}; "
              f"GraphDataModule.from_data(mode=neighbor, num_neighbors={args.products_fanouts}, "
              f"batch_size={args.products_batch_size}, views drop_edge 0.2/0.4 + mask_feature 0.3/0.4, "
              f"normalize_features=False, split=random) + SimCLR(GNNEncoder sage 100-256-128, projector 128-128, "
              f"tau 0.5, Adam 1e-3) + Trainer(max_steps={args.products_steps}, limit_val_batches=0, logger=False, "
              f"checkpointing off); each graph size in its own process\n")
    print(header, flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="graph_eff_products_") as tmp:
        for nodes, edges in sizes[::-1]:  # the small graph first: a quick failure costs less
            spec = dict(nodes=nodes, edges=edges, features=OGBN_PRODUCTS["features"], classes=OGBN_PRODUCTS["classes"],
                        fanouts=args.products_fanouts, batch_size=args.products_batch_size, steps=args.products_steps,
                        accelerator=accelerator, seed=args.seed, workdir=os.path.join(tmp, str(nodes)))
            print(f"  running {nodes:,} nodes / {edges:,} edges ...", flush=True)
            r = run_child("products", spec, args.timeout)
            if "error" in r:
                print(f"  FAILED: {r['error'].strip().splitlines()[-1]}", flush=True)
            else:
                print(f"  done in {r['wall_s_child']:.0f} s: {r['step_mean']:.3f} s/step, peak RSS during training "
                      f"{gib(r['peak_train'])}, lifetime peak {gib(r['peak_lifetime'])}", flush=True)
            results.append(r)
    results = results[::-1]
    notes = ("\nMemory: RSS = VmRSS; each `peak` is VmHWM between two boundaries, reset through /proc/self/clear_refs "
             "(graph build | Trainer start-up + datamodule.setup | configure_optimizers + train_dataloader | training "
             "loop); the lifetime peak is ru_maxrss read at every boundary (the clear_refs reset also resets it) and "
             "maximised. Step times are batch-end to batch-end "
             "(the first step, which includes starting the loader iterator, is excluded from mean/median); `data` is "
             "the gap between the previous step's end and this step's start (sampling, collation, device views), "
             "`compute` the rest.\n")
    text = header + "\n" + products_table(results, device.type == "cuda") + "\n" + notes
    for r in results:
        if "error" in r:
            text += f"\n**{r['nodes']:,} nodes failed:**\n\n```\n{r['error'].strip()}\n```\n"
    return text, results


# ================================================================================================== main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_child"]:
        kind, spec = argv[1], json.loads(argv[2])
        out = cora_child(spec) if kind == "cora" else products_child(spec)
        print(RESULT_TAG + json.dumps(out), flush=True)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/planetoid", help="folder holding Cora/raw (read-only is fine)")
    p.add_argument("--cache-dir", default=None, help="processed-file cache (default: a temporary folder)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ",".join(ROWS))
    p.add_argument("--epochs", type=int, default=3, help="timed epochs, after 1 untimed warm-up epoch")
    p.add_argument("--batch-size", type=int, default=512, help="seed nodes per batch in neighbor mode")
    p.add_argument("--fanout", type=int, default=10, help="neighbours sampled per node per layer in neighbor mode")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=None, help="seconds per configuration (child process)")
    p.add_argument("--products", action="store_true", help="run part 2 (ogbn-products-sized graph) instead of Cora")
    p.add_argument("--products-steps", type=int, default=20, help="Trainer max_steps per graph size")
    p.add_argument("--products-batch-size", type=int, default=1024)
    p.add_argument("--products-fanouts", type=int, nargs="+", default=[15, 10])
    p.add_argument("--products-scale", type=float, default=1.0,
                   help="fraction of ogbn-products' nodes and edges for the large graph (the small one is 1/4 of it)")
    p.add_argument("--out", default=None, help="write the Markdown report here (and a .json beside it)")
    args = p.parse_args(argv)
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; valid: {', '.join(ROWS)}")
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if len(args.products_fanouts) != 2:
        p.error("--products-fanouts needs 2 values (the encoder has 2 layers)")
    quiet()
    want_gpu = args.accelerator in ("gpu", "cuda") or (args.accelerator == "auto" and torch.cuda.is_available())
    if want_gpu and not torch.cuda.is_available():
        p.error("--accelerator gpu but torch.cuda.is_available() is False")
    device = torch.device("cuda" if want_gpu else "cpu")
    text, results = run_products(args, device) if args.products else run_cora(args, device)
    print("\n" + text, flush=True)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            dict(argv=argv, machine=describe_machine(device), results=results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
