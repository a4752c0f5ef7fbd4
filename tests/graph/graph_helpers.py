"""Shared helpers of tests/graph: the read-only Cora root, tiny encoders, small synthetic graphs, a CPU trainer."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from torch_geometric.data import Data

REPO_ROOT = Path(__file__).resolve().parents[2]
PLANETOID = REPO_ROOT.parent / "shared" / "data" / "planetoid"
CORA_RAW = PLANETOID / "Cora" / "raw"

CORA_NODES, CORA_FEATURES, CORA_CLASSES = 2708, 1433, 7


def cora_dm(cache_dir: Any, **kwargs: Any):
    """A GraphDataModule over the shared (read-only) Cora with its processed files in ``cache_dir``."""
    from lightning_ssl.data import GraphDataModule

    assert CORA_RAW.is_dir(), f"real data missing: {CORA_RAW} (the shared folder must sit beside the repo)"
    return GraphDataModule("Cora", root=str(PLANETOID), cache_dir=str(cache_dir), **kwargs)


def tiny_gnn(in_channels: int = CORA_FEATURES, width: int = 16, num_layers: int = 2, conv: str = "gcn", **kwargs: Any):
    from lightning_ssl.encoders import GNNEncoder

    return GNNEncoder(conv, in_channels=in_channels, hidden_channels=width, out_channels=width,
                      num_layers=num_layers, **kwargs)


def random_graph(num_nodes: int = 60, num_features: int = 8, num_edges: int = 240, num_classes: int | None = 3,
                 seed: int = 0, positive: bool = True) -> Data:
    """A small undirected random graph (plumbing only); strictly positive features when ``positive``."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=g)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=g)
    keep = src != dst
    ei = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
    x = torch.rand(num_nodes, num_features, generator=g) + (0.1 if positive else -0.5)
    data = Data(x=x, edge_index=ei)
    if num_classes:
        data.y = torch.randint(0, num_classes, (num_nodes,), generator=g)
    return data


def fake_trainer(training: bool = True, world_size: int = 1, global_rank: int = 0) -> SimpleNamespace:
    """What ``GraphDataModule.on_after_batch_transfer`` reads from its trainer."""
    return SimpleNamespace(training=training, world_size=world_size, global_rank=global_rank)


def make_trainer(**kwargs: Any) -> L.Trainer:
    args: dict[str, Any] = dict(
        accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )
    args.update(kwargs)
    return L.Trainer(**args)


def listing(root: Path) -> list[tuple[str, int, int]]:
    """Recursive listing of ``root``: (relative path, size, mtime_ns) of every entry."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)
