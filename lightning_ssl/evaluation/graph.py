"""Graph evaluation protocols on frozen node embeddings (from any method).

The protocol is part of the result: report it next to every number (``node_classification``
returns it as a string).

**Node splits.**

* *Public split* (:func:`masks_to_split`): the fixed Planetoid masks of Yang et al. (2016),
  e.g. 140 train / 500 val / 1000 test nodes on Cora (20 labelled nodes per class).
* *Random split* (:func:`random_node_splits`): for each seed, a uniformly random permutation of the
  nodes (``torch.Generator().manual_seed(seed)``) assigns ``round(train_fraction * N)`` nodes to
  train, ``round(val_fraction * N)`` to validation and the rest to test; GRACE uses 10/10/80
  (Zhu et al., 2020). ``stratify=True`` draws the same totals class by class so that each split
  keeps the label proportions (largest-remainder apportionment, off by at most one node per class).

**Node classification** (:func:`logistic_regression_probe`, the protocol of DGI, Velickovic et al.
2019; GraphMAE, Hou et al. 2022; CCA-SSG, Zhang et al. 2021). A ``nn.Linear(D, C)`` on the frozen
embeddings, initialised ``U(-1/sqrt(D), 1/sqrt(D))`` (weights, then bias) from a private
``torch.Generator().manual_seed(seed)``, is trained full-batch with Adam (default lr 0.01, weight
decay 0, 300 epochs) and cross-entropy on the training nodes only; features are used raw (optional
standardisation with the training nodes' mean/std). After every epoch the validation accuracy is
computed; the weights of the epoch with the best validation accuracy (ties: the earliest) are kept
and the test nodes are scored once, with those weights. The test split is never used for selection.
:func:`node_classification` repeats this over splits x probe seeds and reports the mean and the
*population* standard deviation (``np.std``, ``ddof=0``) of the test accuracies. ``probe="sklearn"``
instead fits :func:`~lightning_ssl.evaluation.linear.linear_probe` (standardised features,
scikit-learn lbfgs logistic regression with inverse L2 strength ``C``) on the train nodes and scores
the test nodes; the validation nodes are unused.

**Link prediction** (:func:`link_prediction`). Each candidate edge ``(u, v)`` is scored by the inner
product ``z_u . z_v`` of the frozen embeddings (``"dot"``, the GAE decoder, Kipf & Welling 2016) or
their cosine similarity (``"cosine"``); no decoder is trained. Reported: ROC-AUC and average
precision over the given positive and negative edges (scikit-learn), and OGB's Hits@K (Hu et al.,
2020): the fraction of positive edges that score strictly higher than the K-th highest negative
score (1.0 when there are fewer than K negatives, as in OGB's evaluator).

**Node clustering** (:func:`node_clustering`). k-means (scikit-learn, ``n_init=10``,
``random_state=seed``) on the raw embeddings with as many clusters as label values, once per seed;
NMI (arithmetic normalisation) and ARI against the labels, mean and population std over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    average_precision_score,
    normalized_mutual_info_score,
    roc_auc_score,
)
from torch import Tensor, nn

from lightning_ssl.evaluation.linear import linear_probe

__all__ = [
    "NodeSplit",
    "link_prediction",
    "logistic_regression_probe",
    "masks_to_split",
    "node_classification",
    "node_clustering",
    "random_node_splits",
]

_PROBES = ("adam", "sklearn", "sklearn_cv")
_SCORES = ("dot", "cosine")
_ADAM_KWARGS = ("lr", "weight_decay", "epochs", "device", "standardize")
_SKLEARN_KWARGS = ("C", "max_iter")
_SKLEARN_CV_KWARGS = ("Cs", "folds")


@dataclass(frozen=True, eq=False)
class NodeSplit:
    """Train / validation / test node indices (int64, sorted) of one evaluation split.

    ``seed`` is the seed that drew a random split (-1 for a fixed split such as the public one);
    ``name`` describes the split (it goes into the protocol string); ``num_nodes``, when known, is
    the size of the graph the split was made for and is checked against the embeddings.
    """

    train: Tensor
    val: Tensor
    test: Tensor
    seed: int
    name: str
    num_nodes: int | None = None

    def sizes(self) -> tuple[int, int, int]:
        """``(n_train, n_val, n_test)``."""
        return int(self.train.numel()), int(self.val.numel()), int(self.test.numel())


# ------------------------------------------------------------------------------------------ checks


def _check_embeddings(x: Any, caller: str) -> Tensor:
    if x is None:
        raise ValueError(f"{caller}: embeddings missing; pass the frozen node embeddings [num_nodes, D]")
    t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(
            f"{caller}: embeddings must be 2-d [num_nodes, D], got shape {tuple(t.shape)}; "
            "reshape to one row per node"
        )
    if not t.is_floating_point():
        t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(
            f"{caller}: embeddings contain NaN or inf; check the encoder (e.g. a diverged run) before evaluating"
        )
    return t


def _check_labels(y: Any, num_nodes: int, caller: str) -> Tensor:
    if y is None:
        raise ValueError(
            f"{caller}: labels missing: node classification/clustering needs labels; pass the node "
            "labels y (e.g. data.y) as a 1-d integer tensor with one entry per node"
        )
    t = y.detach() if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
    if t.ndim == 2 and t.shape[1] == 1:
        t = t.reshape(-1)
    if t.ndim != 1:
        raise ValueError(
            f"{caller}: y must be 1-d [num_nodes] class labels, got shape {tuple(t.shape)}; "
            "multi-label targets are not supported"
        )
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{caller}: y must hold integer class labels, got non-integral floats")
    if t.shape[0] != num_nodes:
        raise ValueError(
            f"{caller}: y has {t.shape[0]} labels but there are {num_nodes} nodes (embedding rows); "
            "pass one label per node, in node order"
        )
    return t.long()


def _as_index(a: Any, what: str, caller: str) -> Tensor:
    t = a.detach() if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    if t.dtype == torch.bool:
        raise TypeError(
            f"{caller}: {what} is a boolean mask but NodeSplit holds node indices; convert masks "
            "with masks_to_split(train_mask, val_mask, test_mask)"
        )
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{caller}: {what} must be integer node indices, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"{caller}: {what} must be a 1-d index tensor, got shape {tuple(t.shape)}")
    return t.long().cpu()


def _check_node_split(split: Any, num_nodes: int, caller: str, *, need_val: bool) -> NodeSplit:
    if not isinstance(split, NodeSplit):
        raise TypeError(
            f"{caller}: expected a NodeSplit (from random_node_splits or masks_to_split), got "
            f"{type(split).__name__}"
        )
    label = f"split {split.name!r} (seed {split.seed})"
    if split.num_nodes is not None and split.num_nodes != num_nodes:
        raise ValueError(
            f"{caller}: {label} was made for {split.num_nodes} nodes but the embeddings have "
            f"{num_nodes} rows; build the split for this graph"
        )
    parts = {}
    for part in ("train", "val", "test"):
        idx = _as_index(getattr(split, part), f"{label} {part} indices", caller)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_nodes):
            raise ValueError(
                f"{caller}: {label} {part} indices out of range [0, {num_nodes}) (min {int(idx.min())}, "
                f"max {int(idx.max())}); the split was built for a different graph"
            )
        if torch.unique(idx).numel() != idx.numel():
            raise ValueError(f"{caller}: {label} {part} indices contain duplicates; each node once")
        parts[part] = idx
    if parts["train"].numel() == 0 or parts["test"].numel() == 0:
        raise ValueError(
            f"{caller}: {label} has an empty train or test set (sizes {split.sizes()}); "
            "increase the fractions or use another split"
        )
    if need_val and parts["val"].numel() == 0:
        raise ValueError(
            f"{caller}: {label} has an empty validation set, but the probe selects its epoch on "
            "validation accuracy; use a split with validation nodes (or probe='sklearn')"
        )
    owner = torch.full((num_nodes,), -1, dtype=torch.long)
    for k, part in enumerate(("train", "val", "test")):
        clash = owner[parts[part]] >= 0
        if clash.any():
            other = ("train", "val", "test")[int(owner[parts[part]][clash][0])]
            raise ValueError(
                f"{caller}: {label} {other} and {part} sets overlap ({int(clash.sum())} shared nodes); "
                "the sets must be disjoint (no selection or training on test nodes)"
            )
        owner[parts[part]] = k
    return NodeSplit(parts["train"], parts["val"], parts["test"], split.seed, split.name, split.num_nodes)


def _check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"random_node_splits: {name} must be a number in (0, 1), got {value!r}")
    return float(value)


# ------------------------------------------------------------------------------------------ splits


def _apportion(counts: np.ndarray, fraction: float, total: int) -> np.ndarray:
    """Integers ``k_c <= counts_c`` near ``fraction * counts_c`` summing to ``total`` (largest remainder)."""
    exact = counts * fraction
    k = np.floor(exact).astype(np.int64)
    rest = exact - k
    order = np.argsort(-rest, kind="stable")
    i = 0
    while k.sum() < total and i < 4 * len(counts):
        c = order[i % len(counts)]
        if k[c] < counts[c]:
            k[c] += 1
        i += 1
    return k


def _pct(f: float) -> str:
    return f"{100 * f:.4g}"


def random_node_splits(
    num_nodes: int,
    train_fraction: float = 0.1,
    val_fraction: float = 0.1,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    y: Tensor | None = None,
    stratify: bool = False,
) -> list[NodeSplit]:
    """Random train/val/test node splits, one per seed; test is the rest (GRACE's 10/10/80, Zhu et al. 2020).

    Each split draws a permutation from ``torch.Generator().manual_seed(seed)`` (the global RNG is
    untouched) and takes ``round(train_fraction * N)`` train and ``round(val_fraction * N)`` val
    nodes. With ``stratify=True`` (needs ``y``) the same totals are drawn class by class, keeping the
    label proportions in each part.

    Raises:
        ValueError: a fraction outside (0, 1), fractions summing to >= 1, an empty part, no seeds,
            ``stratify`` without labels, or labels of the wrong length.
    """
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 3:
        raise ValueError(f"random_node_splits: num_nodes must be an integer >= 3, got {num_nodes!r}")
    num_nodes = int(num_nodes)
    tf = _check_fraction(train_fraction, "train_fraction")
    vf = _check_fraction(val_fraction, "val_fraction")
    if tf + vf >= 1.0:
        raise ValueError(
            f"random_node_splits: train_fraction + val_fraction = {tf + vf:g} must be < 1 so that "
            "test nodes remain; lower the fractions"
        )
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("random_node_splits: seeds is empty; pass at least one seed, e.g. seeds=(0,)")
    n_train, n_val = round(tf * num_nodes), round(vf * num_nodes)
    n_test = num_nodes - n_train - n_val
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(
            f"random_node_splits: {num_nodes} nodes give an empty part (train {n_train}, val {n_val}, "
            f"test {n_test}); use larger fractions or a larger graph"
        )
    labels = None
    if y is not None:
        labels = _check_labels(y, num_nodes, "random_node_splits")
    if stratify and labels is None:
        raise ValueError("random_node_splits: stratify=True needs the node labels; pass y=data.y")
    name = f"{'stratified ' if stratify else ''}random {_pct(tf)}/{_pct(vf)}/{_pct(1 - tf - vf)}"

    splits = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        if not stratify:
            perm = torch.randperm(num_nodes, generator=g)
            tr, va, te = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
        else:
            assert labels is not None
            classes, inverse = torch.unique(labels, return_inverse=True)
            counts = torch.bincount(inverse, minlength=len(classes)).numpy()
            k_tr = _apportion(counts, tf, n_train)
            k_va = _apportion(counts - k_tr, vf / (1 - tf), n_val)
            tr_l, va_l, te_l = [], [], []
            for c in range(len(classes)):
                members = torch.nonzero(inverse == c).reshape(-1)
                members = members[torch.randperm(members.numel(), generator=g)]
                a, b = int(k_tr[c]), int(k_tr[c] + k_va[c])
                tr_l.append(members[:a])
                va_l.append(members[a:b])
                te_l.append(members[b:])
            tr, va, te = torch.cat(tr_l), torch.cat(va_l), torch.cat(te_l)
        splits.append(
            NodeSplit(tr.sort().values.long(), va.sort().values.long(), te.sort().values.long(), seed, name, num_nodes)
        )
    return splits


def masks_to_split(train_mask: Tensor, val_mask: Tensor, test_mask: Tensor, name: str = "public") -> NodeSplit:
    """Turn boolean node masks (e.g. the public Planetoid split, Yang et al. 2016: 140/500/1000 on Cora)
    into a :class:`NodeSplit` with ``seed=-1``.

    Raises:
        TypeError: a mask is not boolean.
        ValueError: masks that are not 1-d, differ in length, overlap, or leave train or test empty.
    """
    masks = []
    for what, m in (("train_mask", train_mask), ("val_mask", val_mask), ("test_mask", test_mask)):
        if m is None:
            raise ValueError(f"masks_to_split: {what} is None; pass all three masks (data.{what})")
        t = m.detach().cpu() if isinstance(m, Tensor) else torch.as_tensor(np.asarray(m))
        if t.dtype != torch.bool:
            raise TypeError(
                f"masks_to_split: {what} must be a boolean mask, got dtype {t.dtype}; for index tensors "
                "build NodeSplit(train, val, test, seed, name) directly"
            )
        if t.ndim != 1:
            raise ValueError(f"masks_to_split: {what} must be 1-d [num_nodes], got shape {tuple(t.shape)}")
        masks.append(t)
    n = masks[0].numel()
    if any(m.numel() != n for m in masks):
        raise ValueError(
            "masks_to_split: masks have different lengths "
            f"({', '.join(str(m.numel()) for m in masks)}); all must have one entry per node"
        )
    split = NodeSplit(*(torch.nonzero(m).reshape(-1).long() for m in masks), seed=-1, name=name, num_nodes=n)
    return _check_node_split(split, n, "masks_to_split", need_val=False)


# ---------------------------------------------------------------------------------- classification


def _adam_probe(
    x: Tensor,
    y: Tensor,
    split: NodeSplit,
    *,
    lr: float,
    weight_decay: float,
    epochs: int,
    seed: int,
    device: torch.device | str | None,
    standardize: bool,
) -> dict[str, float]:
    """The probe itself, on already-checked inputs."""
    dev = x.device if device is None else torch.device(device)
    x = x.to(dev, torch.float32)
    y = y.to(dev)
    tr, va, te = split.train.to(dev), split.val.to(dev), split.test.to(dev)
    if standardize:
        mean = x[tr].mean(0, keepdim=True)
        std = x[tr].std(0, unbiased=False, keepdim=True)
        x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    num_features = x.shape[1]
    num_classes = int(y[torch.cat([tr, va, te])].max()) + 1
    g = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / math.sqrt(num_features)
    weight = torch.empty(num_classes, num_features).uniform_(-bound, bound, generator=g)
    bias = torch.empty(num_classes).uniform_(-bound, bound, generator=g)
    clf = nn.utils.skip_init(nn.Linear, num_features, num_classes, device=dev)  # no global RNG use
    with torch.no_grad():
        clf.weight.copy_(weight)
        clf.bias.copy_(bias)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    x_tr, y_tr, x_va, y_va = x[tr], y[tr], x[va], y[va]

    best_correct, best_epoch, best_state, best_train = -1, -1, None, 0.0
    for epoch in range(epochs):
        clf.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(clf(x_tr), y_tr)
        loss.backward()
        opt.step()
        with torch.no_grad():
            correct = int((clf(x_va).argmax(1) == y_va).sum())
            if correct > best_correct:  # strict: ties keep the earliest epoch
                best_correct, best_epoch = correct, epoch
                best_state = (clf.weight.detach().clone(), clf.bias.detach().clone())
                best_train = float((clf(x_tr).argmax(1) == y_tr).float().mean())
    assert best_state is not None
    with torch.no_grad():
        test_acc = float((F.linear(x[te], *best_state).argmax(1) == y[te]).float().mean())
    return {
        "test_acc": test_acc,
        "val_acc": best_correct / va.numel(),
        "best_epoch": best_epoch,
        "train_acc": best_train,
    }


def _check_probe_hparams(lr: float, weight_decay: float, epochs: int, caller: str) -> None:
    if not lr > 0:
        raise ValueError(f"{caller}: lr must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"{caller}: weight_decay must be >= 0, got {weight_decay!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"{caller}: epochs must be an integer >= 1, got {epochs!r}")


def _check_classification_split(y: Tensor, split: NodeSplit, caller: str) -> None:
    used = torch.cat([split.train, split.val, split.test])
    if (y[used] < 0).any():
        raise ValueError(
            f"{caller}: split {split.name!r} contains nodes with negative labels (e.g. -1 = unlabelled); "
            "only labelled nodes may be in train/val/test"
        )
    n_classes = int(torch.unique(y[split.train]).numel())
    if n_classes < 2:
        raise ValueError(
            f"{caller}: the train set of split {split.name!r} (seed {split.seed}) has {n_classes} class(es); "
            "at least 2 are needed: use a larger train fraction or stratify=True"
        )


def logistic_regression_probe(
    x: Tensor,
    y: Tensor,
    split: NodeSplit,
    *,
    lr: float = 0.01,
    weight_decay: float = 0.0,
    epochs: int = 300,
    seed: int = 0,
    device: torch.device | str | None = None,
    standardize: bool = False,
) -> dict[str, float]:
    """Logistic-regression probe of DGI (Velickovic et al. 2019) / GraphMAE (Hou et al. 2022) / CCA-SSG.

    A ``nn.Linear(D, C)`` (``C`` = largest label among the split's nodes + 1) initialised ``U(-1/sqrt(D), 1/sqrt(D))`` (weights,
    then bias) from ``torch.Generator().manual_seed(seed)`` is trained full-batch with Adam and
    cross-entropy on the training nodes' frozen embeddings for ``epochs`` epochs. Validation accuracy
    is computed after every epoch; the test nodes are scored once, with the weights of the epoch of
    best validation accuracy (ties: the earliest). The global RNG is not used.

    Args:
        x: frozen node embeddings ``[N, D]``.
        y: node labels ``[N]``.
        split: the train / val / test nodes.
        standardize: standardise features with the training nodes' mean and std (off by default).
        device: where to train; default ``x``'s device.

    Returns:
        ``{"test_acc", "val_acc", "best_epoch", "train_acc"}``: accuracies in [0, 1] at the selected
        epoch, whose 0-based index (epoch ``e`` = after ``e + 1`` Adam steps) is ``best_epoch``.
    """
    caller = "logistic_regression_probe"
    x = _check_embeddings(x, caller)
    y = _check_labels(y, x.shape[0], caller)
    split = _check_node_split(split, x.shape[0], caller, need_val=True)
    _check_probe_hparams(lr, weight_decay, epochs, caller)
    _check_classification_split(y, split, caller)
    return _adam_probe(
        x, y, split, lr=lr, weight_decay=weight_decay, epochs=int(epochs), seed=seed, device=device,
        standardize=standardize,
    )


def _describe_splits(splits: list[NodeSplit]) -> str:
    names = list(dict.fromkeys(s.name for s in splits))
    sizes = list(dict.fromkeys(s.sizes() for s in splits))
    size_str = "/".join(map(str, sizes[0])) if len(sizes) == 1 else "sizes vary"
    if len(splits) == 1:
        s = splits[0]
        seed = f" (seed {s.seed})" if s.seed >= 0 else ""
        return f"{s.name} split{seed} {size_str}"
    seeds = ", ".join(str(s.seed) for s in splits)
    return f"{len(splits)} {' + '.join(names)} splits (seeds {seeds}) {size_str}"


def _cv_logistic_regression(x: np.ndarray, y: np.ndarray, split: NodeSplit, Cs: Sequence[float], folds: int,
                            seed: int) -> float:
    """GRACE's probe: ``GridSearchCV(OneVsRestClassifier(LogisticRegression(solver="liblinear")))``."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.multiclass import OneVsRestClassifier

    tr, te = split.train.cpu().numpy(), split.test.cpu().numpy()
    n_splits = max(2, min(folds, int(np.bincount(y[tr]).max())))
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes with fewer members than folds
        clf = GridSearchCV(OneVsRestClassifier(LogisticRegression(solver="liblinear")),
                           {"estimator__C": list(Cs)}, cv=cv).fit(x[tr], y[tr])
    return float((clf.predict(x[te]) == y[te]).mean())


def node_classification(
    embeddings: Tensor,
    y: Tensor,
    splits: NodeSplit | Sequence[NodeSplit],
    *,
    probe: str = "adam",
    probe_seeds: Sequence[int] = (0,),
    **probe_kwargs: Any,
) -> dict[str, Any]:
    """Node classification accuracy of a linear probe on frozen embeddings, over splits x probe seeds.

    ``probe="adam"``: :func:`logistic_regression_probe` (DGI / GraphMAE / CCA-SSG protocol; kwargs
    ``lr``, ``weight_decay``, ``epochs``, ``device``, ``standardize``). ``probe="sklearn"``:
    :func:`~lightning_ssl.evaluation.linear.linear_probe` fitted on the train nodes and scored on the
    test nodes, validation nodes unused (kwargs ``C`` (default 1.0), ``max_iter``).
    ``probe="sklearn_cv"``: GRACE's evaluation (Zhu et al. 2020): embeddings l2-normalised per row,
    one-vs-rest liblinear logistic regression with ``C`` chosen by ``folds``-fold cross-validation on
    the train nodes from ``Cs`` (default 2^-10 ... 2^9), scored on the test nodes; validation unused.

    Returns:
        ``{"mean", "std", "accs", "protocol"}``: test accuracies in [0, 1] (``accs``, ordered split
        by split, probe seeds inside), their mean and *population* std (``np.std``, ``ddof=0``), and a
        one-line description of the protocol to report with the numbers.
    """
    caller = "node_classification"
    if probe not in _PROBES:
        raise ValueError(f"{caller}: unknown probe {probe!r}; valid probes: {', '.join(_PROBES)}")
    allowed = {"adam": _ADAM_KWARGS, "sklearn": _SKLEARN_KWARGS, "sklearn_cv": _SKLEARN_CV_KWARGS}[probe]
    unknown = sorted(set(probe_kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"{caller}: unknown keyword(s) {unknown} for probe={probe!r}; valid: {', '.join(allowed)}"
        )
    x = _check_embeddings(embeddings, caller)
    labels = _check_labels(y, x.shape[0], caller)
    split_list = [splits] if isinstance(splits, NodeSplit) else list(splits)
    if not split_list:
        raise ValueError(f"{caller}: no splits given; pass a NodeSplit or a list from random_node_splits")
    split_list = [_check_node_split(s, x.shape[0], caller, need_val=probe == "adam") for s in split_list]
    for s in split_list:
        _check_classification_split(labels, s, caller)
    seeds = [int(s) for s in probe_seeds]
    if not seeds:
        raise ValueError(f"{caller}: probe_seeds is empty; pass at least one seed, e.g. (0,)")

    accs: list[float] = []
    if probe == "adam":
        kw = {"lr": 0.01, "weight_decay": 0.0, "epochs": 300, "device": None, "standardize": False}
        kw.update(probe_kwargs)
        _check_probe_hparams(kw["lr"], kw["weight_decay"], kw["epochs"], caller)
        for s in split_list:
            for seed in seeds:
                accs.append(_adam_probe(x, labels, s, seed=seed, **kw)["test_acc"])
        probe_str = (
            f"logistic regression (Adam lr {kw['lr']:g}, wd {kw['weight_decay']:g}, {kw['epochs']} epochs, "
            f"test at best val{', standardised features' if kw['standardize'] else ''})"
        )
    elif probe == "sklearn_cv":
        Cs = [float(c) for c in probe_kwargs.get("Cs", [2.0 ** k for k in range(-10, 10)])]
        folds = int(probe_kwargs.get("folds", 5))
        xn = F.normalize(x.cpu().double(), dim=1).numpy()
        yn = labels.cpu().numpy()
        for s in split_list:
            for seed in seeds:
                accs.append(_cv_logistic_regression(xn, yn, s, Cs, folds, seed))
        probe_str = (f"logistic regression (l2-normalised embeddings, one-vs-rest liblinear, C from {len(Cs)} values "
                     f"by {folds}-fold CV on the train nodes, train -> test, val unused)")
    else:
        C = float(probe_kwargs.get("C", 1.0))
        max_iter = int(probe_kwargs.get("max_iter", 1000))
        xc, yc = x.cpu(), labels.cpu()
        for s in split_list:
            for seed in seeds:
                res = linear_probe(xc[s.train], yc[s.train], xc[s.test], yc[s.test], C=C, max_iter=max_iter, seed=seed)
                accs.append(res["acc"])
        probe_str = (
            f"logistic regression (scikit-learn lbfgs, C {C:g}, standardised features, train -> test, val unused)"
        )
    n_seeds = f"{len(seeds)} probe seed{'s' if len(seeds) != 1 else ''}"
    protocol = (
        f"{_describe_splits(split_list)}, {probe_str}, {n_seeds}; "
        f"mean +- population std over {len(accs)} run{'s' if len(accs) != 1 else ''}"
    )
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "accs": accs, "protocol": protocol}


# -------------------------------------------------------------------------------- link prediction


def _check_edges(e: Any, num_nodes: int, what: str, caller: str) -> Tensor:
    if e is None:
        raise ValueError(f"{caller}: {what} is None; pass a [2, E] integer edge index")
    t = e.detach() if isinstance(e, Tensor) else torch.as_tensor(np.asarray(e))
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{caller}: {what} must be an integer [2, E] edge index, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[0] != 2:
        raise ValueError(
            f"{caller}: {what} must have shape [2, E] (source row, target row), got {tuple(t.shape)}; "
            "transpose an [E, 2] edge list"
        )
    if t.shape[1] == 0:
        fix = "pass held-out edges"
        if "neg" in what:
            fix = "sample negatives, e.g. with torch_geometric.utils.negative_sampling"
        raise ValueError(f"{caller}: {what} has no edges; {fix}")
    if int(t.min()) < 0 or int(t.max()) >= num_nodes:
        raise ValueError(
            f"{caller}: {what} node ids out of range [0, {num_nodes}) (min {int(t.min())}, max {int(t.max())}); "
            "the edges must index rows of the embeddings"
        )
    return t.long()


def _edge_scores(z: Tensor, edges: Tensor, chunk: int = 65536) -> Tensor:
    edges = edges.to(z.device)
    out = [
        (z[edges[0, i : i + chunk]] * z[edges[1, i : i + chunk]]).sum(-1) for i in range(0, edges.shape[1], chunk)
    ]
    return torch.cat(out).cpu()


def link_prediction(
    embeddings: Tensor,
    pos_edge_index: Tensor,
    neg_edge_index: Tensor,
    *,
    score: str = "dot",
    hits_k: Sequence[int] = (20, 50, 100),
) -> dict[str, float]:
    """Score held-out edges with frozen embeddings: ``"dot"`` (GAE decoder, Kipf & Welling 2016) or ``"cosine"``.

    Scores are computed in float64; no decoder is trained.

    Returns:
        ``{"auc", "ap", "hits@K" for K in hits_k}``: ROC-AUC and average precision of positives vs
        negatives (scikit-learn) and OGB's Hits@K (Hu et al. 2020): the fraction of positive edges
        scoring strictly above the K-th highest negative score, 1.0 if there are fewer than K negatives.
    """
    caller = "link_prediction"
    if score not in _SCORES:
        raise ValueError(f"{caller}: unknown score {score!r}; valid scores: {', '.join(_SCORES)}")
    ks = [int(k) for k in hits_k]
    if any(k < 1 for k in ks):
        raise ValueError(f"{caller}: hits_k must be positive integers, got {list(hits_k)}")
    z = _check_embeddings(embeddings, caller).double()
    pos = _check_edges(pos_edge_index, z.shape[0], "pos_edge_index", caller)
    neg = _check_edges(neg_edge_index, z.shape[0], "neg_edge_index (negative edges)", caller)
    if score == "cosine":
        z = F.normalize(z, dim=1)
    s_pos, s_neg = _edge_scores(z, pos), _edge_scores(z, neg)
    labels = np.concatenate([np.ones(s_pos.numel()), np.zeros(s_neg.numel())])
    scores = torch.cat([s_pos, s_neg]).numpy()
    out = {"auc": float(roc_auc_score(labels, scores)), "ap": float(average_precision_score(labels, scores))}
    for k in ks:
        if s_neg.numel() < k:
            out[f"hits@{k}"] = 1.0
        else:
            kth = torch.topk(s_neg, k).values[-1]
            out[f"hits@{k}"] = float((s_pos > kth).double().mean())
    return out


# ------------------------------------------------------------------------------------- clustering


def node_clustering(
    embeddings: Tensor,
    y: Tensor,
    n_clusters: int | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> dict[str, float]:
    """k-means (scikit-learn, ``n_init=10``, ``random_state=seed``) on frozen embeddings, NMI and ARI vs labels.

    ``n_clusters`` defaults to the number of distinct labels. Returns ``{"nmi", "nmi_std", "ari",
    "ari_std"}``: means and population stds (``np.std``) over ``seeds``.
    """
    caller = "node_clustering"
    x = _check_embeddings(embeddings, caller)
    labels = _check_labels(y, x.shape[0], caller).cpu().numpy()
    k = int(np.unique(labels).size) if n_clusters is None else n_clusters
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= x.shape[0]:
        raise ValueError(
            f"{caller}: n_clusters must be an integer in [2, num_nodes={x.shape[0]}], got {k!r}"
            + ("; the labels have a single class" if n_clusters is None else "")
        )
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError(f"{caller}: seeds is empty; pass at least one seed, e.g. (0,)")
    data = x.detach().cpu().double().numpy()
    nmi, ari = [], []
    for seed in seeds:
        pred = KMeans(n_clusters=int(k), n_init=10, random_state=seed).fit_predict(data)
        nmi.append(normalized_mutual_info_score(labels, pred))
        ari.append(adjusted_rand_score(labels, pred))
    return {
        "nmi": float(np.mean(nmi)),
        "nmi_std": float(np.std(nmi)),
        "ari": float(np.mean(ari)),
        "ari_std": float(np.std(ari)),
    }
