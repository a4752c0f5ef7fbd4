"""Point-cloud evaluation on frozen features.

- **Classification** (:func:`evaluate_point_classification`): global features ``encoder(x) [B, D]``
  of the clean clouds, a logistic-regression probe (standardised features) and a weighted kNN, trained
  on the training split and scored on the test split, the probe's regularisation chosen on the
  validation split (Point-MAE / MSM: linear probing of frozen features; Point-MAE's own number uses a
  linear SVM on ModelNet40).
- **Part segmentation** (:func:`evaluate_point_segmentation`): per-point features from
  :func:`~lightning_ssl.encoders.dense_point_features` (every level of ``forward_levels``
  interpolated back to the points and concatenated, as Masked Scene Modeling probes its multi-level
  features), a per-point linear classifier trained with Adam on the training clouds, and on the test
  clouds the part mIoU over all part classes (torchmetrics ``MulticlassJaccardIndex``, macro) plus the
  ShapeNet-part protocol: predictions restricted to the parts of the shape's category (the dataset's
  table, ``datamodule.category_parts``: PyG's ``ShapeNet.seg_classes``; else the parts seen in the
  training clouds), a part absent from both prediction and truth counts IoU 1, instance mIoU = mean over
  shapes, class mIoU = mean over categories.

Both take a method (its ``encoder`` is used) or a bare encoder, and a
:class:`~lightning_ssl.data.PointCloudDataModule`. The encoder runs in eval mode; train/eval flags
are restored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassJaccardIndex

from lightning_ssl.evaluation.features import extract_features
from lightning_ssl.evaluation.knn import knn_classify
from lightning_ssl.evaluation.linear import linear_probe


@contextmanager
def _frozen(encoder: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def _device(encoder: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(encoder.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def evaluate_point_classification(
    model: nn.Module,
    datamodule: Any,
    k: int = 20,
    temperature: float = 0.07,
    C: float | None = None,
    C_grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    labels_per_class: int | None = None,
    draws: int = 5,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Linear probe and weighted kNN on frozen global features: ``{"linear": {...}, "knn": {...}}``.

    Trained on ``datamodule.labelled_train_dataloader()`` (clean training clouds), scored on
    ``datamodule.test_dataloader()``; see :func:`~lightning_ssl.evaluation.linear_probe` and
    :func:`~lightning_ssl.evaluation.knn_classify` for the keys. The probe's inverse regularisation
    ``C`` is given, or (``C=None``) picked from ``C_grid`` by accuracy on the validation split, never on
    the test split; ``linear["C"]`` says which.

    ``labels_per_class=k`` adds ``"linear_few"``: the same probe trained on ``k`` training clouds per class
    (a class-stratified subset drawn ``draws`` times with seeds ``0..draws-1``), its test accuracy as
    ``acc`` (mean) and ``acc_std`` over the draws: the label-scarce regime SSL is for."""
    encoder = getattr(model, "encoder", model)
    datamodule.setup("fit")
    dev = _device(encoder, device)
    train_x, train_y = extract_features(encoder, datamodule.labelled_train_dataloader(), dev)
    test_x, test_y = extract_features(encoder, datamodule.test_dataloader(), dev)
    if C is None:
        if not C_grid:
            raise ValueError("C_grid is empty: give C or at least one value to choose from.")
        val_x, val_y = extract_features(encoder, datamodule.val_dataloader(), dev)
        C = max(C_grid, key=lambda c: linear_probe(train_x, train_y, val_x, val_y, C=c)["acc"])  # first best
    linear = linear_probe(train_x, train_y, test_x, test_y, C=C)
    linear["C"] = float(C)
    out = {"linear": linear, "knn": knn_classify(train_x, train_y, test_x, test_y, k=k, temperature=temperature)}
    if labels_per_class is not None:
        accs = [linear_probe(train_x[idx], train_y[idx], test_x, test_y, C=C)["acc"]
                for idx in (_per_class_subset(train_y, labels_per_class, seed) for seed in range(draws))]
        out["linear_few"] = {"acc": float(np.mean(accs)), "acc_std": float(np.std(accs)),
                             "labels_per_class": int(labels_per_class), "draws": int(draws), "C": float(C)}
    return out


def _per_class_subset(y: Tensor, per_class: int, seed: int) -> Tensor:
    """Indices of ``per_class`` random samples of every class (seeded); an error if a class has fewer."""
    if per_class < 1:
        raise ValueError(f"labels_per_class must be >= 1, got {per_class}.")
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in y.unique():
        members = (y == c).nonzero().flatten()
        if members.numel() < per_class:
            raise ValueError(f"labels_per_class={per_class}, but class {int(c)} has only {members.numel()} training "
                             "samples; lower labels_per_class.")
        picks.append(members[torch.randperm(members.numel(), generator=gen)[:per_class]])
    return torch.cat(picks)


def _dense(encoder: nn.Module, points: Tensor) -> Tensor:
    from lightning_ssl.encoders.point import dense_point_features

    return dense_point_features(encoder, points)


def shape_part_iou(logits: Tensor, parts: Tensor, labels: Tensor, category_parts: Tensor) -> Tensor:
    """Per-shape mIoU of the ShapeNet-part protocol (Qi et al. 2017): ``[B]``.

    ``logits`` ``[B, N, P]`` are restricted to the parts of each shape's category (``category_parts``
    ``[num_categories, P]`` bool, indexed by ``labels`` ``[B]``) before the argmax; for every part of the
    category, IoU = |pred & truth| / |pred | truth|, and 1 when the part is absent from both; the
    shape's score is the mean over its category's parts."""
    own = category_parts[labels]  # [B, P]
    num_parts = logits.shape[-1]
    pred = logits.masked_fill(~own.unsqueeze(1), float("-inf")).argmax(-1)
    hit_p = nn.functional.one_hot(pred, num_parts).bool()
    hit_t = nn.functional.one_hot(parts, num_parts).bool()
    inter, union = (hit_p & hit_t).sum(1).float(), (hit_p | hit_t).sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return (iou * own).sum(1) / own.sum(1).clamp_min(1)


def _seg_batches(datamodule: Any, split: str, device: torch.device) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    for batch in datamodule.segmentation_dataloader(split):
        yield batch["points"].to(device), batch["parts"].to(device), batch["labels"].to(device)


def evaluate_point_segmentation(
    model: nn.Module,
    datamodule: Any,
    points_per_cloud: int = 256,
    epochs: int = 30,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    batch_size: int = 4096,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Per-point linear probe on frozen multi-level features; returns ``{"miou", "instance_miou",
    "class_miou", "acc", "n_train_points", "n_test_clouds"}`` on the test split.

    ``points_per_cloud`` random points of every training cloud (seeded) train the probe: Adam, ``epochs``
    passes in minibatches of ``batch_size`` points, cross-entropy, features standardised with the
    training statistics. Every point of every test cloud is scored, batch by batch (memory stays that
    of one batch)."""
    if datamodule.num_part_classes is None:
        raise ValueError("Part segmentation needs per-point part labels: use dataset 'shapenet' or 'synthetic'.")
    for name, value in (("points_per_cloud", points_per_cloud), ("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"evaluate_point_segmentation: {name} must be >= 1, got {value}.")
    if lr <= 0:
        raise ValueError(f"evaluate_point_segmentation: lr must be > 0, got {lr}.")
    encoder = getattr(model, "encoder", model)
    datamodule.setup("fit")
    dev = _device(encoder, device)
    num_parts, num_classes = int(datamodule.num_part_classes), int(datamodule.num_classes)
    gen = torch.Generator().manual_seed(seed)
    feats, parts = [], []
    category_parts = torch.zeros(num_classes, num_parts, dtype=torch.bool)
    with _frozen(encoder):
        for points, part, label in _seg_batches(datamodule, "train", dev):
            f = _dense(encoder, points).float().cpu()
            n = f.shape[1]
            pick = torch.rand(f.shape[0], n, generator=gen).argsort(dim=1)[:, : min(points_per_cloud, n)]
            feats.append(f.gather(1, pick.unsqueeze(-1).expand(-1, -1, f.shape[-1])).flatten(0, 1))
            part = part.cpu()
            parts.append(part.gather(1, pick).flatten())
            category_parts[label.cpu().unsqueeze(1).expand_as(part), part] = True
    x, y = torch.cat(feats), torch.cat(parts)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    probe = nn.Linear(x.shape[1], num_parts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe.reset_parameters()
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    xs = (x - mean) / std
    for _ in range(epochs):
        for idx in torch.randperm(xs.shape[0], generator=gen).split(batch_size):
            loss = nn.functional.cross_entropy(probe(xs[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    known = getattr(datamodule, "category_parts", None)  # the dataset's own table (ShapeNet's seg_classes)
    if known is not None:
        category_parts = known
    probe = probe.to(dev)
    mean, std = mean.to(dev), std.to(dev)
    jaccard = MulticlassJaccardIndex(num_classes=num_parts, average="macro").to(dev)
    allowed = category_parts.to(dev)
    correct = total = 0
    shape_ious: list[Tensor] = []
    shape_labels: list[Tensor] = []
    with _frozen(encoder):
        for points, part, label in _seg_batches(datamodule, "test", dev):
            logits = probe((_dense(encoder, points).float() - mean) / std)  # [B, N, P]
            jaccard.update(logits.argmax(-1).flatten(), part.flatten())
            correct += int((logits.argmax(-1) == part).sum())
            total += part.numel()
            shape_ious.append(shape_part_iou(logits, part, label, allowed))
            shape_labels.append(label)
    ious, labels = torch.cat(shape_ious), torch.cat(shape_labels)
    per_class = [ious[labels == c].mean() for c in labels.unique()]
    return {
        "miou": float(jaccard.compute()),
        "instance_miou": float(ious.mean()),
        "class_miou": float(torch.stack(per_class).mean()),
        "acc": correct / max(total, 1),
        "n_train_points": int(y.numel()),
        "n_test_clouds": int(ious.numel()),
    }


TASKS = ("classification", "segmentation")


def main(argv: list[str] | None = None) -> int:
    """``lightning-ssl evaluate-points --config CFG [--ckpt CKPT] [--tasks classification,segmentation]``;
    further ``--key value`` arguments override the config as in ``lightning-ssl fit``."""
    from lightning_ssl.evaluation.cli_common import evaluation_parser, load_from_config, report

    parser = evaluation_parser("lightning-ssl evaluate-points", main.__doc__, "the training config (configs/points/...yaml)")
    parser.add_argument("--tasks", default="classification", help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--seg-epochs", type=int, default=30, help="segmentation probe epochs")
    args, overrides = parser.parse_known_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"Unknown task(s) {unknown}; valid: {', '.join(TASKS)}.")
    cli = load_from_config(parser, args, overrides)
    results: dict[str, Any] = {}
    if "classification" in tasks:
        results["classification"] = evaluate_point_classification(cli.model, cli.datamodule)
    if "segmentation" in tasks:
        results["segmentation"] = evaluate_point_segmentation(cli.model, cli.datamodule, epochs=args.seg_epochs)
    report(results, args.out)
    return 0
