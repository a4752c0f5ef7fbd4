"""Neighbour sampling in plain PyTorch (``TorchNeighborSampler``) and its ``collate_fn`` wrapper.

Every sampled subgraph is replayed against a brute-force Python model of the graph (lists of in-edges per
node), so that the checks do not share code with the vectorised implementation.
"""

from __future__ import annotations

import itertools
import pickle
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Data

from lightning_ssl.data.graph_sampling import (
    NeighborBatchCollator,
    SampledSubgraph,
    TorchNeighborSampler,
    has_compiled_sampler,
)


def _random_graph(num_nodes: int, num_edges: int, seed: int, self_loops: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    if not self_loops:
        edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    return edge_index


def _in_edges(edge_index: torch.Tensor, num_nodes: int) -> list[list[int]]:
    """Brute force: for node i, the ids of the edges j -> i, in input order."""
    out: list[list[int]] = [[] for _ in range(num_nodes)]
    for e, (_, i) in enumerate(edge_index.t().tolist()):
        out[i].append(e)
    return out


def _check_subgraph(
    sub: SampledSubgraph, edge_index: torch.Tensor, num_nodes: int, seeds: list[int], num_neighbors: list[int]
) -> None:
    """Replay ``sub`` hop by hop against the brute-force in-edge lists; assert every documented property."""
    in_edges = _in_edges(edge_index, num_nodes)
    src_of, dst_of = edge_index[0].tolist(), edge_index[1].tolist()
    n_id = sub.n_id.tolist()
    row, col = sub.edge_index.tolist()
    e_id = sub.e_id.tolist()

    assert sub.batch_size == len(seeds)
    assert n_id[: len(seeds)] == seeds, "seeds must come first, in the given order"
    assert len(set(n_id)) == len(n_id), "a node appears twice in n_id"
    assert len(e_id) == len(set(e_id)), "an edge was sampled twice (replace=False)"
    assert len(row) == len(col) == len(e_id) == sum(sub.num_sampled_edges)
    assert len(sub.num_sampled_nodes) == len(num_neighbors) + 1
    assert len(sub.num_sampled_edges) == len(num_neighbors)
    assert sum(sub.num_sampled_nodes) == len(n_id)
    # Every local edge is an original edge, with the right endpoints.
    for r, c, e in zip(row, col, e_id):
        assert n_id[r] == src_of[e] and n_id[c] == dst_of[e]

    seen = set(seeds)
    node_lo, node_hi = 0, len(seeds)  # local ids of the current hop's frontier
    edge_lo = 0
    for layer, k in enumerate(num_neighbors):
        edge_hi = edge_lo + sub.num_sampled_edges[layer]
        by_dst: dict[int, list[int]] = {}
        new_nodes: list[int] = []
        for idx in range(edge_lo, edge_hi):
            assert node_lo <= col[idx] < node_hi, "layer edge whose destination is not in this hop's frontier"
            by_dst.setdefault(col[idx], []).append(e_id[idx])
            src = n_id[row[idx]]
            if src not in seen:
                seen.add(src)
                new_nodes.append(src)
        for local_dst in range(node_lo, node_hi):
            dst = n_id[local_dst]
            got = by_dst.get(local_dst, [])
            deg = len(in_edges[dst])
            assert set(got) <= set(in_edges[dst])
            want = deg if k == -1 else min(deg, k)
            assert len(got) == want, f"node {dst}: {len(got)} sampled in-edges, expected min(deg={deg}, k={k})"
            if k == -1 or deg <= k:
                assert sorted(got) == in_edges[dst], "all in-neighbours must be taken when deg <= k"
        # Newly reached nodes: appended in order of first appearance, and they are the next frontier.
        next_hi = node_hi + sub.num_sampled_nodes[layer + 1]
        assert n_id[node_hi:next_hi] == new_nodes
        node_lo, node_hi, edge_lo = node_hi, next_hi, edge_hi
    assert node_hi == len(n_id) and edge_lo == len(e_id)
    # The last hop's nodes were never expanded: they have no sampled in-edges.
    assert not any(node_lo <= c < node_hi for c in col)


def _bfs_all(edge_index: torch.Tensor, num_nodes: int, seeds: list[int], hops: int) -> tuple[list[int], list[int]]:
    """Brute-force reference when every fan-out exceeds every degree: the exact n_id and e_id, in order."""
    in_edges = _in_edges(edge_index, num_nodes)
    src_of = edge_index[0].tolist()
    n_id, seen, frontier, e_ids = list(seeds), set(seeds), list(seeds), []
    for _ in range(hops):
        new = []
        for dst in frontier:
            for e in in_edges[dst]:
                e_ids.append(e)
                if src_of[e] not in seen:
                    seen.add(src_of[e])
                    new.append(src_of[e])
        n_id += new
        frontier = new
    return n_id, e_ids


@pytest.mark.parametrize(
    ("num_nodes", "num_edges", "num_neighbors", "seed"),
    [(30, 90, [2, 2], 0), (50, 400, [5, 3, 2], 1), (40, 200, [-1, 3], 2), (25, 60, [1], 3), (60, 600, [4, -1], 4)],
)
def test_sampled_subgraph_matches_brute_force(num_nodes, num_edges, num_neighbors, seed) -> None:
    edge_index = _random_graph(num_nodes, num_edges, seed)
    sampler = TorchNeighborSampler(edge_index, num_nodes, num_neighbors)
    g = torch.Generator().manual_seed(seed)
    for trial in range(5):
        seeds = torch.randperm(num_nodes, generator=g)[: 3 + trial].tolist()
        sub = sampler.sample(torch.tensor(seeds), generator=g)
        _check_subgraph(sub, edge_index, num_nodes, seeds, num_neighbors)
    # The relabelling buffer is left clean after every call.
    assert bool((sampler._local == -1).all())


def test_sampled_degrees_hit_the_fan_out_on_a_dense_graph() -> None:
    # Every node has in-degree >= 20 > k, so every frontier node must keep exactly k in-edges.
    num_nodes = 40
    edge_index = torch.stack([torch.arange(num_nodes).repeat(20), torch.arange(num_nodes).repeat_interleave(20)])
    edge_index[0] = (edge_index[0] + 1 + torch.arange(edge_index.size(1)) % 7) % num_nodes
    sampler = TorchNeighborSampler(edge_index, num_nodes, [6, 4])
    sub = sampler.sample(torch.tensor([3, 0, 17]), generator=torch.Generator().manual_seed(0))
    _check_subgraph(sub, edge_index, num_nodes, [3, 0, 17], [6, 4])
    assert sub.num_sampled_edges[0] == 3 * 6
    assert sub.num_sampled_edges[1] == sub.num_sampled_nodes[1] * 4


def test_large_fan_out_equals_exhaustive_bfs() -> None:
    num_nodes = 35
    edge_index = _random_graph(num_nodes, 100, seed=7)
    seeds = [4, 11, 0]
    sub = TorchNeighborSampler(edge_index, num_nodes, [50, 50]).sample(torch.tensor(seeds))
    n_id, e_id = _bfs_all(edge_index, num_nodes, seeds, hops=2)
    assert sub.n_id.tolist() == n_id
    assert sub.e_id.tolist() == e_id
    sub_all = TorchNeighborSampler(edge_index, num_nodes, [-1, -1]).sample(torch.tensor(seeds))
    assert torch.equal(sub_all.n_id, sub.n_id) and torch.equal(sub_all.edge_index, sub.edge_index)


def test_isolated_seeds_and_int32_edges() -> None:
    # Nodes 5..9 have no edges at all; node 4 only has an out-edge.
    edge_index = torch.tensor([[0, 1, 2, 4], [1, 2, 0, 3]], dtype=torch.int32)
    sampler = TorchNeighborSampler(edge_index, 10, [3, 3])
    assert sampler.colptr.dtype == sampler.row.dtype == sampler.perm.dtype == torch.int64
    sub = sampler.sample(torch.tensor([7, 9, 5]))
    assert sub.n_id.tolist() == [7, 9, 5]
    assert sub.edge_index.shape == (2, 0) and sub.e_id.numel() == 0
    assert sub.num_sampled_nodes == [3, 0, 0] and sub.num_sampled_edges == [0, 0]
    sub = sampler.sample(torch.tensor([8, 3]))
    _check_subgraph(sub, edge_index.long(), 10, [8, 3], [3, 3])
    assert sub.n_id.tolist() == [8, 3, 4]  # 4 has no in-edges: hop 2 is empty
    # A graph without any edge.
    empty = TorchNeighborSampler(torch.empty(2, 0, dtype=torch.long), 4, [2])
    assert empty.sample(torch.tensor([1, 2])).n_id.tolist() == [1, 2]


def test_sampling_is_uniform_without_replacement() -> None:
    # Hub 0 with in-neighbours 1..10 and hub 11 with in-neighbours 12..15 (deg = k + 1), plus unrelated edges.
    hub_edges = torch.stack([torch.arange(1, 11), torch.zeros(10, dtype=torch.long)])
    small_hub = torch.stack([torch.arange(12, 16), torch.full((4,), 11)])
    other = torch.tensor([[0, 2, 5], [4, 7, 9]])
    edge_index = torch.cat([other, hub_edges, small_hub], dim=1)
    sampler = TorchNeighborSampler(edge_index, 16, [3])
    g = torch.Generator().manual_seed(1234)
    singles, pairs = Counter(), Counter()
    runs = 3000
    for _ in range(runs):
        sub = sampler.sample(torch.tensor([0, 11]), generator=g)
        picked = sub.n_id[2:].tolist()
        assert len(picked) == 6 == len(set(picked))
        hub = [n for n in picked if n <= 10]
        assert len(hub) == 3
        singles.update(picked)
        pairs.update(itertools.combinations(sorted(hub), 2))
    assert set(singles) == set(range(1, 11)) | set(range(12, 16))
    for node in range(1, 11):
        assert abs(singles[node] / runs - 0.3) < 0.3 * 0.3, (node, singles[node])  # expected 3/10 each
    for node in range(12, 16):
        assert abs(singles[node] / runs - 0.75) < 0.3 * 0.25, (node, singles[node])  # expected 3/4 each
    # Uniform over 3-subsets: each of the 45 pairs appears with probability 8/120.
    for pair in itertools.combinations(range(1, 11), 2):
        assert abs(pairs[pair] / runs - 8 / 120) < 0.3 * 8 / 120, (pair, pairs[pair])


def _toy_data(num_nodes: int = 45, num_edges: int = 180, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    edge_index = _random_graph(num_nodes, num_edges, seed)
    return Data(
        x=torch.randn(num_nodes, 5, generator=g),
        y=torch.randint(0, 3, (num_nodes,), generator=g),
        train_mask=torch.rand(num_nodes, generator=g) < 0.5,
        edge_index=edge_index,
        edge_attr=torch.randn(edge_index.size(1), 2, generator=g),
    )


def _check_batch(batch: Data, data: Data) -> None:
    assert torch.equal(batch.x, data.x[batch.n_id])
    assert torch.equal(batch.y, data.y[batch.n_id])
    assert torch.equal(batch.train_mask, data.train_mask[batch.n_id])
    assert torch.equal(batch.edge_attr, data.edge_attr[batch.e_id])
    glob = batch.n_id[batch.edge_index]
    assert torch.equal(glob, data.edge_index[:, batch.e_id])
    assert torch.equal(batch.input_id, batch.n_id[: batch.batch_size])
    assert isinstance(batch.batch_size, int)
    assert batch.num_nodes == batch.n_id.numel() == sum(batch.num_sampled_nodes)
    assert batch.edge_index.size(1) == sum(batch.num_sampled_edges)


def test_collator_batches_cover_every_node_once() -> None:
    data = _toy_data()
    collator = NeighborBatchCollator(data, [3, 2], backend="torch")
    assert collator.backend == "torch"
    loader = DataLoader(torch.arange(data.num_nodes), batch_size=7, shuffle=True, collate_fn=collator)
    seeds = []
    for batch in loader:
        _check_batch(batch, data)
        assert batch.batch_size <= 7
        seeds += batch.n_id[: batch.batch_size].tolist()
    assert sorted(seeds) == list(range(data.num_nodes))
    # Seeds as a list of ints (range dataset) and as a 1-D tensor.
    assert torch.equal(collator([4, 2, 9]).input_id, torch.tensor([4, 2, 9]))
    assert collator(torch.tensor([4, 2, 9])).n_id[:3].tolist() == [4, 2, 9]


def test_collator_pickles_and_runs_in_a_worker() -> None:
    data = _toy_data(seed=3)
    collator = NeighborBatchCollator(data, [3, 2], backend="torch")
    clone = pickle.loads(pickle.dumps(collator))
    _check_batch(clone([1, 2, 3]), data)
    loader = DataLoader(range(data.num_nodes), batch_size=7, collate_fn=collator, num_workers=1)
    seeds = []
    for batch in loader:
        _check_batch(batch, data)
        seeds += batch.input_id.tolist()
    assert seeds == list(range(data.num_nodes))


def test_bad_edge_index() -> None:
    ok = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"node id 7 but num_nodes is 3.*num_nodes >= 8"):
        TorchNeighborSampler(torch.tensor([[0, 7], [1, 2]]), 3, [2])
    with pytest.raises(ValueError, match="negative node id -1"):
        TorchNeighborSampler(torch.tensor([[0, -1], [1, 2]]), 3, [2])
    with pytest.raises(TypeError, match=r"integer tensor.*torch.float32.*edge_index.long\(\)"):
        TorchNeighborSampler(ok.float(), 3, [2])
    with pytest.raises(ValueError, match=r"shape \[2, num_edges\], got \[3, 2\]"):
        TorchNeighborSampler(torch.zeros(3, 2, dtype=torch.long), 3, [2])
    with pytest.raises(ValueError, match=r"got \[5, 2\].*looks like \[num_edges, 2\].*\.t\(\)"):
        TorchNeighborSampler(torch.zeros(5, 2, dtype=torch.long), 3, [2])
    with pytest.raises(ValueError, match=r"got \[6\]"):
        TorchNeighborSampler(torch.zeros(6, dtype=torch.long), 3, [2])


@pytest.mark.parametrize(
    ("num_neighbors", "error", "fragment"),
    [
        ([0], ValueError, r"num_neighbors\[0\] must be a positive int or -1 \(= all neighbours\), got 0"),
        ([3, -2], ValueError, r"num_neighbors\[1\] must be a positive int or -1.*got -2"),
        ([], ValueError, "num_neighbors is empty"),
        ([2.5], TypeError, r"num_neighbors\[0\] must be an int"),
        (5, TypeError, "num_neighbors must be a sequence"),
    ],
)
def test_bad_fan_outs(num_neighbors, error, fragment) -> None:
    edge_index = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(error, match=fragment):
        TorchNeighborSampler(edge_index, 3, num_neighbors)
    with pytest.raises(error, match=fragment):
        NeighborBatchCollator(Data(edge_index=edge_index, num_nodes=3), num_neighbors, backend="torch")


def test_bad_seeds() -> None:
    sampler = TorchNeighborSampler(torch.tensor([[0, 1, 2], [1, 2, 3]]), 4, [2])
    with pytest.raises(ValueError, match=r"seeds must be unique node ids, got duplicates \[1\]"):
        sampler.sample(torch.tensor([1, 3, 1]))
    assert bool((sampler._local == -1).all()), "a failed call must leave the buffer clean"
    with pytest.raises(ValueError, match="seed node id 4 is out of range"):
        sampler.sample(torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="integer node ids"):
        sampler.sample(torch.tensor([0.0, 1.0]))
    assert sampler.sample(torch.tensor([2, 1])).n_id.tolist() == [2, 1, 0]


def test_backend_errors() -> None:
    data = _toy_data()
    with pytest.raises(ValueError, match=r"Unknown backend 'cuda'.*'auto', 'torch', 'pyg'"):
        NeighborBatchCollator(data, [2], backend="cuda")
    auto = NeighborBatchCollator(data, [2])
    assert auto.backend == ("pyg" if has_compiled_sampler() else "torch")
    if not has_compiled_sampler():
        with pytest.raises(ImportError, match=r"pyg-lib.*torch-sparse.*backend='torch'"):
            NeighborBatchCollator(data, [2], backend="pyg")


@pytest.mark.skipif(not has_compiled_sampler(), reason="needs pyg-lib or torch-sparse for PyG's NeighborLoader")
def test_torch_and_pyg_backends_agree() -> None:
    data = _toy_data(num_nodes=80, num_edges=300, seed=5)
    seeds = torch.tensor([5, 70, 1, 33, 12])
    deterministic = [100, 100]  # above every degree: both backends must take every in-neighbour
    torch.manual_seed(0)
    out = {b: NeighborBatchCollator(data, deterministic, backend=b)(seeds) for b in ("torch", "pyg")}
    t, p = out["torch"], out["pyg"]
    assert t.batch_size == p.batch_size == 5
    assert torch.equal(t.n_id[:5], seeds) and torch.equal(p.n_id[:5], seeds)
    assert torch.equal(t.input_id, p.input_id)
    assert list(t.num_sampled_nodes) == list(p.num_sampled_nodes)
    assert list(t.num_sampled_edges) == list(p.num_sampled_edges)
    assert set(t.n_id.tolist()) == set(p.n_id.tolist())
    assert set(t.e_id.tolist()) == set(p.e_id.tolist())
    for b in (t, p):
        _check_batch(b, data)
    for sampled in ([4, 2], [3, 3]):
        t = NeighborBatchCollator(data, sampled, backend="torch")(seeds)
        p = NeighborBatchCollator(data, sampled, backend="pyg")(seeds)
        assert set(t.keys()) == set(p.keys())
        for key in t.keys():
            if isinstance(t[key], torch.Tensor):
                assert t[key].dim() == p[key].dim() and t[key].dtype == p[key].dtype, key
                assert t[key].shape[1:] == p[key].shape[1:], key
        assert len(t.num_sampled_nodes) == len(p.num_sampled_nodes) == 3
        assert t.num_sampled_edges[0] == p.num_sampled_edges[0]  # hop 1 depends on the seeds' degrees only


def test_medium_graph_sample_size_bounds() -> None:
    num_nodes, num_edges = 200_000, 4_000_000
    g = torch.Generator().manual_seed(0)
    edge_index = torch.empty(2, num_edges, dtype=torch.long).random_(0, num_nodes, generator=g)
    sampler = TorchNeighborSampler(edge_index, num_nodes, [15, 10])
    assert sampler.colptr.numel() == num_nodes + 1 and sampler.row.numel() == num_edges
    seeds = torch.randperm(num_nodes, generator=g)[:1024]
    sub = sampler.sample(seeds, generator=g)
    assert sub.n_id.numel() <= 1024 * (1 + 15 + 150)
    assert sub.num_sampled_edges[0] <= 1024 * 15
    assert sub.num_sampled_edges[1] <= sub.num_sampled_nodes[1] * 10
    assert torch.equal(sub.n_id[:1024], seeds)
    assert sub.n_id.unique().numel() == sub.n_id.numel()
    assert torch.equal(sub.n_id[sub.edge_index], edge_index[:, sub.e_id])
    # Average in-degree 20 > 15: almost every seed keeps exactly 15 in-edges.
    deg = sampler.colptr[seeds + 1] - sampler.colptr[seeds]
    assert sub.num_sampled_edges[0] == int(deg.clamp(max=15).sum())
