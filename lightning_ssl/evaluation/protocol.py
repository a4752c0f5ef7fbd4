"""Image evaluation protocols on frozen features, in the style of the MedMNIST SSL benchmarks.

The protocol is part of the result: :func:`results_table` writes it under every table.

**Label fractions** (:func:`stratified_subset`). A fraction ``f`` of the ``N`` training images keeps
``n = round(f * N)`` of them, drawn class by class: class ``c`` with ``N_c`` images gets about
``n * N_c / N`` (largest-remainder apportionment, and at least one image, so every class is labelled),
the images of each class are drawn by a permutation of ``torch.Generator().manual_seed(seed)`` (the global
RNG is untouched). ``f = 1.0`` keeps every image, so its subset is the same for every seed.

**Probes at every fraction x seed** (:func:`linear_probe_fractions`, :func:`knn_fractions`). For each
fraction and seed: draw the subset with that seed, fit on it, score the full test split once. Reported:
accuracy, balanced accuracy (mean recall over classes) and AUROC (binary: of the class-1 score;
multiclass: macro one-vs-rest), as the mean and the *population* standard deviation (``np.std``,
``ddof=0``) over the seeds. The linear probe is :func:`~lightning_ssl.evaluation.linear_probe`
(scikit-learn lbfgs logistic regression, inverse L2 strength ``C``, its ``random_state`` = the seed); it
standardises the features with the mean and std of the *training subset* itself, so nothing is
standardised twice. The kNN probe is :func:`~lightning_ssl.evaluation.knn_classify` (DINO's weighted
cosine kNN, k=20, T=0.07) on features standardised with the training subset's mean and std
(``standardize=False`` gives the raw DINO protocol); its class scores for AUROC are the normalised vote
weights. Both classifiers are deterministic given their training set, so at ``f = 1.0`` (same subset for
every seed) the std over seeds is 0: the spread at smaller fractions is the spread over labelled subsets.

**Transfer** (:func:`pretraining_eval_datamodule`). Another dataset is evaluated through the
*pretraining's* evaluation transform: the same image size, channel count and normalisation mean/std as
pretraining (:func:`pretraining_eval_settings`), not the new dataset's defaults, so that e.g. RGB
RetinaMNIST is converted to gray for a 1-channel PneumoniaMNIST encoder, and a 64 px file is resized to
the 28 px the encoder was trained on. Overriding any of these warns (:class:`EvalTransformMismatchWarning`).

**OOD detection** (:func:`knn_ood_auroc`, Sun et al. 2022, "Out-of-Distribution Detection with Deep
Nearest Neighbors"): features L2-normalised, the OOD score of a sample is its Euclidean distance to the
k-th nearest (normalised) training feature (k=50, the paper's CIFAR-10 setting); reported are the AUROC
of telling the OOD samples (positives) from the in-distribution test samples, and the FPR at 95% TPR
of the in-distribution samples (the fraction of OOD samples kept at the first threshold that keeps at least
95% of the in-distribution ones).

:func:`evaluate_image_protocol` runs all of it for one model and ``lightning-ssl evaluate-images`` (this
module's :func:`main`) for a training config and checkpoint.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor, nn
from torchvision.transforms import v2

from lightning_ssl.evaluation.features import _check_split, extract_features
from lightning_ssl.evaluation.knn import knn_classify
from lightning_ssl.evaluation.linear import _balanced_accuracy, _macro_ovr_auroc, linear_probe

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_FRACTIONS",
    "DEFAULT_SEEDS",
    "EvalTransformMismatchWarning",
    "EvalTransformSettings",
    "evaluate_image_protocol",
    "knn_fractions",
    "knn_ood_auroc",
    "linear_probe_fractions",
    "pretraining_eval_datamodule",
    "pretraining_eval_settings",
    "pretraining_eval_transform",
    "protocol_text",
    "results_table",
    "stratified_subset",
]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
_METRICS = ("acc", "balanced_acc", "auroc")

# ------------------------------------------------------------------------------------ label fractions


def _check_labels_1d(labels: Any, caller: str) -> Tensor:
    t = labels.detach().cpu() if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
    if t.ndim == 2 and t.shape[1] == 1:
        t = t.reshape(-1)
    if t.ndim != 1:
        raise ValueError(
            f"{caller}: labels must be 1-d [N] class labels, got shape {tuple(t.shape)}; multi-label "
            "targets (e.g. ChestMNIST) are not supported"
        )
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{caller}: labels must be integer class labels, got non-integral floats")
    if t.numel() == 0:
        raise ValueError(f"{caller}: labels are empty; pass the labels of the training split")
    return t.long()


def _check_fraction(fraction: Any, caller: str) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise ValueError(f"{caller}: fraction must be a number in (0, 1], got {fraction!r}")
    f = float(fraction)
    if not math.isfinite(f):
        raise ValueError(f"{caller}: fraction must be finite, got {f}; pass a number in (0, 1], e.g. 0.1 for 10%")
    if f <= 0.0:
        raise ValueError(f"{caller}: fraction must be > 0, got {f}; pass a number in (0, 1], e.g. 0.01 for 1%")
    if f > 1.0:
        raise ValueError(
            f"{caller}: fraction must be <= 1, got {f}; fractions are of the training split (1.0 = all "
            "labels), not percentages: write 0.1 for 10%"
        )
    return f


def _subset_sizes(counts: np.ndarray, fraction: float, caller: str) -> np.ndarray:
    """Images per class for ``fraction`` of ``counts.sum()``: about proportional, at least one each."""
    n_total, n_classes = int(counts.sum()), len(counts)
    n = round(fraction * n_total)
    if n < n_classes:
        raise ValueError(
            f"{caller}: fraction {fraction:g} of {n_total} training samples keeps {n}, fewer than the "
            f"{n_classes} classes, but every class needs at least one labelled sample; use a fraction >= "
            f"{n_classes / n_total:.4g} ({n_classes}/{n_total})"
        )
    exact = counts * (n / n_total)
    k = np.minimum(np.maximum(np.floor(exact).astype(np.int64), 1), counts)
    while k.sum() < n:  # largest remainder first, among classes with images left
        room = np.where(k < counts, exact - k, -np.inf)
        k[int(np.argmax(room))] += 1
    while k.sum() > n:  # the at-least-one rule overshot: take back where most over the exact share
        over = np.where(k > 1, k - exact, -np.inf)
        k[int(np.argmax(over))] -= 1
    return k


def stratified_subset(labels: Any, fraction: float, seed: int = 0) -> Tensor:
    """Indices (int64, sorted) of a class-stratified, seeded ``fraction`` of the samples.

    Keeps ``round(fraction * N)`` samples: class ``c`` gets about ``fraction * N_c`` of them
    (largest-remainder apportionment) and at least one. The members of each class are drawn by
    ``torch.randperm`` from ``torch.Generator().manual_seed(seed)``; the global RNG is untouched.
    ``fraction=1.0`` returns every index whatever the seed.

    Args:
        labels: integer class labels ``[N]`` (``[N, 1]`` is flattened).
        fraction: in ``(0, 1]``, e.g. 0.01 for 1% of the labels.
        seed: seed of the draw.

    Raises:
        ValueError: a fraction that is not finite, <= 0 or > 1; one that keeps fewer samples than there
            are classes (the message gives the smallest fraction that works); labels that are not 1-d
            integer class labels.
    """
    caller = "stratified_subset"
    f = _check_fraction(fraction, caller)
    y = _check_labels_1d(labels, caller)
    classes, inverse = torch.unique(y, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(classes)).numpy()
    sizes = _subset_sizes(counts, f, caller)
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in range(len(classes)):
        members = torch.nonzero(inverse == c).reshape(-1)
        picked.append(members[torch.randperm(members.numel(), generator=g)[: int(sizes[c])]])
    return torch.cat(picked).sort().values.long()


def _check_grid(fractions: Sequence[float], seeds: Sequence[int], caller: str) -> tuple[list[float], list[int]]:
    fracs = [_check_fraction(f, caller) for f in fractions]
    if not fracs:
        raise ValueError(f"{caller}: fractions is empty; pass at least one, e.g. fractions=(1.0,)")
    if len(set(fracs)) != len(fracs):
        raise ValueError(f"{caller}: fractions {fracs} contain duplicates; list each fraction once")
    if isinstance(seeds, (int, np.integer)) or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seeds
    ):
        raise ValueError(f"{caller}: seeds must be a sequence of integers, got {seeds!r}; e.g. seeds=(0, 1, 2)")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError(f"{caller}: seeds is empty; pass at least one seed, e.g. seeds=(0,)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{caller}: seeds {seeds} contain duplicates; repeated seeds draw the same subset")
    return fracs, seeds


def _summarise(fraction: float, runs: list[dict[str, Any]], n_labelled: int, n_test: int) -> dict[str, Any]:
    out: dict[str, Any] = {"fraction": fraction, "n_train": n_labelled, "n_test": n_test, "seeds": len(runs)}
    for m in _METRICS:
        values = np.array([r[m] for r in runs], dtype=np.float64)
        if np.all(values == values[0]):  # e.g. fraction 1.0: exactly 0, not a rounding residue
            out[f"{m}_mean"], out[f"{m}_std"] = float(values[0]), 0.0
        else:
            out[f"{m}_mean"], out[f"{m}_std"] = float(np.mean(values)), float(np.std(values))
    out["runs"] = runs
    return out


def _fraction_grid(
    train_x: Any, train_y: Any, test_x: Any, test_y: Any, fractions: Sequence[float], seeds: Sequence[int],
    caller: str, fit: Any,
) -> dict[float, dict[str, Any]]:
    tx, ty, vx, vy = _check_split(train_x, train_y, test_x, test_y, caller=caller)
    fracs, seeds = _check_grid(fractions, seeds, caller)
    counts = torch.bincount(torch.unique(ty.cpu(), return_inverse=True)[1]).numpy()
    for f in fracs:  # every fraction is checked before anything is fitted
        _subset_sizes(counts, f, caller)
    results = {}
    for f in fracs:
        runs = []
        for seed in seeds:
            idx = stratified_subset(ty.cpu(), f, seed).to(tx.device)
            runs.append({"seed": seed, **fit(tx[idx], ty[idx], vx, vy, seed)})
        results[f] = _summarise(f, runs, int(idx.numel()), int(vy.shape[0]))
    return results


def linear_probe_fractions(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    C: float = 1.0,
    max_iter: int = 1000,
) -> dict[float, dict[str, Any]]:
    """Linear probe on a class-stratified ``fraction`` of the training labels, for every fraction x seed.

    Each ``(fraction, seed)`` draws :func:`stratified_subset` ``(train_y, fraction, seed)`` and fits
    :func:`~lightning_ssl.evaluation.linear_probe` (standardised with the subset's own mean/std,
    logistic regression with inverse L2 strength ``C``, ``random_state=seed``) on it; the whole test
    split is scored.

    Returns:
        ``{fraction: {"fraction", "n_train" (labelled samples per seed), "n_test", "seeds" (count),
        "acc_mean", "acc_std", "balanced_acc_mean", "balanced_acc_std", "auroc_mean", "auroc_std",
        "runs" (the per-seed results)}}``, std being the population std over seeds. At fraction 1.0 the
        subset is the same for every seed, and lbfgs is deterministic, so its std is 0.

    Raises:
        ValueError: bad features or labels (as :func:`~lightning_ssl.evaluation.linear_probe`), a bad
            fraction (as :func:`stratified_subset`, checked before anything is fitted), no seeds.
    """
    return _fraction_grid(
        train_x, train_y, test_x, test_y, fractions, seeds, "linear_probe_fractions",
        lambda x, y, vx, vy, seed: linear_probe(x, y, vx, vy, C=C, max_iter=max_iter, seed=seed),
    )


@torch.no_grad()
def _knn_vote_shares(
    bank: Tensor, bank_idx: Tensor, queries: Tensor, num_classes: int, k: int, temperature: float
) -> Tensor:
    """The normalised class votes ``[M, num_classes]`` of :func:`~lightning_ssl.evaluation.knn_predict`
    (same neighbours and weights; its prediction is the argmax), chunked to about 16M similarities."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    chunk = max(1, (1 << 24) // max(bank.shape[0], 1))
    out = []
    for start in range(0, queries.shape[0], chunk):
        top_sim, top_idx = (queries[start : start + chunk] @ bank.T).topk(k, dim=1)
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        votes = torch.zeros(top_sim.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, bank_idx[top_idx], weights)
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out)


def _standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Standardise both with the training rows' mean and population std (constant features: std 1)."""
    mean = train.mean(dim=0)
    std = train.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std


def knn_fractions(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    k: int = 20,
    temperature: float = 0.07,
    standardize: bool = True,
) -> dict[float, dict[str, Any]]:
    """Weighted kNN on a class-stratified ``fraction`` of the training labels, for every fraction x seed.

    Each ``(fraction, seed)`` draws :func:`stratified_subset` ``(train_y, fraction, seed)`` as the
    neighbour bank; with ``standardize`` the bank and test features are standardised with the bank's
    mean and std first. Accuracy is :func:`~lightning_ssl.evaluation.knn_classify`'s (``k`` clipped to
    the bank size); balanced accuracy is of its predictions and AUROC of the normalised vote weights.

    Returns:
        As :func:`linear_probe_fractions`, each run also holding ``k`` as used. kNN is deterministic,
        so at fraction 1.0 (the same bank for every seed) the std is 0.

    Raises:
        ValueError: as :func:`linear_probe_fractions`, ``k < 1`` or ``temperature <= 0``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"knn_fractions: k must be an integer >= 1, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"knn_fractions: temperature must be > 0, got {temperature}")

    def fit(x: Tensor, y: Tensor, vx: Tensor, vy: Tensor, seed: int) -> dict[str, Any]:
        if standardize:
            x, vx = _standardise(x, vx)
        res = knn_classify(x, y, vx, vy, k=k, temperature=temperature)
        classes, y_idx = torch.unique(y, return_inverse=True)
        shares = _knn_vote_shares(x, y_idx, vx.to(x.device), classes.numel(), res["k"], temperature)
        pred = classes[shares.argmax(dim=1)].cpu().numpy()
        yte = vy.cpu().numpy()
        return {
            "acc": res["acc"],
            "balanced_acc": _balanced_accuracy(yte, pred),
            "auroc": _macro_ovr_auroc(yte, shares.double().cpu().numpy(), classes.cpu().numpy()),
            "k": res["k"],
            "n_train": res["n_train"],
            "n_test": res["n_test"],
        }

    return _fraction_grid(train_x, train_y, test_x, test_y, fractions, seeds, "knn_fractions", fit)


# ---------------------------------------------------------------------------------------------- OOD


def _check_features(x: Any, name: str, caller: str) -> Tensor:
    t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{caller}: {name} must be 2-d [N, D], got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{caller}: {name} is empty; every set needs at least one sample")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{caller}: {name} contains NaN or inf; check the encoder before evaluating")
    return t


@torch.no_grad()
def _kth_neighbour_distance(bank: Tensor, queries: Tensor, k: int) -> Tensor:
    """Euclidean distance ``[M]`` of each L2-normalised query to its k-th nearest L2-normalised bank row."""
    bank = F.normalize(bank, dim=1)
    queries = F.normalize(queries.to(bank.device), dim=1)
    chunk = max(1, (1 << 24) // bank.shape[0])
    sims = [
        (queries[s : s + chunk] @ bank.T).topk(k, dim=1).values[:, -1] for s in range(0, queries.shape[0], chunk)
    ]
    # for unit vectors ||a - b||^2 = 2 - 2 a.b
    return (2.0 - 2.0 * torch.cat(sims)).clamp_min(0.0).sqrt()


def knn_ood_auroc(train_x: Any, in_test_x: Any, ood_x: Any, k: int = 50) -> dict[str, float]:
    """Out-of-distribution detection by the k-th nearest-neighbour distance (Sun et al. 2022).

    All features are L2-normalised; the OOD score of a sample is its Euclidean distance to the ``k``-th
    nearest training feature (larger = more OOD). No labels are used.

    Args:
        train_x: in-distribution training features ``[N, D]`` (the neighbour bank).
        in_test_x: in-distribution test features ``[M, D]``.
        ood_x: out-of-distribution features ``[P, D]``.
        k: neighbour rank, clipped to ``N``; the paper uses 50 on CIFAR-10 and 1000 on ImageNet (and
            ``k=1`` is the plain nearest-neighbour distance).

    Returns:
        ``{"auroc", "fpr95", "k", "n_train", "n_in", "n_ood"}``: ``auroc`` of separating OOD
        (positive) from in-distribution test samples by the score (scikit-learn ``roc_auc_score``; 0.5 =
        chance, 1.0 = every OOD sample is farther than every in-distribution one); ``fpr95``: the fraction
        of OOD samples scored in-distribution at the threshold that keeps 95% of the in-distribution
        test samples (lower is better); ``k`` as used.

    Raises:
        ValueError: features that are not 2-d, empty, non-finite or of different widths; ``k < 1``.
    """
    caller = "knn_ood_auroc"
    bank = _check_features(train_x, "train_x", caller)
    in_x = _check_features(in_test_x, "in_test_x", caller)
    out_x = _check_features(ood_x, "ood_x", caller)
    widths = {"train_x": bank.shape[1], "in_test_x": in_x.shape[1], "ood_x": out_x.shape[1]}
    if len(set(widths.values())) != 1:
        raise ValueError(f"{caller}: the feature widths differ ({widths}); extract all three with the same encoder")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{caller}: k must be an integer >= 1, got {k!r}")
    k = min(int(k), bank.shape[0])
    scores = torch.cat([_kth_neighbour_distance(bank, in_x, k), _kth_neighbour_distance(bank, out_x, k)])
    scores_np = scores.double().cpu().numpy()
    is_ood = np.r_[np.zeros(in_x.shape[0]), np.ones(out_x.shape[0])]
    # FPR95: in-distribution is the positive class of the detector, with score -distance
    fpr, tpr, _ = roc_curve(1 - is_ood, -scores_np, drop_intermediate=False)
    return {
        "auroc": float(roc_auc_score(is_ood, scores_np)),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
        "k": k,
        "n_train": int(bank.shape[0]),
        "n_in": int(in_x.shape[0]),
        "n_ood": int(out_x.shape[0]),
    }


# ------------------------------------------------------------------- evaluation transforms from pretraining


class EvalTransformMismatchWarning(UserWarning):
    """An evaluation transform setting (image size, channels, mean, std) differs from pretraining's."""


@dataclass(frozen=True)
class EvalTransformSettings:
    """What the encoder saw in pretraining: image side, channels and normalisation."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class _ToChannels:
    """Convert a uint8 ``[C, H, W]`` tensor or a PIL image to ``channels`` channels (ITU-R 601 luma for RGB -> gray)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, image: Any) -> Any:
        from lightning_ssl.data.image import _to_channels

        return _to_channels(image, self.channels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels})"


def _image_datamodule(pretrain: Any, caller: str) -> Any:
    """``pretrain`` as an :class:`~lightning_ssl.data.ImageDataModule`: one, its ``hparams``, its
    ``init_args``, a ``{"class_path", "init_args"}`` entry or a whole config with a ``data`` entry."""
    from lightning_ssl.data.image import ImageDataModule

    if isinstance(pretrain, ImageDataModule):
        return pretrain
    if not isinstance(pretrain, Mapping):
        raise TypeError(
            f"{caller}: expected the pretraining ImageDataModule, its hparams or its config dict, got "
            f"{type(pretrain).__name__}; image evaluation protocols need an image datamodule"
        )
    cfg: Mapping[str, Any] = pretrain
    if isinstance(cfg.get("data"), Mapping):
        cfg = cfg["data"]
    if "class_path" in cfg:
        if str(cfg["class_path"]).rsplit(".", 1)[-1] != "ImageDataModule":
            raise ValueError(
                f"{caller}: the config's datamodule is {cfg['class_path']}, not ImageDataModule; the image "
                "protocols evaluate image encoders (use evaluate-graph, evaluate-points or evaluate-eeg)"
            )
        cfg = cfg.get("init_args") or {}
    try:
        return ImageDataModule(**dict(cfg))
    except TypeError as err:
        raise ValueError(
            f"{caller}: the config is not a set of ImageDataModule arguments ({err}); pass the datamodule, "
            "its hparams, or the data: entry of an image training config"
        ) from None


def pretraining_eval_settings(pretrain: Any) -> EvalTransformSettings:
    """The image size, channels and mean/std of the pretraining datamodule's evaluation transform.

    ``pretrain``: an :class:`~lightning_ssl.data.ImageDataModule`, its ``hparams``, its ``init_args``
    dict, or a training config (``{"data": {"class_path": ..., "init_args": ...}}``). Defaults are
    resolved as the datamodule resolves them (native size and channels of the dataset, which may read
    its file; the dataset's statistics or 0.5), so the values are the ones its val/test loaders use.
    """
    dm = _image_datamodule(pretrain, "pretraining_eval_settings")
    size = dm.image_size  # reads the data when the size is the dataset's native one
    if dm.num_channels is None:
        dm._load_raw()
    mean, std = dm._stats()
    return EvalTransformSettings(
        int(size), int(dm.num_channels), tuple(float(m) for m in mean), tuple(float(s) for s in std)
    )


def _floats(value: Any, name: str, caller: str) -> tuple[float, ...]:
    vals = (value,) if isinstance(value, (int, float)) else tuple(value)
    try:
        out = tuple(float(v) for v in vals)
    except (TypeError, ValueError):
        raise ValueError(f"{caller}: {name} must be numbers, one per channel, got {value!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{caller}: {name} must be finite numbers, one per channel, got {value!r}")
    return out


def _with_overrides(settings: EvalTransformSettings, caller: str, **overrides: Any) -> EvalTransformSettings:
    """Apply the non-``None`` overrides; warn (:class:`EvalTransformMismatchWarning`) for those that differ."""
    given: dict[str, Any] = {}
    if overrides.get("image_size") is not None:
        size = overrides["image_size"]
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"{caller}: image_size must be an integer >= 1, got {size!r}")
        given["image_size"] = int(size)
    if overrides.get("channels") is not None:
        if overrides["channels"] not in (1, 3):
            raise ValueError(f"{caller}: channels must be 1 or 3, got {overrides['channels']!r}")
        given["channels"] = int(overrides["channels"])
    for key in ("mean", "std"):
        if overrides.get(key) is not None:
            given[key] = _floats(overrides[key], key, caller)
    changed = {}
    for key, value in given.items():
        before = getattr(settings, key)
        same = np.allclose(before, value) if key in ("mean", "std") and len(before) == len(value) else before == value
        if not same:
            changed[key] = (before, value)
    if changed:
        what = ", ".join(f"{key} {before} -> {after}" for key, (before, after) in changed.items())
        warnings.warn(
            EvalTransformMismatchWarning(
                f"{caller}: evaluation transform differs from the pretraining config ({what}). The encoder "
                "was trained on the pretraining's resize and normalisation; other values shift its input "
                "distribution. Drop the override(s) to evaluate with the pretraining's transform."
            ),
            stacklevel=3,
        )
    out = replace(settings, **given)
    if len(out.mean) != out.channels or len(out.std) != out.channels:
        raise ValueError(
            f"{caller}: mean/std have {len(out.mean)}/{len(out.std)} values but the evaluation images have "
            f"{out.channels} channel(s); pass mean and std with {out.channels} values when overriding channels"
        )
    if min(out.std) <= 0:
        raise ValueError(f"{caller}: std must be > 0 per channel, got {out.std}")
    return out


def pretraining_eval_transform(
    pretrain: Any,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> v2.Compose:
    """The pretraining's clean evaluation transform, for images of any dataset: convert to the pretraining's
    channel count (uint8 ``[C, H, W]`` tensors or PIL images), then
    :func:`~lightning_ssl.data.image_transforms.eval_transform` with its image size and mean/std.

    Overrides that differ from :func:`pretraining_eval_settings` are applied and warn with
    :class:`EvalTransformMismatchWarning`.
    """
    from lightning_ssl.data.image_transforms import eval_transform

    s = _with_overrides(
        pretraining_eval_settings(pretrain), "pretraining_eval_transform",
        image_size=image_size, channels=channels, mean=mean, std=std,
    )
    return v2.Compose([_ToChannels(s.channels), eval_transform(s.image_size, s.mean, s.std)])


def pretraining_eval_datamodule(
    pretrain: Any,
    dataset: str | None = None,
    root: str | None = None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> Any:
    """An :class:`~lightning_ssl.data.ImageDataModule` over ``dataset`` whose clean (val/test and
    ``labelled_train_dataloader``) transform is the pretraining's.

    Image size, channels (via ``ImageDataModule``'s ``channels`` conversion: a 3-channel dataset is
    converted to gray for a 1-channel encoder and vice versa) and mean/std come from
    :func:`pretraining_eval_settings` of ``pretrain``, not from ``dataset``'s defaults; the split
    settings (``val_fraction``, ``test_fraction``, ``seed``), the evaluation batch size and the workers
    too. ``drop_last`` is off and nothing is downloaded.

    Args:
        pretrain: the pretraining datamodule, its hparams or its config (see :func:`pretraining_eval_settings`).
        dataset: a name :class:`~lightning_ssl.data.ImageDataModule` accepts (default: the pretraining's).
        root: where ``dataset`` lives (default: the pretraining's ``root``).
        image_size, channels, mean, std: overrides; any that differ from pretraining's warn with
            :class:`EvalTransformMismatchWarning`.
        batch_size, num_workers: loader settings (default: the pretraining's evaluation batch size and workers).
    """
    from lightning_ssl.data.image import ImageDataModule

    caller = "pretraining_eval_datamodule"
    base = _image_datamodule(pretrain, caller)
    s = _with_overrides(
        pretraining_eval_settings(base), caller, image_size=image_size, channels=channels, mean=mean, std=std
    )
    hp = base.hparams
    bs = int(batch_size or base.eval_batch_size)
    return ImageDataModule(
        dataset=dataset or base.dataset_name,
        root=str(root) if root is not None else base.root,
        download=False,
        recipe=hp.recipe,
        image_size=s.image_size,
        channels=s.channels,
        mean=list(s.mean),
        std=list(s.std),
        batch_size=bs,
        eval_batch_size=bs,
        num_workers=hp.num_workers if num_workers is None else int(num_workers),
        val_fraction=hp.val_fraction,
        test_fraction=hp.test_fraction,
        seed=hp.seed,
        drop_last=False,
        pin_memory=hp.pin_memory,
    )


# -------------------------------------------------------------------------------------- results table

#: CSV columns of :func:`results_table`, in order (rows may leave any but the first three out)
CSV_COLUMNS: tuple[str, ...] = (
    "model", "task", "dataset", "fraction", "n_train", "n_test", "n_ood", "seeds", "k",
    "acc_mean", "acc_std", "balanced_acc_mean", "balanced_acc_std", "auroc_mean", "auroc_std", "fpr95",
)
_MD_HEADER = ("model", "task", "dataset", "fraction", "n_train", "n_test", "acc", "balanced acc", "AUROC", "FPR95")


def _metric_cell(row: Mapping[str, Any], name: str) -> str:
    mean = row.get(f"{name}_mean")
    if mean is None:
        return ""
    std = row.get(f"{name}_std")
    if std is None or int(row.get("seeds") or 1) < 2:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {std:.3f}"


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def results_table(rows: Sequence[Mapping[str, Any]], protocol: str | None = None) -> tuple[str, str]:
    """A Markdown table and CSV text of evaluation rows (from :func:`evaluate_image_protocol`).

    Each row needs ``model``, ``task`` and ``dataset`` and may hold any other key of :data:`CSV_COLUMNS`
    (a missing one is an empty cell; ``runs`` is left out). The Markdown shows each metric as
    ``mean ± std`` (just the mean for a single seed), the OOD rows' test size as ``in + OOD``, and
    ``protocol`` as a paragraph under the table; the CSV has one column per key, full precision.

    Raises:
        ValueError: no rows, a row without ``model``/``task``/``dataset``, or a key outside
            :data:`CSV_COLUMNS` (and ``runs``).
    """
    if not rows:
        raise ValueError("results_table: no rows; pass the rows of evaluate_image_protocol")
    for i, row in enumerate(rows):
        missing = [c for c in ("model", "task", "dataset") if c not in row]
        unknown = sorted(set(row) - set(CSV_COLUMNS) - {"runs"})
        if missing or unknown:
            raise ValueError(
                f"results_table: row {i} lacks {missing} / has unknown keys {unknown}; rows hold 'model', 'task', "
                f"'dataset' and any of {list(CSV_COLUMNS[3:])}"
            )
    lines = ["| " + " | ".join(_MD_HEADER) + " |", "|" + "|".join("---" for _ in _MD_HEADER) + "|"]
    for row in rows:
        n_test = "" if row.get("n_test") is None else str(row["n_test"])
        if row.get("n_ood") is not None:
            n_test = f"{n_test} + {row['n_ood']} OOD"
        cells = [
            str(row["model"]), str(row["task"]), str(row["dataset"]),
            "" if row.get("fraction") is None else f"{row['fraction']:g}",
            "" if row.get("n_train") is None else str(row["n_train"]), n_test,
            _metric_cell(row, "acc"), _metric_cell(row, "balanced_acc"), _metric_cell(row, "auroc"),
            "" if row.get("fpr95") is None else f"{row['fpr95']:.3f}",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    markdown = "\n".join(lines) + "\n"
    if protocol:
        markdown += "\n" + protocol.strip() + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in CSV_COLUMNS])
    return markdown, buf.getvalue()


# ---------------------------------------------------------------------------------- the whole protocol


def _dataset_spec(spec: Any, default_root: str, caller: str) -> tuple[str, str]:
    """``"name"``, ``"name:root"`` or ``(name, root)`` -> ``(name, root)``."""
    from lightning_ssl.data.image import DATASETS

    if isinstance(spec, str):
        name, _, root = spec.partition(":")
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        name, root = str(spec[0]), str(spec[1])
    else:
        raise ValueError(f"{caller}: a dataset is 'NAME', 'NAME:ROOT' or (NAME, ROOT), got {spec!r}")
    name = name.strip().lower()
    if name not in DATASETS:
        raise ValueError(f"{caller}: unknown dataset {name!r} in {spec!r}; valid names: {list(DATASETS)}")
    return name, (root or default_root)


def _row(model_name: str, task: str, dataset: str, result: Mapping[str, Any]) -> dict[str, Any]:
    row = {"model": model_name, "task": task, "dataset": dataset}
    row.update({k: v for k, v in result.items() if k in CSV_COLUMNS})
    if result.get("runs") and "k" in result["runs"][0]:  # kNN: k as used (clipped to the bank size)
        row["k"] = result["runs"][0]["k"]
    return row


def evaluate_image_protocol(
    model: nn.Module,
    datamodule: Any,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    C: float = 1.0,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    transfer: Sequence[Any] = (),
    ood: Sequence[Any] = (),
    ood_k: int = 50,
    device: torch.device | str | None = None,
    model_name: str = "model",
) -> list[dict[str, Any]]:
    """The image protocol for one model: label fractions, transfer and OOD detection on frozen features.

    Features of every dataset are extracted once, with the *pretraining* datamodule's evaluation
    transform (:func:`pretraining_eval_datamodule`), from the labelled training split and the test split.

    - ``linear`` and ``knn`` rows: :func:`linear_probe_fractions` and :func:`knn_fractions` on the
      pretraining dataset, one row per fraction (mean ± std over ``seeds``);
    - ``transfer-linear`` rows: :func:`linear_probe_fractions` on each ``transfer`` dataset;
    - ``ood-knn`` rows: :func:`knn_ood_auroc` with the pretraining dataset's training features as the
      bank, its test split as in-distribution and each ``ood`` dataset's test split as OOD.

    Args:
        model: a method (its ``encoder`` is used) or an encoder; moved to ``device``.
        datamodule: the pretraining :class:`~lightning_ssl.data.ImageDataModule` (or its config).
        fractions, seeds: the label-fraction grid (see :func:`stratified_subset`).
        C: inverse L2 strength of the linear probes.
        knn_k, knn_temperature: the kNN classifier's neighbours and temperature.
        transfer, ood: datasets as ``"name"``, ``"name:root"`` or ``(name, root)``; the root defaults
            to the pretraining's.
        ood_k: neighbour rank of the OOD score.
        device: where the encoder runs (default: CUDA when available, else CPU).
        model_name: the ``model`` column of the rows.

    Returns:
        Rows for :func:`results_table`: ``model``, ``task``, ``dataset`` and the results.
    """
    caller = "evaluate_image_protocol"
    base = _image_datamodule(datamodule, caller)
    fracs, seeds = _check_grid(fractions, seeds, caller)
    transfer = [_dataset_spec(s, base.root, caller) for s in transfer]
    ood = [_dataset_spec(s, base.root, caller) for s in ood]
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = getattr(model, "encoder", model).to(device)
    modules: dict[tuple[str, str], Any] = {}
    cache: dict[tuple[str, str, str], tuple[Tensor, Tensor]] = {}

    def features(name: str, root: str, split: str) -> tuple[Tensor, Tensor]:
        if (name, root, split) not in cache:
            if (name, root) not in modules:
                modules[name, root] = pretraining_eval_datamodule(base, name, root)
            dm = modules[name, root]
            if split == "train":
                loader = dm.labelled_train_dataloader()
            else:
                dm.setup("test")
                loader = dm.test_dataloader()
            cache[name, root, split] = extract_features(encoder, loader, device)
        return cache[name, root, split]

    home = (base.dataset_name, base.root)
    train_x, train_y = features(*home, "train")
    test_x, test_y = features(*home, "test")
    for name, root in [home, *transfer]:  # every fraction must fit every dataset before anything is fitted
        y = features(name, root, "train")[1]
        counts = torch.bincount(torch.unique(y, return_inverse=True)[1]).numpy()
        for f in fracs:
            _subset_sizes(counts, f, f"{caller} ({name})")
    rows = []
    linear = linear_probe_fractions(train_x, train_y, test_x, test_y, fracs, seeds, C=C)
    rows += [_row(model_name, "linear", home[0], r) for r in linear.values()]
    knn = knn_fractions(train_x, train_y, test_x, test_y, fracs, seeds, k=knn_k, temperature=knn_temperature)
    rows += [_row(model_name, "knn", home[0], r) for r in knn.values()]
    for name, root in transfer:
        res = linear_probe_fractions(*features(name, root, "train"), *features(name, root, "test"), fracs, seeds, C=C)
        rows += [_row(model_name, "transfer-linear", name, r) for r in res.values()]
    for name, root in ood:
        res = knn_ood_auroc(train_x, test_x, features(name, root, "test")[0], k=ood_k)
        rows.append(_row(model_name, "ood-knn", name, {
            "n_train": res["n_train"], "n_test": res["n_in"], "n_ood": res["n_ood"], "k": res["k"],
            "auroc_mean": res["auroc"], "fpr95": res["fpr95"],
        }))
    return rows


def protocol_text(
    settings: EvalTransformSettings, fractions: Sequence[float], seeds: Sequence[int], C: float, knn_k: int,
    knn_temperature: float, ood_k: int, dataset: str,
) -> str:
    """The protocol paragraph written under the table of ``lightning-ssl evaluate-images``."""
    return (
        f"Protocol: frozen encoder features of the official train/test splits, every image through the "
        f"pretraining's evaluation transform (resize to {settings.image_size} px, {settings.channels} channel(s), "
        f"mean {list(settings.mean)}, std {list(settings.std)}). Label fractions {list(fractions)} of the "
        f"training split, class-stratified (at least one image per class), one subset per seed {list(seeds)}; "
        f"mean ± population std over seeds (fraction 1.0 uses every image for every seed and both probes are "
        f"deterministic, so its std is 0). linear: logistic regression (lbfgs, C={C:g}) on features "
        f"standardised with the training subset's mean/std. knn: weighted cosine kNN (k={knn_k}, "
        f"T={knn_temperature:g}) on features standardised the same way; AUROC from the vote weights. "
        f"transfer-linear: the linear probe on another dataset. ood-knn: distance to the k-th (k={ood_k}) "
        f"nearest L2-normalised {dataset} training feature (Sun et al. 2022); AUROC with OOD as positive "
        f"against the {dataset} test split, FPR95 = OOD images kept at 95% in-distribution recall. "
        f"No test split is used for any choice."
    )


def _describe(spec: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={spec[k]!r}" for k in ("name", "in_chans", "small_stem") if k in spec)
    return f"{str(spec.get('class', '?')).rsplit('.', 1)[-1]}({args})"


def _checkpoint_encoder_mismatch(ckpt: str, model: nn.Module) -> str | None:
    """A message naming both encoders when ``ckpt`` records an encoder other than ``model``'s, else ``None``."""
    path = Path(ckpt)
    if not path.is_file():
        return None  # load_from_config reports it
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False).get("lightning_ssl_encoder")
    except Exception:  # noqa: BLE001 - not a checkpoint: load_from_config reports it
        return None
    if not saved:
        return None
    from lightning_ssl.methods.base import encoder_spec

    mine = encoder_spec(getattr(model, "encoder", model))
    differ = [k for k in mine if k in saved and saved[k] != mine[k]]
    if not differ:
        return None
    return (
        f"The checkpoint's encoder {_describe(saved)} does not match the config's encoder {_describe(mine)} "
        f"(differs in {', '.join(differ)}). Pass the config the checkpoint was trained with, or override the "
        f"encoder, e.g. --model.init_args.encoder.init_args.name {saved.get('name', '...')}."
    )


def main(argv: list[str] | None = None) -> int:
    """``lightning-ssl evaluate-images --config CFG [--ckpt CKPT] [--fractions 0.01,0.1,1] [--seeds 0,1,2]
    [--knn-k 20] [--transfer DATASET[:ROOT] ...] [--ood DATASET[:ROOT] ...] [--random-init] [--out results.md]``:
    linear and kNN probes at every label fraction x seed, transfer and kNN OOD detection, with the
    pretraining's evaluation transforms; prints a Markdown table and writes it (``--out x.md``) with a CSV
    next to it (``x.csv``). Further ``--key value`` arguments override the config as in ``lightning-ssl fit``."""
    import argparse

    from lightning_ssl.evaluation.cli_common import evaluation_parser, load_from_config

    parser = evaluation_parser(
        "lightning-ssl evaluate-images", main.__doc__, "the training config (configs/image/...yaml)"
    )
    for action in parser._actions:
        if action.dest == "out":
            action.help = "write the Markdown table here (e.g. results.md) and the CSV next to it (results.csv)"
    parser.add_argument("--fractions", default="0.01,0.1,1", help="comma-separated label fractions in (0, 1]")
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated seeds: one labelled subset (and probe) per seed")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN classifier")
    parser.add_argument("--knn-temperature", type=float, default=0.07, help="temperature of the kNN vote")
    parser.add_argument("--ood-k", type=int, default=50, help="neighbour rank of the kNN OOD score (Sun et al. 2022)")
    parser.add_argument("--transfer", nargs="+", action="extend", default=[], metavar="DATASET[:ROOT]",
                        help="linear probe on other datasets with the pretraining's transforms (root: the config's)")
    parser.add_argument("--ood", nargs="+", action="extend", default=[], metavar="DATASET[:ROOT]",
                        help="OOD datasets whose test split is scored against the pretraining dataset's")
    parser.add_argument("--random-init", action="store_true",
                        help="also evaluate the config's encoder at initialisation (the baseline rows)")
    parser.add_argument("--device", default=None, help="where the encoder runs (default: cuda if available, else cpu)")
    args, overrides = parser.parse_known_args(argv)
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        fractions, seeds = _check_grid(fractions, seeds, "evaluate-images")
    except ValueError as err:
        parser.error(f"--fractions {args.fractions!r} / --seeds {args.seeds!r}: {err}")
    if args.out and Path(args.out).suffix.lower() == ".csv":
        parser.error(f"--out names the Markdown file (e.g. results.md), got {args.out}; the CSV is written next to it")

    base = load_from_config(parser, argparse.Namespace(config=args.config, ckpt=None), overrides)
    from lightning_ssl.data.image import ImageDataModule

    if not isinstance(base.datamodule, ImageDataModule):
        parser.error(f"evaluate-images needs an ImageDataModule config, got {type(base.datamodule).__name__}; use "
                     "evaluate-graph, evaluate-points or evaluate-eeg for the other modalities.")
    try:
        for spec in (*args.transfer, *args.ood):
            _dataset_spec(spec, base.datamodule.root, "evaluate-images")
    except ValueError as err:
        parser.error(str(err))
    models: list[tuple[str, nn.Module]] = []
    if args.ckpt is not None:
        mismatch = _checkpoint_encoder_mismatch(args.ckpt, base.model)
        if mismatch:
            parser.error(mismatch)
        models.append((Path(args.ckpt).name, load_from_config(parser, args, overrides).model))
    if args.random_init or args.ckpt is None:
        models.append(("random-init", base.model))
    rows = []
    for name, model in models:
        rows += evaluate_image_protocol(
            model, base.datamodule, fractions=fractions, seeds=seeds, C=args.C, knn_k=args.knn_k,
            knn_temperature=args.knn_temperature, transfer=args.transfer, ood=args.ood, ood_k=args.ood_k,
            device=args.device, model_name=name,
        )
    settings = pretraining_eval_settings(base.datamodule)
    text = protocol_text(settings, fractions, seeds, args.C, args.knn_k, args.knn_temperature, args.ood_k,
                         base.datamodule.dataset_name)
    markdown, csv_text = results_table(rows, protocol=text)
    print(markdown)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown)
        out.with_suffix(".csv").write_text(csv_text)
    return 0
