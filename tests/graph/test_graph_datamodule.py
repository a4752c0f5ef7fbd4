"""GraphDataModule on the real Cora (read-only shared root) and on small hand-made graphs.

Loading and caching, feature normalisation, node splits, the loaders' labels, the device views made in
``on_after_batch_transfer``, neighbour-sampled batches, the DDP row sharding of full mode, the link split.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from graph_helpers import (
    CORA_CLASSES,
    CORA_FEATURES,
    CORA_NODES,
    CORA_RAW,
    PLANETOID,
    cora_dm,
    fake_trainer,
    listing,
    random_graph,
)
from lightning_ssl.data import GraphDataModule, GraphView, SSLBatch
from lightning_ssl.data.graph import assert_no_edge_leak, load_graph_dataset


@pytest.fixture(scope="module")
def cora_cache(tmp_path_factory) -> Path:
    """One processed Cora for the module (processing is paid once)."""
    return tmp_path_factory.mktemp("cora_cache")


@pytest.fixture()
def cora(cora_cache) -> GraphDataModule:
    dm = cora_dm(cora_cache)
    dm.setup()
    return dm


def _one(loader) -> SSLBatch:
    batches = list(loader)
    assert len(batches) == 1
    return batches[0]


def _split_labels(dm: GraphDataModule, key: str) -> torch.Tensor:
    g = dm.graph
    return torch.where(g[key], g.y, torch.full_like(g.y, -1))


# ---------------------------------------------------------------------------------------------- loading


def test_cora_loads_from_read_only_root_into_cache(tmp_path):
    before = listing(PLANETOID)
    dm = cora_dm(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    g = dm.graph
    assert g.num_nodes == CORA_NODES and dm.num_nodes == CORA_NODES
    assert g.x.shape == (CORA_NODES, CORA_FEATURES) and dm.num_features == CORA_FEATURES
    assert dm.num_classes == CORA_CLASSES and int(g.y.max()) + 1 == CORA_CLASSES
    assert g.edge_index.shape == (2, 10556)
    assert (int(g.train_mask.sum()), int(g.val_mask.sum()), int(g.test_mask.sum())) == (140, 500, 1000)
    assert not (g.train_mask & g.val_mask).any() and not (g.val_mask & g.test_mask).any()
    # nothing was written next to the data: same entries, sizes and modification times
    assert listing(PLANETOID) == before
    assert not (PLANETOID / "Cora" / "processed").exists()
    # the processed files are in the cache, whose raw entry links to the shared files
    processed = list(tmp_path.rglob("processed/data.pt"))
    assert len(processed) == 1, sorted(str(p) for p in tmp_path.rglob("*"))
    raw = processed[0].parent.parent / "raw"
    assert raw.resolve() == CORA_RAW.resolve() or sorted(os.listdir(raw)) == sorted(os.listdir(CORA_RAW))


def test_second_datamodule_reuses_the_cache(tmp_path):
    first = cora_dm(tmp_path)
    first.setup()
    data_pt = next(tmp_path.rglob("processed/data.pt"))
    stamp = data_pt.stat().st_mtime_ns
    second = cora_dm(tmp_path)
    second.setup()
    assert data_pt.stat().st_mtime_ns == stamp, "the processed file was rewritten instead of reused"
    assert len(list(tmp_path.rglob("processed/data.pt"))) == 1
    assert torch.equal(first.graph.x, second.graph.x) and torch.equal(first.graph.edge_index, second.graph.edge_index)


def test_cache_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_SSL_CACHE", str(tmp_path / "env_cache"))
    load_graph_dataset("Cora", PLANETOID)
    assert len(list((tmp_path / "env_cache").rglob("processed/data.pt"))) == 1


def test_normalize_features_rows_sum_to_one(cora, cora_cache):
    sums = cora.graph.x.sum(1)
    torch.testing.assert_close(sums, torch.ones(CORA_NODES))
    raw = cora_dm(cora_cache, normalize_features=False)
    raw.setup()
    assert set(raw.graph.x.unique().tolist()) == {0.0, 1.0}  # Cora's bag-of-words, untouched
    assert float(raw.graph.x.sum(1).min()) >= 1.0
    torch.testing.assert_close(cora.graph.x, raw.graph.x / raw.graph.x.sum(1, keepdim=True))


def test_random_split_sizes_disjoint_and_seeded(cora_cache):
    def masks(seed):
        dm = cora_dm(cora_cache, split="random", train_fraction=0.2, val_fraction=0.3, split_seed=seed)
        dm.setup()
        return dm.graph.train_mask, dm.graph.val_mask, dm.graph.test_mask

    tr, va, te = masks(3)
    assert (int(tr.sum()), int(va.sum()), int(te.sum())) == (542, 812, 1354)  # round(.2 N), round(.3 N), rest
    assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
    assert bool((tr | va | te).all())
    again = masks(3)
    assert all(torch.equal(a, b) for a, b in zip((tr, va, te), again))
    other = masks(4)
    assert not torch.equal(tr, other[0]) and not torch.equal(te, other[2])


# ---------------------------------------------------------------------------------------------- loaders


def test_full_train_loader_one_batch_per_step_with_train_labels(cora_cache):
    dm = cora_dm(cora_cache, steps_per_epoch=3)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    expected = _split_labels(dm, "train_mask")
    for b in batches:
        assert isinstance(b, SSLBatch)
        assert len(b.views) == 1 and b.views[0].num_nodes == CORA_NODES  # views are made after the transfer
        assert b.mask is None
        assert torch.equal(b.index, torch.arange(CORA_NODES))
        assert torch.equal(b.target, expected)
    assert int((batches[0].target >= 0).sum()) == 140


@pytest.mark.parametrize("loader, key, labelled", [
    ("val_dataloader", "val_mask", 500),
    ("test_dataloader", "test_mask", 1000),
    ("labelled_train_dataloader", "train_mask", 140),
    ("predict_dataloader", None, CORA_NODES),
])
def test_eval_loaders_carry_their_split_labels(cora, loader, key, labelled):
    b = _one(getattr(cora, loader)())
    assert len(b.views) == 1 and b.views[0].num_nodes == CORA_NODES
    expected = cora.graph.y if key is None else _split_labels(cora, key)
    assert torch.equal(b.target, expected)
    assert int((b.target >= 0).sum()) == labelled
    # a clean view: the features and edges of the graph itself
    assert torch.equal(b.views[0].x, cora.graph.x) and torch.equal(b.views[0].edge_index, cora.graph.edge_index)


# ---------------------------------------------------------------------------------------------- device views


def _transfer(dm: GraphDataModule, batch: SSLBatch, **trainer) -> SSLBatch:
    dm.trainer = fake_trainer(**trainer)
    return dm.on_after_batch_transfer(batch, 0)


def test_views_only_when_training(cora_cache):
    views = [GraphView(0.2, 0.3), GraphView(0.4, 0.4), GraphView(0.1, 0.0)]
    dm = cora_dm(cora_cache, views=views)
    dm.setup()
    graph = dm.graph
    x_before = graph.x.clone()
    evaluated = _transfer(dm, next(iter(dm.val_dataloader())), training=False)
    # the clean graph, as a shallow copy (moving a batch to the device must not move the datamodule's graph)
    assert len(evaluated.views) == 1 and evaluated.views[0] is not graph and evaluated.views[0].x is graph.x
    trained = _transfer(dm, next(iter(dm.train_dataloader())), training=True)
    assert len(trained.views) == len(views) == 3
    assert all(v.num_nodes == CORA_NODES for v in trained.views)
    assert all(v.edge_index.shape[1] < graph.edge_index.shape[1] for v in trained.views)
    assert torch.equal(graph.x, x_before), "making the views changed the datamodule's graph"
    dm.trainer = None
    untouched = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert len(untouched.views) == 1  # no trainer: no views


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_edge_drop_removes_about_the_rate(cora_cache, rate):
    dm = cora_dm(cora_cache, views=[GraphView(drop_edge=rate)] * 4)
    dm.setup()
    e = dm.graph.edge_index.shape[1]
    views = _transfer(dm, next(iter(dm.train_dataloader()))).views
    kept = torch.tensor([v.edge_index.shape[1] / e for v in views])
    assert (kept - (1 - rate)).abs().max() < 0.03, kept  # binomial sd ~0.005 on 10,556 edges
    assert len({v.edge_index.shape[1] for v in views}) > 1, "the four views dropped the same number of edges"
    original = set(map(tuple, dm.graph.edge_index.t().tolist()))
    assert set(map(tuple, views[0].edge_index.t().tolist())) <= original
    assert torch.equal(views[0].x, dm.graph.x)  # no feature masking asked for


def test_feature_mask_zeroes_whole_columns():
    graph = random_graph(num_nodes=50, num_features=400)  # strictly positive features
    dm = GraphDataModule.from_data(graph, split="random", normalize_features=False, views=[GraphView(mask_feature=0.5)])
    dm.setup()
    view = _transfer(dm, next(iter(dm.train_dataloader()))).views[0]
    x, x0 = view.x, dm.graph.x
    zero_cols = (x == 0).all(0)
    kept_cols = (x == x0).all(0)
    assert bool((zero_cols | kept_cols).all()), "a column is partly masked"
    frac = float(zero_cols.float().mean())
    assert 0.35 < frac < 0.65, frac  # binomial sd 0.025 on 400 columns
    assert torch.equal(view.edge_index, dm.graph.edge_index)


def test_shuffle_features_permutes_rows():
    graph = random_graph(num_nodes=40, num_features=6)
    dm = GraphDataModule.from_data(graph, split="random", normalize_features=False,
                                   views=[GraphView(), GraphView(shuffle_features=True)])
    dm.setup()
    clean, corrupt = _transfer(dm, next(iter(dm.train_dataloader()))).views
    x0 = dm.graph.x
    assert clean.x is dm.graph.x and clean.edge_index is dm.graph.edge_index  # the identity view: the graph unchanged
    match = (corrupt.x[:, None, :] == x0[None, :, :]).all(-1)  # [i, j]: row i of the view is row j of the graph
    assert bool((match.sum(0) == 1).all()) and bool((match.sum(1) == 1).all()), "not a permutation of the rows"
    assert not torch.equal(corrupt.x, x0)
    assert torch.equal(corrupt.edge_index, dm.graph.edge_index)


# ---------------------------------------------------------------------------------------------- neighbour mode


def test_neighbor_batches_seed_mask_index_and_epoch_cover(cora_cache):
    dm = cora_dm(cora_cache, mode="neighbor", batch_size=500, num_neighbors=[5, 3], sampler_backend="torch")
    dm.setup()
    seeds = []
    batches = list(dm.train_dataloader())
    assert len(batches) == 5  # floor(2708 / 500): the last, smaller batch is dropped
    train_labels = _split_labels(dm, "train_mask")
    for b in batches:
        sub = b.views[0]
        bs = int(sub.batch_size)
        assert b.mask.dtype == torch.bool and b.mask.shape == (sub.num_nodes,)
        assert bool(b.mask[:bs].all()) and not bool(b.mask[bs:].any())
        assert sub.num_nodes > bs  # neighbours were sampled around the seeds
        assert torch.equal(b.index, sub.n_id)
        assert torch.equal(sub.x, dm.graph.x[b.index])  # index = global node ids
        assert torch.equal(b.target, train_labels[b.index])
        assert int(sub.edge_index.max()) < sub.num_nodes
        seeds.append(b.index[b.mask])
    seeds = torch.cat(seeds)
    assert seeds.numel() == 2500 and seeds.unique().numel() == 2500, "no node is a seed twice in an epoch"
    # over epochs (reshuffled), every node is a seed: the dropped remainder changes
    more = torch.cat([b.index[b.mask] for _ in range(4) for b in dm.train_dataloader()])
    assert torch.equal(torch.cat([seeds, more]).unique(), torch.arange(CORA_NODES))
    # after the transfer: one subgraph per view, the seed mask unchanged
    b = batches[0]
    mask = b.mask.clone()
    out = _transfer(dm, b)
    assert len(out.views) == 2 and all(v.num_nodes == mask.numel() for v in out.views)
    assert torch.equal(out.mask, mask)


def test_full_mode_fake_world_of_two_partitions_rows(cora_cache):
    dm = cora_dm(cora_cache)
    dm.setup()
    masks = []
    for rank in (0, 1):
        out = _transfer(dm, next(iter(dm.train_dataloader())), world_size=2, global_rank=rank)
        assert len(out.views) == 2
        masks.append(out.mask)
        assert torch.equal(out.mask, torch.arange(CORA_NODES) % 2 == rank)
    assert not (masks[0] & masks[1]).any() and bool((masks[0] | masks[1]).all())
    assert int(masks[0].sum()) == int(masks[1].sum()) == CORA_NODES // 2
    single = _transfer(dm, next(iter(dm.train_dataloader())), world_size=1)
    assert single.mask is None


# ---------------------------------------------------------------------------------------------- link split


def test_link_split_has_no_leak_and_trains_on_the_reduced_graph(cora_cache):
    dm = cora_dm(cora_cache, link_split=True)
    dm.setup()
    train, val, test = dm.link_data
    assert torch.equal(dm.train_graph.edge_index, train.edge_index)  # the encoder's graph: train edges only
    assert "pos_edge_label_index" not in dm.train_graph and "neg_edge_label_index" not in dm.train_graph
    train_edges = set(map(tuple, dm.train_graph.edge_index.t().tolist()))
    assert dm.train_graph.edge_index.shape[1] < dm.graph.edge_index.shape[1]
    all_edges = set(map(tuple, dm.graph.edge_index.t().tolist()))
    for held in (val, test):
        pos = held.pos_edge_label_index.t().tolist()
        assert len(pos) > 0
        for u, v in pos:
            assert (u, v) not in train_edges and (v, u) not in train_edges, f"held-out edge ({u}, {v}) leaks"
            assert (u, v) in all_edges or (v, u) in all_edges
        neg = held.neg_edge_label_index
        assert neg.shape == held.pos_edge_label_index.shape
        assert not any((u, v) in all_edges for u, v in neg.t().tolist()), "a negative edge is a real edge"
        assert torch.equal(held.neg_edge_label, torch.zeros(neg.shape[1]))
    # roughly 5% / 10% of the undirected edges held out
    assert abs(val.pos_edge_label_index.shape[1] - 0.05 * 5278) < 3
    assert abs(test.pos_edge_label_index.shape[1] - 0.10 * 5278) < 3
    # the encoder never sees the held-out edges: not in training, nor in the clean evaluation graph
    assert torch.equal(_one(dm.train_dataloader()).views[0].edge_index, train.edge_index)
    assert torch.equal(_one(dm.val_dataloader()).views[0].edge_index, train.edge_index)


def test_assert_no_edge_leak_catches_either_direction():
    train = torch.tensor([[0, 1, 2], [1, 2, 3]])
    assert_no_edge_leak(train, [torch.tensor([[0], [3]])])  # a non-edge: fine
    with pytest.raises(AssertionError, match="leak"):
        assert_no_edge_leak(train, [torch.tensor([[3], [2]])])  # (2, 3) reversed


# ---------------------------------------------------------------------------------------------- other graphs


def test_from_data_custom_graph():
    graph = random_graph(num_nodes=30, num_features=5, num_classes=3)
    dm = GraphDataModule.from_data(graph, split="random", train_fraction=0.5, val_fraction=0.2)
    dm.setup()
    assert dm.dataset_name == "custom"
    assert (dm.num_nodes, dm.num_features, dm.num_classes) == (30, 5, int(graph.y.max()) + 1)
    assert int(dm.graph.train_mask.sum()) == 15 and int(dm.graph.val_mask.sum()) == 6
    torch.testing.assert_close(dm.graph.x.sum(1), torch.ones(30))
    b = _one(dm.train_dataloader())
    assert b.views[0].num_nodes == 30 and int((b.target >= 0).sum()) == 15
    assert "train_mask" not in graph  # the given Data is not modified


def test_from_data_keeps_the_given_masks_for_the_public_split():
    graph = random_graph(num_nodes=20, num_features=4)
    graph.train_mask = torch.arange(20) < 5
    graph.val_mask = (torch.arange(20) >= 5) & (torch.arange(20) < 10)
    graph.test_mask = torch.arange(20) >= 10
    dm = GraphDataModule.from_data(graph)
    dm.setup()
    assert torch.equal(_one(dm.val_dataloader()).target, torch.where(graph.val_mask, graph.y, -1))


def test_karate_club_loads_without_files():
    dm = GraphDataModule("KarateClub", root="/nonexistent", split="random", train_fraction=0.3, val_fraction=0.3)
    dm.setup()
    assert (dm.num_nodes, dm.num_features, dm.num_classes) == (34, 34, 4)
    assert dm.graph.edge_index.shape == (2, 156)
    assert int(dm.graph.train_mask.sum()) == 10


def test_karate_club_public_split_is_a_clear_error():
    # KarateClub has a train_mask but no val/test masks: the public split does not exist
    with pytest.raises(ValueError, match=r"no public split \(missing val_mask, test_mask\).*split: random"):
        GraphDataModule("KarateClub").setup()
