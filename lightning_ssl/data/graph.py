"""Node-level graph SSL data: PyG datasets, full-batch or neighbour-sampled training, device views.

A node is a sample. Training batches carry the views of :class:`GraphView` specs (edge dropping,
feature masking, DGI's corruption), made on the device in ``on_after_batch_transfer``:

- ``mode="full"``: the whole graph every step (``steps_per_epoch`` steps an epoch). Under DDP every
  rank encodes the whole graph and the loss rows are sharded (node ``i`` counts on rank
  ``i % world_size``) so the global batch is every node once.
- ``mode="neighbor"``: subgraphs sampled around seed nodes drawn from **all** nodes (not only labelled
  ones), one fan-out per encoder layer; loss and embeddings are restricted to the seeds through
  ``SSLBatch.mask``. PyG's ``NeighborLoader`` machinery is used when pyg-lib or torch-sparse is
  importable, else our pure-torch sampler with the same semantics
  (:mod:`lightning_ssl.data.graph_sampling`).

Validation, test and predict batches are the full clean graph with labels of the validation / test /
all nodes (others are -1, "unlabelled", which probes skip). ``labelled_train_dataloader()`` gives the
training nodes' labels (the clean kNN bank). Training batches carry the training nodes' labels only.

Files: ``root`` holds one folder per dataset (``<root>/Cora/raw``, ``<root>/Computers/raw``, ...; what
``torch_geometric.datasets`` downloads). Processed files are written to a cache
(``cache_dir``, else ``$LIGHTNING_SSL_CACHE``, else ``~/.cache/lightning_ssl``) whose ``raw`` entries
link to ``root``, so a read-only ``root`` works and nothing is ever written next to the data.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from torch_geometric.data import Data

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.data.graph_sampling import NeighborBatchCollator
from lightning_ssl.data.graph_views import GraphView, make_view


@dataclass(frozen=True)
class _DatasetSpec:
    name: str  # the spelling PyG uses
    family: str  # planetoid | amazon | coauthor | root_only | karate | ogb
    folder: str  # sub-folder of root that holds raw/


_SPECS = [
    _DatasetSpec("Cora", "planetoid", "Cora"), _DatasetSpec("CiteSeer", "planetoid", "CiteSeer"),
    _DatasetSpec("PubMed", "planetoid", "PubMed"), _DatasetSpec("Computers", "amazon", "Computers"),
    _DatasetSpec("Photo", "amazon", "Photo"), _DatasetSpec("CS", "coauthor", "CS"),
    _DatasetSpec("Physics", "coauthor", "Physics"), _DatasetSpec("WikiCS", "root_only", "WikiCS"),
    _DatasetSpec("Flickr", "root_only", "Flickr"), _DatasetSpec("Reddit", "root_only", "Reddit"),
    _DatasetSpec("KarateClub", "karate", ""),
]
#: dataset names GraphDataModule knows (case-insensitive), plus any ``ogbn-*`` name with the ``ogb`` extra
GRAPH_DATASETS: dict[str, _DatasetSpec] = {s.name.lower(): s for s in _SPECS}
_ALIASES = {"amazon-computers": "computers", "amazon-photo": "photo", "coauthor-cs": "cs",
            "coauthor-physics": "physics", "karate": "karateclub"}


def _spec(name: str) -> _DatasetSpec:
    key = _ALIASES.get(name.lower(), name.lower())
    if key in GRAPH_DATASETS:
        return GRAPH_DATASETS[key]
    if key.startswith("ogbn-"):
        return _DatasetSpec(key, "ogb", key.replace("-", "_"))
    names = [s.name for s in _SPECS]
    close = difflib.get_close_matches(name, names + list(_ALIASES), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown graph dataset {name!r}.{hint} Valid names: {', '.join(names)}, or ogbn-* (extra 'ogb').")


def default_cache_dir() -> Path:
    """Where processed graph files go: ``$LIGHTNING_SSL_CACHE`` or ``~/.cache/lightning_ssl``."""
    return Path(os.environ.get("LIGHTNING_SSL_CACHE", Path.home() / ".cache" / "lightning_ssl"))


def _mirror(root: Path, folder: str, cache_dir: Path) -> Path:
    """A writable mirror of ``root/folder`` in the cache: every entry but ``processed`` is linked (or
    copied where links are impossible), so PyG writes ``processed/`` there and never next to the data."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    mirror_root = cache_dir / "graphs" / digest
    src, dst = root / folder, mirror_root / folder
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name == "processed":
            continue
        target = dst / entry.name
        if target.is_symlink() and target.resolve() == entry.resolve():
            continue
        if not target.is_symlink() and target.exists() and _same_size(entry, target):
            continue  # a copy made where links are impossible
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        try:
            target.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        except FileExistsError:  # another process made it meanwhile
            continue
        except OSError:  # no symlinks on this filesystem
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
    return mirror_root


def _same_size(a: Path, b: Path) -> bool:
    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size

    return size(a) == size(b)


def load_graph_dataset(name: str, root: str | os.PathLike = "data", cache_dir: str | os.PathLike | None = None,
                       download: bool = False) -> Data:
    """The single graph of a node-level PyG dataset, read from ``root`` without writing there.

    Raises:
        FileNotFoundError: the raw files are not under ``root`` and ``download`` is off.
        ImportError: an ``ogbn-*`` name without the ``ogb`` package.
    """
    spec = _spec(name)
    import torch_geometric.datasets as D

    if spec.family == "karate":
        return D.KarateClub()[0]
    root = Path(root).expanduser()
    raw = root / spec.folder / "raw"
    if spec.family == "ogb":
        try:
            from ogb.nodeproppred import PygNodePropPredDataset
        except ImportError as e:
            raise ImportError(f"{name} needs the `ogb` package: pip install 'lightning-ssl[ogb]'.") from e
    if download:
        base = root  # downloading writes into root by definition
    else:
        if not raw.is_dir() or not any(raw.iterdir()):
            raise FileNotFoundError(
                f"No raw files for graph dataset {spec.name!r} under {raw}. Point `root` at the folder that holds "
                f"'{spec.folder}/raw' (what torch_geometric downloads), or set download=True where internet is available."
            )
        base = _mirror(root, spec.folder, Path(cache_dir) if cache_dir else default_cache_dir())
    if spec.family == "planetoid":
        return D.Planetoid(str(base), spec.name)[0]
    if spec.family == "amazon":
        return D.Amazon(str(base), spec.name)[0]
    if spec.family == "coauthor":
        return D.Coauthor(str(base), spec.name)[0]
    if spec.family == "root_only":
        cls = getattr(D, spec.name)
        kwargs = {"is_undirected": True} if spec.name == "WikiCS" else {}
        return cls(str(base / spec.folder), **kwargs)[0]
    ds = PygNodePropPredDataset(spec.name, root=str(base))
    data = ds[0]
    split = ds.get_idx_split()
    for key, part in (("train", "train"), ("val", "valid"), ("test", "test")):
        mask = torch.zeros(data.num_nodes, dtype=torch.bool)
        mask[split[part]] = True
        data[f"{key}_mask"] = mask
    data.y = data.y.reshape(-1)
    return data


def check_graph(data: Data, where: str = "graph") -> None:
    """Raise a clear error for a graph the encoders cannot use (missing/NaN features, bad edge index)."""
    x = getattr(data, "x", None)
    if x is None:
        raise ValueError(
            f"The {where} has no node features (data.x is None). Set structural_features: 'degree' (one-hot "
            "degree) or 'constant' to use structure-only features, or attach features to the graph."
        )
    if x.dim() != 2:
        raise ValueError(f"Node features must be [num_nodes, num_features], got shape {tuple(x.shape)}.")
    finite = all(bool(torch.isfinite(chunk).all()) for chunk in x.split(1 << 18))  # bounded temporary memory
    if not finite:
        bad = (~torch.isfinite(x)).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"Node features of the {where} contain NaN/inf (nodes {bad}...). Clean or impute them first.")
    ei = data.edge_index
    if not isinstance(ei, Tensor) or ei.dim() != 2 or ei.shape[0] != 2:
        shape = tuple(ei.shape) if isinstance(ei, Tensor) else type(ei).__name__
        raise ValueError(f"edge_index must be a [2, num_edges] tensor, got {shape}. Transpose an [E, 2] edge list.")
    if ei.dtype != torch.long:
        raise ValueError(f"edge_index must be int64 (torch.long), got {ei.dtype}. Convert it with edge_index.long().")
    n = x.shape[0]
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise ValueError(
            f"edge_index refers to node {int(ei.max()) if int(ei.max()) >= n else int(ei.min())} but the {where} has "
            f"{n} nodes (valid ids 0..{n - 1}). Check the node numbering or num_nodes."
        )


def structural_features(data: Data, kind: str, max_degree: int = 64) -> Tensor:
    """Features from structure alone: ``"constant"`` (a column of ones) or ``"degree"`` (one-hot
    in-degree, clipped at ``max_degree``)."""
    from torch_geometric.utils import degree

    if kind == "constant":
        return torch.ones(data.num_nodes, 1)
    if kind == "degree":
        deg = degree(data.edge_index[1], data.num_nodes).long().clamp(max=max_degree)
        return torch.nn.functional.one_hot(deg, max_degree + 1).float()
    raise ValueError(f"Unknown structural_features {kind!r}; valid: 'constant', 'degree'.")


def row_normalize(x: Tensor, where: str = "graph") -> Tensor:
    """Divide every row of non-negative features by its sum (all-zero rows stay zero): the Planetoid /
    DGI / GRACE preprocessing."""
    if (x < 0).any():
        raise ValueError(
            f"normalize_features: the {where} features have negative values, so rows cannot be normalised to sum 1. "
            "Set normalize_features: false (and standardise the features yourself if needed)."
        )
    return x / x.sum(1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)


def _labels_on(y: Tensor | None, mask: Tensor | None) -> Tensor | None:
    """Labels of the nodes in ``mask``; -1 ("unlabelled") elsewhere."""
    if y is None or mask is None:
        return None
    return torch.where(mask, y.reshape(-1), torch.full_like(y.reshape(-1), -1))


class _Steps(IterableDataset):
    """``steps`` items per epoch on every rank: Lightning adds no DistributedSampler to an iterable
    dataset, so under DDP each rank still runs ``steps_per_epoch`` steps (its rows are sharded instead)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __iter__(self) -> Any:
        return iter(range(self.steps))

    def __len__(self) -> int:
        return self.steps


class _FullGraph:
    """Collate for full-graph loaders: every item is the same graph with the given node targets."""

    def __init__(self, graph: Data, target: Tensor | None) -> None:
        self.graph, self.target = graph, target

    def __call__(self, _: Any) -> SSLBatch:
        # a shallow copy: moving the batch to the device (PyG's Data.to is in place) leaves the datamodule's graph
        return SSLBatch(views=[self.graph.__copy__()], target=self.target, index=torch.arange(self.graph.num_nodes))


class _Sampled:
    """Collate for neighbour-sampled training: a subgraph whose first ``batch_size`` nodes are the seeds."""

    def __init__(self, sampler: NeighborBatchCollator) -> None:
        self.sampler = sampler

    def __call__(self, seeds: Any) -> SSLBatch:
        sub = self.sampler(seeds)
        target = None
        if "ssl_target" in sub:  # the training labels ride along as a node attribute; not a model input
            target = sub.ssl_target
            del sub.ssl_target
        mask = torch.arange(sub.num_nodes) < int(sub.batch_size)
        return SSLBatch(views=[sub], target=target, mask=mask, index=sub.n_id)


class GraphDataModule(L.LightningDataModule):
    """Node-level SSL on one graph (see the module docstring for modes, views, labels and files).

    Args:
        dataset: a name from :data:`GRAPH_DATASETS` (Cora, CiteSeer, PubMed, Computers, Photo, CS, Physics,
            WikiCS, Flickr, Reddit, KarateClub) or ``ogbn-*`` (extra ``ogb``).
        root: folder holding ``<Dataset>/raw``; may be read-only.
        mode: ``"full"`` or ``"neighbor"``.
        num_neighbors: fan-out per hop in ``neighbor`` mode; one entry per encoder layer (checked in setup).
        batch_size: seed nodes per batch in ``neighbor`` mode.
        steps_per_epoch: optimizer steps per epoch in ``full`` mode.
        views: the training views (default: GRACE's Cora views, edges 0.2/0.4, features 0.3/0.4).
        normalize_features: divide each row of (non-negative) features by its sum (the Planetoid/DGI/GRACE
            preprocessing); negative features are an error.
        structural_features: ``"degree"`` or ``"constant"`` features for graphs without ``x``.
        split: ``"public"`` (the dataset's masks; column 0 when there are several) or ``"random"``
            (``train_fraction`` / ``val_fraction`` / rest, seeded by ``split_seed``).
        link_split: hold out ``link_val_fraction`` / ``link_test_fraction`` of the edges with
            ``RandomLinkSplit``; the encoder trains on the remaining graph only (``link_data``).
        sampler_backend: ``"auto"``, ``"pyg"`` or ``"torch"``.
    """

    def __init__(
        self,
        dataset: str = "Cora",
        root: str = "data",
        mode: str = "full",
        num_neighbors: list[int] | None = None,
        batch_size: int = 1024,
        steps_per_epoch: int = 1,
        views: list[GraphView] | None = None,
        normalize_features: bool = True,
        structural_features: str | None = None,
        split: str = "public",
        train_fraction: float = 0.1,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        link_split: bool = False,
        link_val_fraction: float = 0.05,
        link_test_fraction: float = 0.1,
        sampler_backend: str = "auto",
        num_workers: int = 0,
        cache_dir: str | None = None,
        download: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("full", "neighbor"):
            raise ValueError(f"mode must be 'full' or 'neighbor', got {mode!r}.")
        if split not in ("public", "random"):
            raise ValueError(f"split must be 'public' or 'random', got {split!r}.")
        if sampler_backend not in ("auto", "pyg", "torch"):
            raise ValueError(f"sampler_backend must be 'auto', 'pyg' or 'torch', got {sampler_backend!r}.")
        if not (0 < train_fraction < 1 and 0 < val_fraction < 1 and train_fraction + val_fraction < 1):
            raise ValueError(f"train_fraction ({train_fraction}) and val_fraction ({val_fraction}) must be in (0, 1) "
                             "and sum to less than 1 (the rest is the test split).")
        if not (0 < link_val_fraction < 1 and 0 < link_test_fraction < 1 and link_val_fraction + link_test_fraction < 1):
            raise ValueError("link_val_fraction and link_test_fraction must be in (0, 1) and sum to less than 1.")
        if batch_size < 1 or steps_per_epoch < 1:
            raise ValueError(f"batch_size ({batch_size}) and steps_per_epoch ({steps_per_epoch}) must be >= 1.")
        num_neighbors = [10, 10] if num_neighbors is None else list(num_neighbors)
        if not num_neighbors or any(k == 0 or k < -1 for k in num_neighbors):
            raise ValueError(f"num_neighbors must be a non-empty list of fan-outs > 0 (or -1 for all), got {num_neighbors}.")
        if structural_features not in (None, "degree", "constant"):
            raise ValueError(f"Unknown structural_features {structural_features!r}; valid: 'degree', 'constant' or null.")
        views = [GraphView(0.2, 0.3), GraphView(0.4, 0.4)] if views is None else list(views)
        self.views = [v if isinstance(v, GraphView) else GraphView(**v) for v in views]
        _spec(dataset)  # unknown names fail here, before any file is read
        self.dataset_name, self.root, self.mode = dataset, root, mode
        self.num_neighbors, self._seed_batch_size, self.steps_per_epoch = num_neighbors, batch_size, steps_per_epoch
        self.normalize_features, self.structural = normalize_features, structural_features
        self.split, self.train_fraction, self.val_fraction, self.split_seed = split, train_fraction, val_fraction, split_seed
        self.link_split, self.link_fractions = link_split, (link_val_fraction, link_test_fraction)
        self.sampler_backend, self.num_workers = sampler_backend, num_workers
        self.cache_dir, self.download = cache_dir, download
        self._given: Data | None = None
        self.graph: Data | None = None
        self.train_graph: Data | None = None
        self.link_data: tuple[Data, Data, Data] | None = None

    @classmethod
    def from_data(cls, data: Data, **kwargs: Any) -> "GraphDataModule":
        """A datamodule over a graph you built (``Data`` with ``x``, ``edge_index`` and optionally ``y`` and masks)."""
        dm = cls(**kwargs)
        dm._given = data
        dm.dataset_name = "custom"
        return dm

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        if self._given is None:
            load_graph_dataset(self.dataset_name, self.root, self.cache_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.graph is not None:
            return
        data = self._given.__copy__() if self._given is not None else load_graph_dataset(
            self.dataset_name, self.root, self.cache_dir, self.download)
        if self.structural:
            data.x = structural_features(data, self.structural)
        check_graph(data, f"{self.dataset_name} graph")
        data.x = data.x.float()
        if self.normalize_features:
            data.x = row_normalize(data.x, self.dataset_name)
        self._make_node_split(data)
        self.graph = data
        self.train_graph = data
        if self.link_split:
            self._make_link_split(data)

    def _make_node_split(self, data: Data) -> None:
        if getattr(data, "y", None) is None:
            return
        data.y = data.y.reshape(-1) if data.y.dim() > 1 and data.y.shape[-1] == 1 else data.y
        if self.split == "public":
            missing = [k for k in ("train_mask", "val_mask", "test_mask") if getattr(data, k, None) is None]
            if missing:
                raise ValueError(f"{self.dataset_name} has no public split (missing {', '.join(missing)}); "
                                 "use split: random (train_fraction / val_fraction / split_seed).")
            for key in ("train_mask", "val_mask", "test_mask"):
                m = data[key]
                data[key] = m[:, 0] if m.dim() == 2 else m
            return
        g = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(data.num_nodes, generator=g)
        n_train = int(round(self.train_fraction * data.num_nodes))
        n_val = int(round(self.val_fraction * data.num_nodes))
        for key, idx in (("train_mask", perm[:n_train]), ("val_mask", perm[n_train:n_train + n_val]),
                         ("test_mask", perm[n_train + n_val:])):
            mask = torch.zeros(data.num_nodes, dtype=torch.bool)
            mask[idx] = True
            data[key] = mask

    def _make_link_split(self, data: Data) -> None:
        from torch_geometric.transforms import RandomLinkSplit

        val, test = self.link_fractions
        # CPU only (no CUDA generator is touched); PyG's negative sampling draws from Python's `random`
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.split_seed)
            random.seed(self.split_seed)
            try:
                train, val_data, test_data = RandomLinkSplit(
                    num_val=val, num_test=test, is_undirected=True, add_negative_train_samples=False, split_labels=True
                )(data)
            finally:
                random.setstate(py_state)
        self.link_data = (train, val_data, test_data)
        assert_no_edge_leak(train.edge_index, [val_data.pos_edge_label_index, test_data.pos_edge_label_index])
        graph = train.__copy__()  # the graph the encoder sees: no edge labels (they would ride along in subgraphs)
        for key in ("pos_edge_label", "pos_edge_label_index", "neg_edge_label", "neg_edge_label_index"):
            if key in graph:
                del graph[key]
        self.train_graph = graph

    @property
    def num_features(self) -> int:
        self.setup()
        return int(self.graph.x.shape[1])  # type: ignore[union-attr]

    @property
    def num_classes(self) -> int | None:
        self.setup()
        y = getattr(self.graph, "y", None)
        return None if y is None else int(y.max()) + 1

    @property
    def batch_size(self) -> int:
        """Nodes in the loss per step on one device: the seeds in ``neighbor`` mode, every node in ``full``
        mode (what ``lr_scaling`` counts)."""
        return self._seed_batch_size if self.mode == "neighbor" else self.num_nodes

    @property
    def num_nodes(self) -> int:
        self.setup()
        return int(self.graph.num_nodes)  # type: ignore[union-attr]

    def check_encoder(self, encoder: Any, extra_hops: int = 0) -> None:
        """Called by the method's ``setup``: feature width and, in neighbor mode, one fan-out per encoder
        layer plus ``extra_hops`` (message-passing layers the method adds, e.g. GraphMAE's decoder)."""
        in_ch = getattr(encoder, "in_channels", None)
        if isinstance(in_ch, int) and in_ch > 0 and in_ch != self.num_features:
            raise ValueError(
                f"Feature mismatch: {self.dataset_name} nodes have {self.num_features} features but the encoder expects "
                f"{in_ch}. Set `model.init_args.encoder.init_args.in_channels: {self.num_features}`."
            )
        layers = getattr(encoder, "num_layers", None)
        if self.mode == "neighbor" and isinstance(layers, int) and layers + extra_hops != len(self.num_neighbors):
            hops = f"{layers} layers" + (f" plus {extra_hops} decoder hop(s)" if extra_hops else "")
            raise ValueError(
                f"neighbor mode needs one fan-out per message-passing hop: the model has {hops} but "
                f"num_neighbors={self.num_neighbors} has {len(self.num_neighbors)} entries. "
                f"Give {layers + extra_hops} fan-outs."
            )

    # ------------------------------------------------------------------ loaders
    def _full_loader(self, graph: Data, target: Tensor | None, steps: int | None = None) -> DataLoader:
        # evaluation: one map-style item (under DDP every rank gets the whole graph; metrics are unchanged)
        items: Any = range(1) if steps is None else _Steps(steps)
        return DataLoader(items, batch_size=1, collate_fn=_FullGraph(graph, target))

    def _targets(self, graph: Data, key: str) -> Tensor | None:
        return _labels_on(getattr(graph, "y", None), getattr(graph, key, None))

    def train_dataloader(self) -> DataLoader:
        self.setup()
        g = self.train_graph
        target = self._targets(g, "train_mask")
        if self.mode == "full":
            return self._full_loader(g, target, self.steps_per_epoch)
        g = g.__copy__()  # shallow: the tensors are shared, not copied
        if target is not None:
            g.ssl_target = target
        sampler = NeighborBatchCollator(g, self.num_neighbors, backend=self.sampler_backend)
        # drop the last, smaller batch (a one-seed batch has no batch statistics) unless it is the only one
        return DataLoader(torch.arange(g.num_nodes), batch_size=self._seed_batch_size, shuffle=True,
                          collate_fn=_Sampled(sampler), num_workers=self.num_workers,
                          drop_last=g.num_nodes > self._seed_batch_size, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._full_loader(self.train_graph, self._targets(self.train_graph, "val_mask"))

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._full_loader(self.train_graph, self._targets(self.train_graph, "test_mask"))

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        return self._full_loader(self.train_graph, getattr(self.train_graph, "y", None))

    def labelled_train_dataloader(self) -> DataLoader:
        """The clean graph with the training nodes' labels (the kNN probe's bank)."""
        self.setup()
        return self._full_loader(self.train_graph, self._targets(self.train_graph, "train_mask"))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if not (isinstance(batch, SSLBatch) and trainer is not None and trainer.training and len(batch.views) == 1):
            return batch
        graph = batch.views[0]
        batch.views = [make_view(graph, spec) for spec in self.views]
        world = trainer.world_size
        if self.mode == "full" and world > 1:  # every node counts once over the ranks
            batch.mask = batch.index.remainder(world) == trainer.global_rank
        return batch


def assert_no_edge_leak(train_edge_index: Tensor, held_out: Sequence[Tensor]) -> None:
    """Raise if any held-out edge (in either direction) is in the graph the encoder trains on."""
    parts = [train_edge_index] + [h for h in held_out if h.numel()]
    n = int(torch.cat([p.reshape(-1) for p in parts]).max()) + 1 if any(p.numel() for p in parts) else 1
    seen = torch.unique(train_edge_index[0] * n + train_edge_index[1])
    for h in held_out:
        for keys in (h[0] * n + h[1], h[1] * n + h[0]):
            pos = torch.searchsorted(seen, keys).clamp(max=max(seen.numel() - 1, 0))
            hit = seen.numel() > 0 and bool((seen[pos] == keys).any())
            if hit:
                i = int((seen[pos] == keys).nonzero()[0])
                raise AssertionError(f"Edge leakage: held-out edge ({int(h[0, i])}, {int(h[1, i])}) is in the training graph.")


__all__ = ["GRAPH_DATASETS", "GraphDataModule", "GraphView", "assert_no_edge_leak", "check_graph",
           "default_cache_dir", "load_graph_dataset", "row_normalize", "structural_features"]
