"""Offline linear probe on frozen features.

Protocol (state it next to every number): multinomial logistic regression (scikit-learn
``LogisticRegression``, lbfgs, L2 penalty with inverse strength ``C``, intercept) on frozen encoder
features, each feature standardised with the *training* split's mean and standard deviation
(``StandardScaler``). No augmentation, no fine-tuning, no model selection on the test split: pick
``C`` on a validation split, then report the test split once.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lightning_ssl.evaluation.features import _check_split

__all__ = ["linear_probe"]


def _macro_ovr_auroc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """AUROC: binary -> score of class ``classes[1]``; multiclass -> macro one-vs-rest.

    Classes absent from the test split (or the only class present) are skipped, since AUROC is
    undefined for them; ``nan`` when no class is scorable. Equals scikit-learn's
    ``roc_auc_score(..., multi_class="ovr", average="macro")`` when every class is present.
    """
    if len(classes) == 2:
        pos = y == classes[1]
        if pos.all() or not pos.any():
            return float("nan")
        return float(roc_auc_score(pos, proba[:, 1]))
    scores = []
    for j, c in enumerate(classes):
        pos = y == c
        if pos.any() and not pos.all():
            scores.append(roc_auc_score(pos, proba[:, j]))
    return float(np.mean(scores)) if scores else float("nan")


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (predictions of absent classes count as errors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y, pred))


def linear_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Fit a logistic-regression probe on frozen training features and score it on the test split.

    Args:
        train_x, test_x: features ``[N, D]`` (tensors or arrays), e.g. from
            :func:`~lightning_ssl.evaluation.extract_features`.
        train_y, test_y: integer class labels ``[N]`` (``[N, 1]`` is flattened).
        C: inverse L2 regularisation strength of ``LogisticRegression``.
        max_iter: lbfgs iterations.
        seed: ``random_state`` of the classifier.

    Returns:
        ``{"acc", "balanced_acc", "auroc", "n_train", "n_test"}``. ``auroc`` is the AUROC of the
        class-1 probability for two classes and the macro one-vs-rest AUROC otherwise (``nan`` if the
        test split has a single class).

    Raises:
        ValueError: mismatched lengths or feature dims, non-finite features, or fewer than two
            classes in ``train_y``.
    """
    tx, ty, vx, vy = _check_split(train_x, train_y, test_x, test_y, caller="linear_probe")
    if C <= 0:
        raise ValueError(f"linear_probe: C must be > 0, got {C}")
    Xtr, ytr = tx.cpu().double().numpy(), ty.cpu().numpy()
    Xte, yte = vx.cpu().double().numpy(), vy.cpu().numpy()
    clf = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed, solver="lbfgs")
    )
    clf.fit(Xtr, ytr)
    pred = clf.predict(Xte)
    proba = clf.predict_proba(Xte)
    return {
        "acc": float(accuracy_score(yte, pred)),
        "balanced_acc": _balanced_accuracy(yte, pred),
        "auroc": _macro_ovr_auroc(yte, proba, clf.classes_),
        "n_train": int(len(ytr)),
        "n_test": int(len(yte)),
    }
