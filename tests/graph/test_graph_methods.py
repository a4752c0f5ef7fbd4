"""The graph SSL methods train on the real Cora with tiny GCNs, full-batch and neighbour-sampled.

GRACE = SimCLR over nodes, BGRL = BYOL without projector, GBT = Barlow Twins without projector, CCA-SSG, DGI
(clean + feature-shuffled views) and GraphMAE (one view). Two optimizer steps each: finite loss, changed
encoder weights, and the step outputs restricted to the seed rows in neighbour mode. GraphMAE's masking and
loss are checked directly; the monitoring callbacks run on a graph fit.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch

from graph_helpers import CORA_NODES, cora_dm, make_trainer, random_graph, tiny_gnn
from lightning_ssl.callbacks import OnlineKNN, OnlineLinearProbe, RankMe
from lightning_ssl.data import GraphView, SSLBatch
from lightning_ssl.methods import BYOL, CCASSG, DGI, BarlowTwins, GraphMAE, SimCLR
from lightning_ssl.methods.base import ViewOutputs

WIDTH = 16
OPT = dict(optimizer="adam", lr=1e-2, weight_decay=0.0, warmup_epochs=0, min_lr_factor=1.0)

# name -> (method factory, training views or None for the datamodule's default two GRACE views)
METHODS: dict[str, tuple[Any, list[GraphView] | None]] = {
    "GRACE": (lambda enc: SimCLR(enc, proj_hidden_dim=WIDTH, proj_out_dim=WIDTH, proj_batch_norm=False,
                                 proj_activation="elu", temperature=0.5, **OPT), None),
    "BGRL": (lambda enc: BYOL(enc, proj_layers=0, pred_hidden_dim=WIDTH, head_batch_norm=False,
                              head_activation="prelu", tau_base=0.9, **OPT), None),
    "GBT": (lambda enc: BarlowTwins(enc, proj_layers=0, lambda_offdiag=1 / WIDTH, **OPT), None),
    "CCASSG": (lambda enc: CCASSG(enc, lambd=1e-3, **OPT), [GraphView(0.4, 0.1), GraphView(0.4, 0.1)]),
    "DGI": (lambda enc: DGI(enc, **OPT), [GraphView(), GraphView(shuffle_features=True)]),
    "GraphMAE": (lambda enc: GraphMAE(enc, mask_rate=0.5, replace_rate=0.1, alpha=2.0, **OPT), [GraphView()]),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cora_cache")


class _Recorder(L.Callback):
    """Keeps what the callbacks see: the step outputs and the batch after the transfer."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({
            "loss": float(outputs["loss"]),
            "embeddings": outputs["embeddings"].shape,
            "projections": outputs["projections"].shape,
            "target": outputs["target"],
            "index": outputs["index"],
            "mask": None if batch.mask is None else batch.mask.clone(),
            "batch_index": batch.index,
            "num_views": len(batch.views),
            "requires_grad": outputs["embeddings"].requires_grad,
        })


def _datamodule(cache, mode: str, views, hops: int = 2):
    return cora_dm(cache, mode=mode, views=views, batch_size=256, num_neighbors=[5] * hops, sampler_backend="torch")


@pytest.mark.parametrize("mode", ["full", "neighbor"])
@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_two_steps(cache, name, mode):
    factory, views = METHODS[name]
    model = factory(tiny_gnn(width=WIDTH))
    dm = _datamodule(cache, mode, views, hops=model.encoder.num_layers + model.extra_hops)
    before = {k: v.detach().clone() for k, v in model.encoder.named_parameters()}
    rec = _Recorder()
    trainer = make_trainer(max_steps=2, callbacks=[rec])
    trainer.fit(model, dm)
    assert trainer.global_step == 2 and len(rec.steps) == 2
    n_views = len(views) if views is not None else 2
    for step in rec.steps:
        assert torch.isfinite(torch.tensor(step["loss"])), step["loss"]
        assert step["num_views"] == n_views
        assert not step["requires_grad"], "step outputs must be detached"
        rows = CORA_NODES if mode == "full" else int(step["mask"].sum())
        if mode == "neighbor":
            assert rows == 256  # the seed nodes of the subgraph only
            assert step["mask"].numel() > rows
            assert torch.equal(step["index"], step["batch_index"][step["mask"]])
        else:
            assert step["mask"] is None and torch.equal(step["index"], torch.arange(CORA_NODES))
        assert step["embeddings"] == (rows, WIDTH)
        assert step["projections"][0] == rows
        assert step["target"].shape == (rows,)
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)
    changed = [k for k, v in model.encoder.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert "convs.0.lin.weight" in changed, f"{name}: the first layer did not move ({changed})"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if name == "DGI":
        acc = trainer.callback_metrics["train/disc_acc"]
        assert 0.0 <= float(acc) <= 1.0
    if name == "BGRL":  # the EMA teacher follows the student without being it
        t = model.teacher["encoder"].convs[0].lin.weight
        assert not torch.equal(t, model.encoder.convs[0].lin.weight) and not torch.equal(t, before["convs.0.lin.weight"])


def test_dgi_discriminator_learns_on_cora(cache):
    """A few DGI steps: the discriminator tells clean from corrupted nodes better than chance."""
    dm = _datamodule(cache, "full", [GraphView(), GraphView(shuffle_features=True)])
    model = DGI(tiny_gnn(width=WIDTH, num_layers=1), **OPT)
    trainer = make_trainer(max_steps=15)
    trainer.fit(model, dm)
    assert float(trainer.callback_metrics["train/disc_acc"]) > 0.6
    assert float(trainer.callback_metrics["train/loss"]) < 0.69  # below log 2, the chance level


# ---------------------------------------------------------------------------------------------- GraphMAE


def _graphmae(in_channels: int, **kwargs) -> GraphMAE:
    model = GraphMAE(tiny_gnn(in_channels=in_channels, width=8), decoder="gcn", **kwargs)
    with torch.no_grad():
        model.mask_token.fill_(7.0)  # a value no feature has
    return model


@pytest.mark.parametrize("n, replace_rate", [(40, 0.25), (CORA_NODES, 0.05)])
def test_graphmae_masks_mask_rate_of_nodes(n, replace_rate):
    graph = random_graph(num_nodes=n, num_features=5, num_edges=4 * n)
    model = _graphmae(5, mask_rate=0.5, replace_rate=replace_rate)
    (view,), extra = model.prepare_views(SSLBatch(views=[graph]))
    masked = extra["masked_nodes"]
    assert masked.numel() == int(0.5 * n) and masked.unique().numel() == masked.numel()
    is_masked = torch.zeros(n, dtype=torch.bool)
    is_masked[masked] = True
    assert torch.equal(view.x[~is_masked], graph.x[~is_masked]), "unmasked nodes must keep their features"
    token = (view.x == 7.0).all(1)
    assert not token[~is_masked].any()
    n_noise = int(replace_rate * masked.numel())
    assert int(token.sum()) == masked.numel() - n_noise
    noise = is_masked & ~token  # replaced by the features of (random) nodes of the graph
    rows_of_graph = (view.x[noise][:, None, :] == graph.x[None, :, :]).all(-1).any(1)
    assert int(noise.sum()) == n_noise and bool(rows_of_graph.all())
    assert torch.equal(view.edge_index, graph.edge_index) and view is not graph
    assert not (graph.x == 7.0).all(1).any(), "prepare_views changed the input graph"
    (_,), extra2 = model.prepare_views(SSLBatch(views=[graph]))
    assert not torch.equal(extra2["masked_nodes"].sort().values, masked.sort().values)


def _graphmae_loss(model: GraphMAE, graph, rep, masked, mask=None) -> torch.Tensor:
    batch = SSLBatch(views=[graph], mask=mask)
    h = rep if mask is None else rep[mask]
    return model.compute_loss(ViewOutputs(embeddings=[h], projections=[h], batch=batch,
                                          extra={"masked_nodes": masked}, unmasked=[rep]))


@pytest.mark.parametrize("neighbor", [False, True])
def test_graphmae_loss_uses_only_masked_nodes(neighbor):
    torch.manual_seed(0)
    n = 30
    graph = random_graph(num_nodes=n, num_features=5, num_edges=120)
    model = _graphmae(5, mask_rate=0.5, alpha=2.0)
    rep = torch.randn(n, 8)
    masked = torch.tensor([0, 2, 4, 5, 11, 17, 20, 25, 29])
    mask = (torch.arange(n) < 12) if neighbor else None  # seeds: nodes 0..11
    counted = masked[masked < 12] if neighbor else masked
    loss = _graphmae_loss(model, graph, rep, masked, mask)
    # reference: re-mask, decode over the whole (sub)graph, scaled cosine error on the counted rows
    with torch.no_grad():
        r = model.encoder_to_decoder(rep)
        r[masked] = 0.0
        recon = model.decoder(r, graph.edge_index)
        cos = torch.nn.functional.cosine_similarity(recon[counted], graph.x[counted])
        torch.testing.assert_close(loss.detach(), ((1 - cos) ** 2).mean())
    # the targets of the other nodes do not matter; those of a counted node do
    others = torch.ones(n, dtype=torch.bool)
    others[counted] = False
    changed = graph.clone()
    changed.x = graph.x.clone()
    changed.x[others] = torch.randn(int(others.sum()), 5)
    torch.testing.assert_close(_graphmae_loss(model, changed, rep, masked, mask), loss)
    changed.x[counted[0]] = -changed.x[counted[0]]
    assert not torch.allclose(_graphmae_loss(model, changed, rep, masked, mask), loss)


def test_graphmae_always_masks_a_seed_in_sampled_batches():
    # with 2 seeds in a 30-node subgraph, masking over all nodes would often miss every seed (empty loss: NaN);
    # prepare_views masks mask_rate of the seeds (at least one) and of the other nodes separately
    torch.manual_seed(0)
    n = 30
    graph = random_graph(num_nodes=n, num_features=5, num_edges=120)
    model = _graphmae(5, mask_rate=0.5)
    seeds = torch.arange(n) < 2
    for _ in range(50):
        _, extra = model.prepare_views(SSLBatch(views=[graph], mask=seeds))
        masked = extra["masked_nodes"]
        assert bool(seeds[masked].any()) and masked.unique().numel() == masked.numel()
        assert int((~seeds[masked]).sum()) == 14  # half of the 28 other nodes
        loss = _graphmae_loss(model, graph, torch.randn(n, 8), masked, seeds)
        assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------- monitoring callbacks


@pytest.mark.parametrize("mode", ["full", "neighbor"])
def test_rankme_probe_and_knn_on_a_graph_fit(cache, mode):
    dm = _datamodule(cache, mode, None)
    model = CCASSG(tiny_gnn(width=WIDTH, activation="relu", act_last=False), **OPT)
    trainer = make_trainer(max_steps=-1, max_epochs=1, limit_val_batches=1.0, limit_train_batches=2,
                           callbacks=[RankMe(), OnlineLinearProbe(lr=1e-2), OnlineKNN(k=10)])
    trainer.fit(model, dm)
    m = trainer.callback_metrics
    for key in ("rankme", "probe/val_acc", "knn/val_acc", "probe/train_loss"):
        assert key in m and torch.isfinite(m[key]), (key, sorted(m))
    assert 1.0 <= float(m["rankme"]) <= WIDTH
    assert 0.0 <= float(m["probe/val_acc"]) <= 1.0
    # kNN over the clean graph's 140 training nodes: GCN features of Cora are far above the 1/7 chance level
    assert 0.25 < float(m["knn/val_acc"]) <= 1.0


@pytest.mark.parametrize("mode", ["full", "neighbor"])
def test_unlabelled_graph_trains(mode):
    """SSL needs no labels: a graph without y trains in both modes (batches carry target None)."""
    from lightning_ssl.data import GraphDataModule

    graph = random_graph(num_nodes=50, num_features=4, num_classes=None)
    assert getattr(graph, "y", None) is None
    dm = GraphDataModule.from_data(graph, mode=mode, num_neighbors=[3, 3], batch_size=16, split="random")
    model = CCASSG(tiny_gnn(in_channels=4, width=8, activation="relu", act_last=False), lr=1e-2, warmup_epochs=0)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    trainer = make_trainer(max_steps=-1, max_epochs=1, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == (1 if mode == "full" else 3)  # 50 seeds, batches of 16, the last dropped
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))
