"""Neighbour-sampled mini-batches of one large graph, with or without PyG's compiled samplers.

Layer-wise neighbour sampling as introduced by GraphSAGE (W. L. Hamilton, R. Ying, J. Leskovec, "Inductive
Representation Learning on Large Graphs", NeurIPS 2017, arXiv:1706.02216): for a batch of seed nodes, every
node of the current frontier draws a fixed number of its in-neighbours uniformly without replacement, the
newly reached nodes form the next frontier, and an ``L``-layer GNN run on the union of the sampled edges
computes exact outputs for the seeds given the sampled neighbourhoods.

PyG implements this in :class:`torch_geometric.loader.NeighborLoader`, which needs the compiled operators of
``pyg-lib`` or ``torch-sparse``. Where neither can be installed, :class:`TorchNeighborSampler` does the same
sampling in vectorised plain PyTorch (same semantics as ``NeighborLoader`` with ``directed=True``,
``replace=False``, ``disjoint=False``), and :class:`NeighborBatchCollator` wraps either backend as the
``collate_fn`` of an ordinary :class:`torch.utils.data.DataLoader` over seed node ids, so that Lightning can
inject a ``DistributedSampler`` and the batches carry the same fields whichever backend ran.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

__all__ = ["NeighborBatchCollator", "SampledSubgraph", "TorchNeighborSampler", "has_compiled_sampler"]

BACKENDS = ("auto", "torch", "pyg")


def has_compiled_sampler() -> bool:
    """True when ``pyg-lib`` or ``torch-sparse`` is importable, i.e. when PyG's ``NeighborLoader`` can run."""
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


def _check_num_neighbors(num_neighbors: Sequence[int]) -> list[int]:
    if isinstance(num_neighbors, (str, bytes)) or not isinstance(num_neighbors, Sequence):
        raise TypeError(
            f"num_neighbors must be a sequence of ints (one fan-out per layer, e.g. [15, 10]), got {num_neighbors!r}"
        )
    if len(num_neighbors) == 0:
        raise ValueError("num_neighbors is empty: give one fan-out per layer, e.g. [15, 10] for two layers")
    out = []
    for i, k in enumerate(num_neighbors):
        try:
            if isinstance(k, bool):
                raise TypeError
            k = operator.index(k)
        except TypeError:
            raise TypeError(
                f"num_neighbors[{i}] must be an int (a positive fan-out or -1 for all neighbours), got {k!r}"
            ) from None
        if k <= 0 and k != -1:
            raise ValueError(
                f"num_neighbors[{i}] must be a positive int or -1 (= all neighbours), got {k}"
            )
        out.append(k)
    return out


def _as_seed_tensor(seeds: Any) -> Tensor:
    """Seeds as a 1-D integer tensor: from a 1-D/0-dim tensor or a list of ints or 0-dim tensors."""
    if isinstance(seeds, Tensor):
        t = seeds.reshape(1) if seeds.dim() == 0 else seeds
    elif isinstance(seeds, (list, tuple, range)):
        if len(seeds) == 0:
            return torch.empty(0, dtype=torch.long)
        if all(isinstance(s, Tensor) for s in seeds):
            if any(s.numel() != 1 for s in seeds):
                raise ValueError("seeds given as a list of tensors must hold one node id per tensor")
            t = torch.stack([s.reshape(()) for s in seeds])
        else:
            t = torch.tensor(list(seeds))
    else:
        raise TypeError(f"seeds must be a 1-D tensor or a list of node ids, got {type(seeds).__name__}")
    if t.dim() != 1:
        raise ValueError(f"seeds must be a 1-D tensor of node ids, got shape {list(t.shape)}")
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"seeds must be integer node ids, got dtype {t.dtype}")
    return t.long()


@dataclass
class SampledSubgraph:
    """One sampled subgraph (local ids index into ``n_id``).

    Attributes:
        n_id: global ids of the sampled nodes; the seeds first, then each hop's new nodes.
        edge_index: ``[2, num_sampled_edges]`` local edges, row = source, col = destination (flow source_to_target).
        e_id: the original edge id (column of the input ``edge_index``) of each sampled edge.
        batch_size: number of seeds.
        num_sampled_nodes: nodes per hop, ``[batch_size, new nodes of hop 1, ...]`` (``len(num_neighbors) + 1``).
        num_sampled_edges: edges sampled per layer (``len(num_neighbors)``).
    """

    n_id: Tensor
    edge_index: Tensor
    e_id: Tensor
    batch_size: int
    num_sampled_nodes: list[int]
    num_sampled_edges: list[int]


class TorchNeighborSampler:
    """GraphSAGE neighbour sampling in plain, vectorised PyTorch (no ``pyg-lib``/``torch-sparse`` needed).

    Semantics of PyG's ``NeighborLoader(directed=True, replace=False, disjoint=False)``: layer by layer, each
    frontier node keeps ``min(deg, k)`` of its in-neighbours drawn uniformly without replacement (all of them
    when ``deg <= k`` or ``k == -1``); nodes reached for the first time are appended to ``n_id`` in order of
    first appearance and form the next frontier. Within one destination the kept neighbours are listed in
    CSC order (the order of their edges in the input ``edge_index``).

    The graph is stored once in CSC form (``colptr``, ``row``, ``perm``: O(E) int64); one ``sample`` call costs
    O(sampled neighbourhood * max fan-out), independent of the graph size and of the nodes' degrees (Floyd's
    exact sampling without replacement). The node relabelling uses one reusable ``num_nodes`` int64 buffer
    reset only where it was touched, so an instance must not be used by several threads at once (a lock
    serialises that); DataLoader worker processes each get their own copy.

    Args:
        edge_index: ``[2, E]`` int64 or int32 tensor; edge ``j -> i`` is the column ``(j, i)``.
        num_nodes: number of nodes; every id must lie in ``[0, num_nodes)``.
        num_neighbors: fan-out per layer, each a positive int or ``-1`` (all neighbours).
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, num_neighbors: Sequence[int]) -> None:
        if not isinstance(edge_index, Tensor):
            raise TypeError(f"edge_index must be a torch.Tensor of shape [2, num_edges], got {type(edge_index).__name__}")
        if edge_index.dtype not in (torch.int64, torch.int32):
            raise TypeError(
                f"edge_index must be an integer tensor (torch.int64 or torch.int32), got {edge_index.dtype}; "
                "convert it with edge_index.long()"
            )
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            hint = ""
            if edge_index.dim() == 2 and edge_index.size(1) == 2:
                hint = "; it looks like [num_edges, 2]: pass edge_index.t().contiguous()"
            raise ValueError(f"edge_index must have shape [2, num_edges], got {list(edge_index.shape)}{hint}")
        try:
            if isinstance(num_nodes, bool):
                raise TypeError
            num_nodes = operator.index(num_nodes)
        except TypeError:
            raise TypeError(f"num_nodes must be an int, got {num_nodes!r}") from None
        if num_nodes < 0:
            raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
        self.num_neighbors = _check_num_neighbors(num_neighbors)
        self.num_nodes = num_nodes
        num_edges = edge_index.size(1)
        if num_edges > 0:
            lo, hi = int(edge_index.min()), int(edge_index.max())
            if lo < 0:
                raise ValueError(
                    f"edge_index contains the negative node id {lo}: ids must lie in [0, num_nodes={num_nodes}); "
                    "remap the node ids to 0..num_nodes-1 or drop those edges"
                )
            if hi >= num_nodes:
                raise ValueError(
                    f"edge_index contains the node id {hi} but num_nodes is {num_nodes}: ids must lie in "
                    f"[0, num_nodes); pass num_nodes >= {hi + 1} or drop the edges that point past the last node"
                )
        device = edge_index.device
        # CSC: edges sorted by destination (stable, so each node's in-edges keep their input order).
        dst = edge_index[1]
        self.perm = torch.argsort(dst, stable=True).long()
        counts = torch.bincount(dst.long() if dst.dtype != torch.int64 else dst, minlength=num_nodes)
        self.colptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=device)
        torch.cumsum(counts, dim=0, out=self.colptr[1:])
        del counts, dst
        self.row = edge_index[0].index_select(0, self.perm).long()
        self._local: Tensor | None = None
        self._lock = threading.Lock()

    @property
    def num_edges(self) -> int:
        """Number of edges of the graph."""
        return self.row.numel()

    def nbytes(self) -> int:
        """Bytes held by the CSC structure (``colptr``, ``row``, ``perm``) and the relabelling buffer."""
        n = sum(t.numel() * t.element_size() for t in (self.colptr, self.row, self.perm))
        return n + (self.num_nodes * 8)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_local"] = None  # rebuilt lazily: no need to ship num_nodes * 8 bytes of -1
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _buffer(self) -> Tensor:
        if self._local is None:
            self._local = torch.full((self.num_nodes,), -1, dtype=torch.long, device=self.colptr.device)
        return self._local

    def _check_seeds(self, seeds: Tensor) -> Tensor:
        seeds = _as_seed_tensor(seeds).to(self.colptr.device)
        if seeds.numel() > 0:
            lo, hi = int(seeds.min()), int(seeds.max())
            if lo < 0 or hi >= self.num_nodes:
                bad = lo if lo < 0 else hi
                raise ValueError(f"seed node id {bad} is out of range: seeds must lie in [0, num_nodes={self.num_nodes})")
        return seeds

    def _choose(self, deg: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        """For each degree ``d > k``: ``k`` distinct offsets in ``[0, d)``, uniform over k-subsets (Floyd), sorted."""
        n = deg.numel()
        # Floyd: for j = d-k, ..., d-1 draw t uniform in [0, j]; keep t, or j when t was kept already.
        j = deg.unsqueeze(1) + torch.arange(-k, 0, device=deg.device)  # [n, k]
        u = torch.rand((n, k), generator=generator, dtype=torch.float64, device=deg.device)
        t = torch.minimum((u * (j + 1)).long(), j)
        chosen = t.clone()
        for i in range(1, k):
            taken = (chosen[:, :i] == t[:, i : i + 1]).any(dim=1)
            chosen[:, i] = torch.where(taken, j[:, i], t[:, i])
        return chosen.sort(dim=1).values

    def sample(self, seeds: Tensor, generator: torch.Generator | None = None) -> SampledSubgraph:
        """Sample the ``len(num_neighbors)``-hop neighbourhood of ``seeds`` (unique global node ids).

        Args:
            seeds: 1-D integer tensor (or list) of distinct node ids; they come first in ``n_id``, in this order.
            generator: optional ``torch.Generator`` for reproducible draws.
        """
        seeds = self._check_seeds(seeds)
        device = self.colptr.device
        batch_size = seeds.numel()
        with self._lock:
            local = self._buffer()
            touched = [seeds]  # every buffer entry written, reset in `finally`
            parts = [seeds]  # n_id, hop by hop
            try:
                arange_b = torch.arange(batch_size, device=device)
                local[seeds] = arange_b
                if batch_size and not torch.equal(local[seeds], arange_b):
                    uniq, counts = torch.unique(seeds, return_counts=True)
                    dup = uniq[counts > 1][:10].tolist()
                    raise ValueError(f"seeds must be unique node ids, got duplicates {dup}; deduplicate the batch")
                n_total = batch_size
                frontier, frontier_start = seeds, 0
                num_sampled_nodes, num_sampled_edges = [batch_size], []
                rows, cols, eids = [], [], []
                for k in self.num_neighbors:
                    n_front = frontier.numel()
                    if n_front == 0:
                        num_sampled_nodes.append(0)
                        num_sampled_edges.append(0)
                        continue
                    start = self.colptr[frontier]
                    deg = self.colptr[frontier + 1] - start
                    take = deg if k < 0 else deg.clamp(max=k)
                    ptr = torch.cumsum(take, dim=0)
                    total = int(ptr[-1])
                    ptr = ptr - take  # exclusive prefix sum: where each destination's block starts
                    seg = torch.repeat_interleave(torch.arange(n_front, device=device), take, output_size=total)
                    offset = torch.arange(total, device=device) - ptr[seg]
                    if k > 0:
                        big = (deg > k).nonzero().view(-1)
                        if big.numel() > 0:
                            slots = (ptr[big].unsqueeze(1) + torch.arange(k, device=device)).view(-1)
                            offset[slots] = self._choose(deg[big], k, generator).view(-1)
                    pos = start[seg] + offset
                    src = self.row[pos]
                    eids.append(self.perm[pos])
                    cols.append(seg + frontier_start)
                    # New nodes in order of first appearance, deduplicated through the buffer in O(#sampled).
                    cand = src[local[src] < 0]
                    if cand.numel() > 0:
                        order = torch.arange(cand.numel(), device=device)
                        touched.append(cand)
                        local[cand] = cand.numel()
                        local.scatter_reduce_(0, cand, order, reduce="amin")
                        new = cand[local[cand] == order]
                        parts.append(new)
                        local[new] = torch.arange(n_total, n_total + new.numel(), device=device)
                    else:
                        new = cand
                    rows.append(local[src])
                    frontier, frontier_start = new, n_total
                    n_total += new.numel()
                    num_sampled_nodes.append(new.numel())
                    num_sampled_edges.append(total)
                n_id = torch.cat(parts)
            finally:
                for t in touched:
                    local[t] = -1
        empty = torch.empty(0, dtype=torch.long, device=device)
        row = torch.cat(rows) if rows else empty
        col = torch.cat(cols) if cols else empty
        return SampledSubgraph(
            n_id=n_id,
            edge_index=torch.stack([row, col]),
            e_id=torch.cat(eids) if eids else empty,
            batch_size=batch_size,
            num_sampled_nodes=num_sampled_nodes,
            num_sampled_edges=num_sampled_edges,
        )


class NeighborBatchCollator:
    """``collate_fn`` turning a batch of seed node ids into a neighbour-sampled :class:`~torch_geometric.data.Data`.

    Use it with a plain ``DataLoader(torch.arange(num_nodes), batch_size=..., shuffle=True, collate_fn=...)`` so
    that Lightning can shard the seeds with a ``DistributedSampler``. The returned ``Data`` holds what PyG's
    ``NeighborLoader`` returns: node-level attributes sliced by ``n_id``, local ``edge_index``, edge-level
    attributes sliced by ``e_id``, and ``n_id``, ``e_id``, ``batch_size``, ``input_id`` (the seed ids),
    ``num_sampled_nodes``, ``num_sampled_edges``; the first ``batch_size`` nodes are the seeds.

    Args:
        data: the whole graph (``edge_index`` and node/edge attributes).
        num_neighbors: fan-out per layer, each a positive int or ``-1`` (all neighbours).
        backend: ``"torch"`` (:class:`TorchNeighborSampler`), ``"pyg"`` (``NeighborLoader``'s compiled sampler,
            needs ``pyg-lib`` or ``torch-sparse``) or ``"auto"`` (``"pyg"`` when available, else ``"torch"``).
            The backend chosen is ``self.backend``.
    """

    def __init__(self, data: Data, num_neighbors: Sequence[int], backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}: choose one of {', '.join(repr(b) for b in BACKENDS)}")
        if not isinstance(data, Data):
            raise TypeError(f"data must be a torch_geometric.data.Data, got {type(data).__name__}")
        if data.edge_index is None:
            raise ValueError("data has no edge_index: neighbour sampling needs the graph's edges")
        self.num_neighbors = _check_num_neighbors(num_neighbors)
        if backend == "auto":
            backend = "pyg" if has_compiled_sampler() else "torch"
        if backend == "pyg" and not has_compiled_sampler():
            raise ImportError(
                "backend='pyg' needs PyG's compiled neighbour sampler, from 'pyg-lib' or 'torch-sparse', and "
                "neither is installed; install one of them or use backend='torch' (or 'auto')"
            )
        self.data = data
        self.backend = backend
        self.sampler: TorchNeighborSampler | None = None
        self._loader: Any = None
        if backend == "torch":
            self.sampler = TorchNeighborSampler(data.edge_index, data.num_nodes, self.num_neighbors)
        else:
            self._loader = self._make_loader()

    def _make_loader(self) -> Any:
        from torch_geometric.loader import NeighborLoader

        return NeighborLoader(self.data, num_neighbors=list(self.num_neighbors), batch_size=1, filter_per_worker=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loader"] = None  # a DataLoader object does not travel; rebuilt on first use
        return state

    def __call__(self, seeds: list[int] | list[Tensor] | Tensor) -> Data:
        """Sample around ``seeds`` (distinct node ids) and return the subgraph with its features."""
        seeds = _as_seed_tensor(seeds)
        if self.backend == "pyg":
            if torch.unique(seeds).numel() != seeds.numel():
                raise ValueError("seeds must be unique node ids, got duplicates; deduplicate the batch")
            if self._loader is None:
                self._loader = self._make_loader()
            out = self._loader.collate_fn(seeds)
            return out if isinstance(out, Data) else self._loader.filter_fn(out)
        from torch_geometric.loader.utils import filter_data

        sub = self.sampler.sample(seeds)
        out = filter_data(self.data, sub.n_id, sub.edge_index[0], sub.edge_index[1], sub.e_id, None)
        if "n_id" not in out:
            out.n_id = sub.n_id
        if "e_id" not in out:
            out.e_id = sub.e_id
        out.num_sampled_nodes = sub.num_sampled_nodes
        out.num_sampled_edges = sub.num_sampled_edges
        out.input_id = seeds
        out.batch_size = sub.batch_size
        return out
