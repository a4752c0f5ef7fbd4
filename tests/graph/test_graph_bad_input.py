"""Clear errors for bad graph input: every message names the problem and what to change."""

from __future__ import annotations

import importlib.util
import lightning as L
import pytest
import torch
from torch_geometric.data import Data

from graph_helpers import CORA_FEATURES, cora_dm, make_trainer, random_graph, tiny_gnn
from lightning_ssl.callbacks import MissingLabelsError, OnlineLinearProbe
from lightning_ssl.data import GraphDataModule, GraphView
from lightning_ssl.encoders import GNNEncoder
from lightning_ssl.methods import CCASSG, DGI, GraphMAE


def _setup(graph: Data, **kwargs) -> GraphDataModule:
    dm = GraphDataModule.from_data(graph, split="random", **kwargs)
    dm.setup()
    return dm


# ---------------------------------------------------------------------------------------------- datasets and files


def test_unknown_dataset_suggests_the_close_name():
    with pytest.raises(ValueError, match=r"Unknown graph dataset 'Coraa'.*Did you mean 'Cora'\?") as err:
        GraphDataModule("Coraa")
    assert "CiteSeer" in str(err.value)  # lists the valid names
    with pytest.raises(ValueError, match="Unknown graph dataset") as err:
        GraphDataModule("zzzzzz")
    assert "Did you mean" not in str(err.value)


def test_missing_raw_files_name_the_folder_and_the_fix(tmp_path):
    dm = GraphDataModule("Cora", root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "Cora" / "raw") in msg and "root" in msg and "download" in msg
    assert list(tmp_path.iterdir()) == [], "a failed load left files behind"


# ---------------------------------------------------------------------------------------------- graph contents


def test_graph_without_features_and_the_structural_fix():
    graph = Data(edge_index=torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]]), num_nodes=5)
    with pytest.raises(ValueError, match="no node features") as err:
        _setup(graph)
    assert "structural_features" in str(err.value) and "degree" in str(err.value)
    deg = _setup(graph, structural_features="degree", normalize_features=False)
    assert deg.graph.x.shape == (5, 65)  # one-hot degree, clipped at 64
    assert deg.graph.x.argmax(1).tolist() == [1, 2, 2, 1, 0]
    const = _setup(graph, structural_features="constant", normalize_features=False)
    assert const.graph.x.shape == (5, 1) and bool((const.graph.x == 1).all())
    with pytest.raises(ValueError, match="Unknown structural_features 'pagerank'.*'degree'"):
        _setup(graph, structural_features="pagerank")


def test_normalize_features_is_the_documented_row_normalisation():
    graph = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
    const = _setup(graph, structural_features="constant")  # normalize_features=True is the default
    assert bool((const.graph.x != 0).any(1).all()), const.graph.x
    small = Data(x=torch.tensor([[0.1, 0.2], [0.3, 0.1], [0.05, 0.05]]), edge_index=graph.edge_index)
    dm = _setup(small)
    torch.testing.assert_close(dm.graph.x.sum(1), torch.ones(3))
    torch.testing.assert_close(dm.graph.x, small.x / small.x.sum(1, keepdim=True))


def test_nan_features():
    graph = random_graph(num_nodes=10)
    graph.x[3, 1] = float("nan")
    graph.x[7, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN/inf \(nodes \[3, 7\]"):
        _setup(graph)


def test_edge_index_out_of_range():
    graph = random_graph(num_nodes=10)
    graph.edge_index = torch.tensor([[0, 1, 12], [1, 0, 3]])
    with pytest.raises(ValueError, match=r"refers to node 12 .* 10 nodes \(valid ids 0\.\.9\)"):
        _setup(graph)
    graph.edge_index = torch.tensor([[0, -1], [1, 0]])
    with pytest.raises(ValueError, match="refers to node -1"):
        _setup(graph)


@pytest.mark.parametrize("dtype", [torch.int32, torch.float32])
def test_edge_index_wrong_dtype(dtype):
    graph = random_graph(num_nodes=10)
    graph.edge_index = graph.edge_index.to(dtype)
    with pytest.raises(ValueError, match=rf"int64.*got {dtype}.*edge_index\.long\(\)"):
        _setup(graph)


def test_edge_index_transposed():
    graph = random_graph(num_nodes=10)
    graph.edge_index = graph.edge_index.t().contiguous()  # [E, 2]
    with pytest.raises(ValueError, match=r"\[2, num_edges\].*Transpose an \[E, 2\]"):
        _setup(graph)


# ---------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("kwargs", [dict(drop_edge=1.0), dict(drop_edge=-0.1), dict(mask_feature=1.0),
                                    dict(mask_feature=-0.1)])
def test_graph_view_rates_outside_unit_interval(kwargs):
    (name, rate), = kwargs.items()
    with pytest.raises(ValueError, match=rf"GraphView\.{name} must be in \[0, 1\), got {rate}"):
        GraphView(**kwargs)
    with pytest.raises(ValueError, match=rf"GraphView\.{name}"):  # also from a config's dict
        GraphDataModule(views=[kwargs, {}])


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.2, 1.5])
def test_graphmae_mask_rate_outside_open_interval(rate):
    with pytest.raises(ValueError, match=rf"mask_rate must be in \(0, 1\), got {rate}"):
        GraphMAE(tiny_gnn(in_channels=8), mask_rate=rate)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(mode="batch"), "mode must be 'full' or 'neighbor', got 'batch'"),
    (dict(split="fixed"), "split must be 'public' or 'random', got 'fixed'"),
    (dict(sampler_backend="cuda"), "sampler_backend must be 'auto', 'pyg' or 'torch', got 'cuda'"),
    (dict(num_neighbors=[10, 0]), "fan-outs > 0"),
    (dict(train_fraction=0.9, val_fraction=0.2), "sum to less than 1"),
    (dict(batch_size=0), "batch_size (0)"),
])
def test_invalid_datamodule_options(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        GraphDataModule(**kwargs)
    assert fragment in str(err.value)


def test_unknown_conv_name():
    with pytest.raises(ValueError, match=r"Unknown GNN layer 'gcnn'; valid names: gcn, gat, sage, gin"):
        GNNEncoder("gcnn", in_channels=8)


def test_gat_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"GAT width 30 is not divisible by heads=4"):
        GNNEncoder("gat", in_channels=8, hidden_channels=30, heads=4)
    GNNEncoder("gat", in_channels=8, hidden_channels=32, heads=4)  # a multiple of heads is fine


# ---------------------------------------------------------------------------------------------- checks at fit time


class _StepCounter(L.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args, **kwargs) -> None:
        self.batches += 1


def test_neighbor_fanouts_must_match_encoder_depth(tmp_path):
    dm = cora_dm(tmp_path, mode="neighbor", num_neighbors=[10, 10, 5], sampler_backend="torch", batch_size=64)
    model = CCASSG(tiny_gnn(num_layers=2))
    counter = _StepCounter()
    trainer = make_trainer(callbacks=[counter])
    with pytest.raises(ValueError) as err:
        trainer.fit(model, dm)
    msg = str(err.value)
    assert "the model has 2 layers" in msg and "[10, 10, 5] has 3 entries" in msg and "Give 2 fan-outs" in msg
    assert counter.batches == 0 and trainer.global_step == 0, "the check must fire before any training step"


def test_graphmae_needs_a_fanout_for_its_decoder_hop(tmp_path):
    dm = cora_dm(tmp_path, mode="neighbor", num_neighbors=[10, 10], sampler_backend="torch", batch_size=64,
                 views=[GraphView()])
    trainer = make_trainer()
    with pytest.raises(ValueError, match=r"2 layers plus 1 decoder hop\(s\).*Give 3 fan-outs"):
        trainer.fit(GraphMAE(tiny_gnn(num_layers=2)), dm)


def test_dgi_and_graphmae_refuse_views_that_are_not_theirs(tmp_path):
    # the datamodule's default views are GRACE's augmentations: neither DGI's corruption nor GraphMAE's clean graph
    with pytest.raises(ValueError, match=r"DGI needs the clean graph and its corruption.*shuffle_features: true"):
        make_trainer().fit(DGI(tiny_gnn(num_layers=1)), cora_dm(tmp_path))
    with pytest.raises(ValueError, match=r"GraphMAE masks and reconstructs the clean graph's features"):
        make_trainer().fit(GraphMAE(tiny_gnn()), cora_dm(tmp_path))


def test_encoder_in_channels_mismatch_names_the_value_to_set(tmp_path):
    dm = cora_dm(tmp_path)
    model = CCASSG(tiny_gnn(in_channels=500))
    counter = _StepCounter()
    with pytest.raises(ValueError) as err:
        make_trainer(callbacks=[counter]).fit(model, dm)
    msg = str(err.value)
    assert f"{CORA_FEATURES} features" in msg and "expects 500" in msg
    assert f"in_channels: {CORA_FEATURES}" in msg
    assert counter.batches == 0


def test_full_mode_ignores_the_fanouts_but_checks_width(tmp_path):
    dm = cora_dm(tmp_path, num_neighbors=[10, 10, 5])  # full mode: fan-outs are unused, no error
    dm.check_encoder(tiny_gnn(num_layers=2))


def test_probe_on_graph_without_labels():
    graph = random_graph(num_nodes=40, num_features=6, num_classes=None)
    assert "y" not in graph

    def fit(probe):
        dm = GraphDataModule.from_data(graph, split="random")
        make_trainer(callbacks=[probe], max_steps=1).fit(CCASSG(tiny_gnn(in_channels=6, width=8)), dm)

    # the number of classes cannot be read from an unlabelled graph: the error says to set it
    with pytest.raises(ValueError, match="num_classes is not set"):
        fit(OnlineLinearProbe())
    # with num_classes given, the first training batch has no labels
    with pytest.raises(MissingLabelsError, match="carry no labels") as err:
        fit(OnlineLinearProbe(num_classes=3))
    assert "OnlineLinearProbe" in str(err.value)


def test_ogb_names_need_the_ogb_extra(tmp_path):
    from lightning_ssl.data import load_graph_dataset

    if importlib.util.find_spec("ogb") is None:
        with pytest.raises(ImportError, match=r"pip install 'lightning-ssl\[ogb\]'"):
            load_graph_dataset("ogbn-arxiv", tmp_path)
    else:  # with the extra installed, a missing download is the clear error
        with pytest.raises(FileNotFoundError, match="ogbn_arxiv/raw"):
            load_graph_dataset("ogbn-arxiv", tmp_path)
