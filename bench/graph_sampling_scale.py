#!/usr/bin/env python
"""Neighbour-sampled GraphSAGE training at the scale of ogbn-products (a benchmark, not a test).

Builds a synthetic graph with the size of ogbn-products (2,449,029 nodes, 61,859,140 directed edges, 100
float32 features, 47 classes): uniform random edges from ``torch.randint``-style draws with a fixed seed,
written in place chunk by chunk so that peak memory stays near the size of the graph itself. It then wraps
the graph in ``NeighborBatchCollator(backend="auto")`` (PyG's compiled sampler where ``pyg-lib`` or
``torch-sparse`` is installed, else the plain-PyTorch ``TorchNeighborSampler``) as the ``collate_fn`` of a
``DataLoader`` over shuffled seed node ids, and times ``--steps`` steps of: sample a 2-hop neighbourhood of
``--batch-size`` seeds with fan-outs [15, 10], then forward + backward + Adam step of a 2-layer GraphSAGE
(hidden 256) on the sampled subgraph, cross-entropy on the seeds. ``--warmup`` untimed steps come first.

Printed: machine, backend, graph build time (edges + features) and collator build time (CSC), graph memory
(bytes of x + edge_index + the sampler's CSC), peak RSS (``ru_maxrss``, process lifetime) and RSS before and
after the training loop, seconds per step (mean / median, and split into sampling and training), and nodes
and edges per sampled subgraph. Everything runs in the main process (``num_workers=0``).

    python -m bench.graph_sampling_scale                     # full size: a few minutes, ~8 GiB RAM
    python -m bench.graph_sampling_scale --nodes 200000 --edges 4000000 --steps 5   # quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Data
from torch_geometric.nn.models import GraphSAGE

from lightning_ssl.data.graph_sampling import NeighborBatchCollator, has_compiled_sampler

try:
    from bench.machine import describe_machine
except ImportError:  # run as a plain script from another folder
    describe_machine = None

OGBN_PRODUCTS = {"nodes": 2_449_029, "edges": 61_859_140, "features": 100, "classes": 47}
CHUNK = 1 << 23  # 8M edges / rows per in-place random fill


def rss_bytes() -> int:
    """Resident set size of this process now (``VmRSS``), or -1 where ``/proc`` is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def peak_rss_bytes() -> int:
    """Peak RSS over the process lifetime (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 0 else "n/a"


def nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def build_graph(num_nodes: int, num_edges: int, num_features: int, num_classes: int, seed: int) -> Data:
    """Random directed graph, features and labels, generated in chunks (no full-size temporaries)."""
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.empty(2, num_edges, dtype=torch.long)
    for start in range(0, num_edges, CHUNK):
        edge_index[:, start:start + CHUNK].random_(0, num_nodes, generator=g)
    x = torch.empty(num_nodes, num_features, dtype=torch.float32)
    rows = max(1, CHUNK // max(num_features, 1))
    for start in range(0, num_nodes, rows):
        x[start:start + rows].normal_(generator=g)
    y = torch.randint(0, num_classes, (num_nodes,), generator=g)
    return Data(x=x, y=y, edge_index=edge_index, num_nodes=num_nodes)


def csc_bytes(collator: NeighborBatchCollator) -> int:
    """Bytes of the sampler's CSC structure (colptr, row, edge permutation), whichever backend holds it."""
    if collator.sampler is not None:
        s = collator.sampler
        return nbytes(s.colptr, s.row, s.perm)
    node_sampler = getattr(collator._loader, "node_sampler", None)
    if node_sampler is None:
        return -1
    return nbytes(getattr(node_sampler, "colptr", None), getattr(node_sampler, "row", None),
                  getattr(node_sampler, "perm", None))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=OGBN_PRODUCTS["nodes"])
    p.add_argument("--edges", type=int, default=OGBN_PRODUCTS["edges"])
    p.add_argument("--features", type=int, default=OGBN_PRODUCTS["features"])
    p.add_argument("--classes", type=int, default=OGBN_PRODUCTS["classes"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-neighbors", type=int, nargs="+", default=[15, 10])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(describe_machine() if describe_machine is not None else f"torch threads: {torch.get_num_threads()}")
    print(f"torch {torch.__version__}; compiled PyG sampler (pyg-lib/torch-sparse): {has_compiled_sampler()}")
    rss0 = rss_bytes()

    t0 = time.perf_counter()
    data = build_graph(args.nodes, args.edges, args.features, args.classes, args.seed)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    collator = NeighborBatchCollator(data, args.num_neighbors, backend="auto")
    csc_s = time.perf_counter() - t0
    graph_mem = nbytes(data.x, data.edge_index)
    csc_mem = csc_bytes(collator)

    loader = DataLoader(torch.arange(args.nodes), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        collate_fn=collator, generator=torch.Generator().manual_seed(args.seed))
    model = GraphSAGE(args.features, args.hidden, num_layers=len(args.num_neighbors), out_channels=args.classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    rss_before = rss_bytes()
    sample_s, train_s, step_s, nodes, edges, losses = [], [], [], [], [], []
    it = iter(loader)
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = model(batch.x, batch.edge_index)[: batch.batch_size]
        loss = torch.nn.functional.cross_entropy(out, batch.y[: batch.batch_size])
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if step >= args.warmup:
            sample_s.append(t1 - t0)
            train_s.append(t2 - t1)
            step_s.append(t2 - t0)
            nodes.append(batch.num_nodes)
            edges.append(batch.edge_index.size(1))
            losses.append(loss.item())
    rss_after = rss_bytes()

    mean, med = statistics.mean, statistics.median
    rows = [
        ("graph", f"{args.nodes:,} nodes, {args.edges:,} edges, {args.features} float32 features, "
                  f"{args.classes} classes"),
        ("sampler backend", f"{collator.backend}; batch {args.batch_size} seeds, fan-outs {args.num_neighbors}"),
        ("graph build (edges + x + y)", f"{build_s:.1f} s"),
        ("collator build (CSC)", f"{csc_s:.1f} s"),
        ("graph memory x + edge_index", gib(graph_mem)),
        ("graph memory CSC (colptr,row,perm)", gib(csc_mem)),
        ("graph memory total", gib(graph_mem + max(csc_mem, 0))),
        ("RSS at start", gib(rss0)),
        ("RSS before training loop", gib(rss_before)),
        ("RSS after training loop", gib(rss_after)),
        ("peak RSS (ru_maxrss, lifetime)", gib(peak_rss_bytes())),
        ("timed steps (after warm-up)", f"{args.steps} (+{args.warmup} warm-up)"),
        ("s/step mean / median", f"{mean(step_s):.3f} / {med(step_s):.3f}"),
        ("  sampling + collate mean / median", f"{mean(sample_s):.3f} / {med(sample_s):.3f}"),
        ("  GraphSAGE fwd+bwd+Adam mean / median", f"{mean(train_s):.3f} / {med(train_s):.3f}"),
        ("nodes per step mean (min-max)", f"{mean(nodes):,.0f} ({min(nodes):,}-{max(nodes):,})"),
        ("edges per step mean", f"{mean(edges):,.0f}"),
        ("seed nodes / s", f"{args.batch_size / mean(step_s):,.0f}"),
        ("loss first -> last", f"{losses[0]:.3f} -> {losses[-1]:.3f}"),
        ("load average at the end (1 min)", f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    print(f"{'metric':<{width}} | value")
    print(f"{'-' * width}-+-{'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}} | {value}")


if __name__ == "__main__":
    main()
