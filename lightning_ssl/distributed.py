"""The only module that talks to ``torch.distributed``.

Losses with batch statistics (contrastive negatives, cross-correlation, covariance, centering) must
see the *global* batch. :func:`gather_with_grad` concatenates every rank's tensor and keeps the
autograd graph (``torch.distributed.nn.functional.all_gather``), so that a loss computed on the
gathered batch has the same value on every rank and, after DDP's gradient averaging, the same
gradients as one process on the concatenated batch. A gather without autograd gives gradients
scaled by ``1 / world_size``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


_UNEVEN = threading.local()


@contextlib.contextmanager
def uneven_rows(enabled: bool = True) -> Iterator[None]:
    """Within this context :func:`gather_with_grad` allows different row counts per rank.

    ``SSLMethod.training_step`` enters it for batches with a row mask (seed nodes of a sampled subgraph,
    a full graph sharded over ranks). Outside it the gather assumes equal shapes (image loaders use
    ``drop_last=True``) and needs no size exchange and no host synchronisation.
    """
    previous = getattr(_UNEVEN, "on", False)
    _UNEVEN.on = enabled
    try:
        yield
    finally:
        _UNEVEN.on = previous


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, differentiably, in rank order.

    Every rank must pass the same shape, except inside :func:`uneven_rows`, where rows are padded to the
    largest count for the collective and trimmed after (one extra small collective and one host sync).
    Identity when not distributed.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    if not getattr(_UNEVEN, "on", False):
        return torch.cat(all_gather(x.contiguous()), dim=0)
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    sizes = torch.cat(counts).tolist()
    if len(set(sizes)) == 1:
        return torch.cat(all_gather(x.contiguous()), dim=0)
    pad = x.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))
    parts = all_gather(torch.cat([x, pad], dim=0).contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 without autograd (teacher outputs, buffers)."""
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks (a new tensor; ``x`` is left unchanged)."""
    if not is_distributed():
        return x.clone()
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


@torch.no_grad()
def all_reduce_max(x: Tensor) -> Tensor:
    """Element-wise maximum of ``x`` over ranks (a new tensor)."""
    if not is_distributed():
        return x.clone()
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.MAX)
    return y


@torch.no_grad()
def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over ranks (a new tensor)."""
    return all_reduce_sum(x) / world_size()


@torch.no_grad()
def gather_variable(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 when ranks hold different numbers of rows.

    Rows are padded to the largest count for the collective and trimmed after; the result is the
    same on every rank, in rank order. Identity when not distributed.
    """
    if not is_distributed():
        return x
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    sizes = [int(c.item()) for c in counts]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:s] for o, s in zip(out, sizes)], dim=0)
