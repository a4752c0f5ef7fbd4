"""GroCo, the group-ordering loss, and the relaxed odd-even sorting network it sorts with.

Shvetsova, Petersen, Kukleva, Schiele, Kuehne. "Learning by Sorting: Self-supervised Learning with
Group Ordering Constraints." ICCV 2023. https://arxiv.org/abs/2301.02009 (official code:
https://github.com/ninatu/learning_by_sorting). Sorting network: Petersen, Borgelt, Kuehne, Deussen.
"Differentiable Sorting Networks for Scalable Sorting and Ranking Supervision", ICML 2021, and
"Monotonic Differentiable Sorting Networks", ICLR 2022 (the Cauchy relaxation; package ``diffsort``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.distributed import gather_with_grad

__all__ = ["RELAXATIONS", "odd_even_sort", "groco_loss", "GroCoLoss"]

#: relaxed step functions ``sigma(v)``: the probability that the comparator keeps ``a`` as the minimum,
#: with ``v = steepness * (b - a)`` (diffsort's names)
RELAXATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "cauchy": lambda v: torch.atan(v) / math.pi + 0.5,
    "logistic": torch.sigmoid,
    "gaussian": lambda v: 0.5 * (1.0 + torch.erf(v / math.sqrt(2.0))),
    "reciprocal": lambda v: 0.5 * (v / (2.0 + v.abs()) + 1.0),
}


def odd_even_sort(x: Tensor, steepness: float = 1.0, relaxation: str = "cauchy") -> Tensor:
    """Relaxed permutation matrix of an ascending sort of each row of ``x`` ``[B, n]`` (odd-even network).

    The odd-even transposition network has ``n`` layers; layer ``l`` compares wires ``(i, i + 1)``
    for ``i = l % 2, l % 2 + 2, ...``. Each comparator is relaxed: with
    ``alpha = sigma(steepness * (b - a))`` it outputs ``min = alpha a + (1 - alpha) b`` and
    ``max = (1 - alpha) a + alpha b`` and mixes the matching columns of the permutation matrix the
    same way (Petersen et al. 2021, as ``diffsort.DiffSortNet('odd_even', ...)``).

    Returns ``P`` ``[B, n, n]``, doubly stochastic: ``P[b, i, j]`` is the probability that element
    ``i`` ends at (ascending) rank ``j``; the relaxed sorted values are ``einsum('bi,bij->bj', x, P)``.
    As ``steepness -> inf`` it becomes the hard permutation ``P[b, argsort(x)[b, j], j] = 1``.
    """
    if x.dim() != 2:
        raise ValueError(f"odd_even_sort sorts the rows of a [B, n] tensor, got shape {tuple(x.shape)}")
    if relaxation not in RELAXATIONS:
        raise ValueError(f"Unknown relaxation {relaxation!r}; valid names: {', '.join(RELAXATIONS)}.")
    if not steepness > 0:
        raise ValueError(f"steepness must be positive, got {steepness}")
    sigma = RELAXATIONS[relaxation]
    b, n = x.shape
    perm = torch.eye(n, dtype=x.dtype, device=x.device).expand(b, n, n)
    for layer in range(n):
        lo = torch.arange(layer % 2, n - 1, 2, device=x.device)
        if lo.numel() == 0:
            continue
        hi = lo + 1
        a, c = x[:, lo], x[:, hi]
        alpha = sigma(steepness * (c - a))
        x = x.index_copy(1, lo, alpha * a + (1 - alpha) * c).index_copy(1, hi, (1 - alpha) * a + alpha * c)
        pa, pc, al = perm[:, :, lo], perm[:, :, hi], alpha[:, None, :]
        perm = perm.index_copy(2, lo, al * pa + (1 - al) * pc).index_copy(2, hi, (1 - al) * pa + al * pc)
    return perm


def groco_loss(
    views: Sequence[Tensor],
    num_negatives: int = 10,
    steepness: float = 1.0,
    relaxation: str = "cauchy",
    stop_grad: bool = True,
    num_positive_views: int | None = None,
    gather: bool = True,
) -> Tensor:
    """GroCo loss (Shvetsova et al. 2023) over ``V >= 2`` views ``[N, D]``, as in the official code.

    For each view ``v`` and each anchor row ``i`` of it (cosine similarities throughout):

    - positives: row ``i`` of the other positive views (the first ``num_positive_views`` views, all by
      default; multi-crop: only the global crops are positives, small crops are only anchors);
    - negatives: the ``num_negatives`` most similar *other* rows of view ``v`` (hard negatives);
    - both groups are pre-sorted ascending and concatenated ``[negatives, positives]`` (the target
      order: every positive above every negative), sorted by :func:`odd_even_sort` (Cauchy relaxation,
      steepness 1 in the official configs), and the relaxed permutation ``P`` gives for each element the
      probability ``p_neg = sum_{j < K} P[i, j]`` of landing in the K negative ranks and
      ``p_pos = 1 - p_neg`` of landing in the positive ranks;
    - loss: ``(BCE(p_pos, is_positive) + BCE(p_neg, is_negative)) / 2``, averaged over elements and
      anchors, then over the ``V`` anchor views.

    The group-ordering constraint only asks that each positive ranks above each negative, not an order
    inside a group. With ``stop_grad`` (the official default) positives and negatives are detached:
    gradients reach the representations only through the anchors. The loss never reaches 0 at small
    steepness (a relaxed comparator of a gap g is only ``atan(steepness * g) / pi + 1/2`` sure).

    With ``gather=True`` the views are gathered from all ranks with gradient: negatives are mined in the
    global batch and every rank computes the same loss over all global anchors (the official code
    averages per-rank losses over local anchors with global negatives: the same value and gradients).
    If fewer than ``num_negatives`` other rows exist, all of them are used (with a warning).
    """
    if len(views) < 2:
        raise ValueError(f"GroCo needs >= 2 views (anchor and positive), got {len(views)}")
    shape = views[0].shape
    if views[0].dim() != 2 or any(v.shape != shape for v in views):
        raise ValueError(f"every view must be [N, D] of the same shape, got {[tuple(v.shape) for v in views]}")
    n_pos_views = len(views) if num_positive_views is None else num_positive_views
    if not 2 <= n_pos_views <= len(views):
        raise ValueError(f"num_positive_views must be in [2, {len(views)}], got {num_positive_views}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if gather:
        views = [gather_with_grad(v) for v in views]
    views = [F.normalize(v.float() if v.dtype in (torch.float16, torch.bfloat16) else v, dim=1, eps=1e-8)
             for v in views]
    with torch.autocast(device_type=views[0].device.type, enabled=False):  # the loss in full precision, as the official code
        n = views[0].shape[0]
        k = min(num_negatives, n - 1)
        if k < 1:
            raise ValueError("GroCo needs >= 2 samples in the (global) batch: negatives are the other samples.")
        if k < num_negatives:
            warnings.warn(f"GroCo: the global batch has only {n - 1} negatives per anchor; using {k} instead of "
                          f"num_negatives={num_negatives}.", stacklevel=2)
        self_mask = torch.eye(n, dtype=torch.bool, device=views[0].device)
        total = views[0].new_zeros(())
        for v, anchor in enumerate(views):
            positives = [views[p] for p in range(n_pos_views) if p != v]
            pos = torch.stack([(anchor * (p.detach() if stop_grad else p)).sum(dim=1) for p in positives], dim=1)
            pool = anchor.detach() if stop_grad else anchor
            neg = (anchor @ pool.T).masked_fill(self_mask, float("-inf"))
            neg = torch.topk(neg, k=k, dim=1).values.flip(dims=[1])  # the k hardest, ascending
            sims = torch.cat([neg, torch.sort(pos, dim=1).values], dim=1)
            perm = odd_even_sort(sims, steepness=steepness, relaxation=relaxation)
            p_neg = perm[:, :, :k].sum(dim=2).clamp(0, 1)
            p_pos = perm[:, :, k:].sum(dim=2).clamp(0, 1)
            is_neg = torch.zeros_like(p_neg)
            is_neg[:, :k] = 1.0
            total = total + 0.5 * (F.binary_cross_entropy(p_pos, 1 - is_neg) + F.binary_cross_entropy(p_neg, is_neg))
        return total / len(views)


class GroCoLoss(nn.Module):
    """Module form of :func:`groco_loss` (GroCo, Shvetsova et al. 2023)."""

    def __init__(
        self,
        num_negatives: int = 10,
        steepness: float = 1.0,
        relaxation: str = "cauchy",
        stop_grad: bool = True,
        num_positive_views: int | None = None,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if relaxation not in RELAXATIONS:
            raise ValueError(f"Unknown relaxation {relaxation!r}; valid names: {', '.join(RELAXATIONS)}.")
        if not steepness > 0:
            raise ValueError(f"steepness must be positive, got {steepness}")
        self.kwargs = dict(num_negatives=num_negatives, steepness=steepness, relaxation=relaxation,
                           stop_grad=stop_grad, num_positive_views=num_positive_views, gather=gather)

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        return groco_loss(views, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
