"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al. 2018, as used in DINO).

Features are L2-normalised; each test sample takes its ``k`` most cosine-similar training samples and
each neighbour votes for its label with weight ``exp(sim / T)``; the class with the largest total
wins (ties go to the smallest label). This is DINO's ``knn_classifier`` (k=20, T=0.07).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.evaluation.features import _check_split

__all__ = ["knn_classify", "knn_predict"]


@torch.no_grad()
def knn_classify(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Weighted kNN accuracy of ``test`` against the ``train`` bank.

    Args:
        train_x, test_x: features ``[N, D]`` / ``[M, D]`` (tensors or arrays; run on their device).
        train_y, test_y: integer labels (any integer values; ``[N, 1]`` is flattened).
        k: neighbours (clipped to the bank size).
        temperature: T in the vote weight ``exp(sim / T)``.
        chunk_size: test rows per chunk; default keeps the ``[chunk, N]`` similarity block at about
            16M entries (64 MB in float32), so memory is bounded whatever M is.

    Returns:
        ``{"acc", "k", "n_train", "n_test"}`` (``k`` as actually used).

    Note:
        The weights are computed as ``exp((sim - max_sim) / T)``, i.e. rescaled per test row by a
        constant, which leaves the vote's argmax unchanged and avoids overflow at small T.
    """
    tx, ty, vx, vy = _check_split(train_x, train_y, test_x, test_y, caller="knn_classify")
    if k < 1:
        raise ValueError(f"knn_classify: k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"knn_classify: temperature must be > 0, got {temperature}")
    device = tx.device
    vx, vy, ty = vx.to(device), vy.to(device), ty.to(device)
    classes, ty_idx = torch.unique(ty, return_inverse=True)
    k = min(k, tx.shape[0])
    pred = classes[knn_predict(tx, ty_idx, vx, classes.numel(), k=k, temperature=temperature, chunk_size=chunk_size)]
    correct = int((pred == vy).sum())
    return {
        "acc": correct / vx.shape[0],
        "k": int(k),
        "n_train": int(tx.shape[0]),
        "n_test": int(vx.shape[0]),
    }


@torch.no_grad()
def knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> Tensor:
    """Class predictions ``[M]`` of the temperature-weighted cosine kNN vote (no input checks).

    ``bank`` ``[N, D]`` and ``queries`` ``[M, D]`` are L2-normalised here; ``bank_labels`` are class
    indices in ``[0, num_classes)``. The similarity block is chunked to about 16M entries.
    """
    n = bank.shape[0]
    k = min(k, n)
    if chunk_size is None:
        chunk_size = max(1, (1 << 24) // max(n, 1))
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    preds = []
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start : start + chunk_size]
        top_sim, top_idx = (q @ bank.T).topk(k, dim=1)  # sorted, descending
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype, device=q.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=queries.device)
