"""Pure-torch point-cloud operators, batched over clouds of shape ``[B, N, 3]``.

Farthest point sampling, k-nearest neighbours, ball query, inverse-distance feature interpolation
and a gather helper, as used by PointNet++ and Point-MAE. Everything runs on any device and dtype
(float32/float64) without compiled extensions; neighbour searches process query rows in chunks so
that peak memory is ``O(B * chunk_size * N)``.

Qi, Yi, Su, Guibas. "PointNet++: Deep Hierarchical Feature Learning on Point Sets in a Metric
Space." NeurIPS 2017. https://arxiv.org/abs/1706.02413

Pang, Wang, Tay, Liu, Tian, Yuan. "Masked Autoencoders for Point Cloud Self-supervised
Learning." ECCV 2022. https://arxiv.org/abs/2203.06604
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ball_query",
    "farthest_point_sample",
    "group_points",
    "has_compiled_ops",
    "knn",
    "knn_interpolate",
]


def has_compiled_ops() -> bool:
    """True when ``torch_cluster`` or ``pyg_lib`` imports, i.e. ``torch_geometric.nn.fps``/``knn`` work.

    Only informative: nothing in this module depends on them."""
    for name in ("torch_cluster", "pyg_lib"):
        try:
            __import__(name)
        except Exception:  # ImportError, or a binary built for another torch version
            continue
        return True
    return False


def _check_cloud(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B, N, 3], got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != 3:
        hint = ""
        if x.dim() == 3 and x.shape[1] == 3:
            hint = " (got [B, 3, N]? transpose with x.transpose(1, 2))"
        elif x.dim() == 2 and x.shape[-1] == 3:
            hint = " (a single cloud [N, 3]? add a batch dimension with x.unsqueeze(0))"
        raise ValueError(f"{name} must have shape [B, N, 3]: expected [B, N, 3]; got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}; convert with x.float()")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); every cloud needs at least one point")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf coordinates; remove or replace them before calling")


def _check_pair(query: Tensor, ref: Tensor) -> None:
    _check_cloud(query, "query")
    _check_cloud(ref, "ref")
    if query.shape[0] != ref.shape[0]:
        raise ValueError(
            f"batch size mismatch: query has {query.shape[0]} clouds and ref has {ref.shape[0]}; "
            "both must be [B, *, 3] with the same B"
        )
    if query.dtype != ref.dtype or query.device != ref.device:
        raise ValueError(
            f"query ({query.dtype}, {query.device}) and ref ({ref.dtype}, {ref.device}) must share dtype and "
            "device; convert one with .to(other)"
        )


def _check_chunk(chunk_size: int) -> None:
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _sq_dist(query: Tensor, ref: Tensor) -> Tensor:
    """Squared Euclidean distances ``[B, M, N]`` without the matmul shortcut (exact, no cancellation)."""
    return torch.cdist(query, ref, compute_mode="donot_use_mm_for_euclid_dist").square()


def farthest_point_sample(
    xyz: Tensor,
    n_samples: int,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
) -> Tensor:
    """Iterative farthest point sampling (PointNet++, Qi et al. 2017; Point-MAE centres, Pang et al. 2022).

    Returns ``[B, n_samples]`` long indices into ``xyz`` ``[B, N, 3]``. The first index is ``start``
    (``[B]`` long) when given, 0 when ``deterministic=True``, else drawn uniformly per cloud with
    ``generator``. Each next index maximises the squared distance to the already chosen set; ties
    go to the lowest index. Indices are distinct while the cloud has that many distinct points."""
    _check_cloud(xyz, "xyz")
    B, N, _ = xyz.shape
    if not 1 <= int(n_samples) <= N:
        raise ValueError(f"n_samples must be in [1, N={N}], got {n_samples}; lower n_samples or use larger clouds")
    n_samples = int(n_samples)
    device = xyz.device
    if start is not None:
        start = torch.as_tensor(start, device=device).long().reshape(-1)
        if start.numel() == 1 and B > 1:
            start = start.expand(B)
        if start.shape != (B,):
            raise ValueError(f"start must have shape [B]={B}, got {tuple(start.shape)}")
        if bool((start < 0).any()) or bool((start >= N).any()):
            raise ValueError(f"start indices must be in [0, {N - 1}]")
    elif deterministic:
        start = torch.zeros(B, dtype=torch.long, device=device)
    else:
        gen_device = generator.device if generator is not None else device
        start = torch.randint(N, (B,), generator=generator, device=gen_device).to(device)

    out = torch.empty(B, n_samples, dtype=torch.long, device=device)
    batch = torch.arange(B, device=device)
    with torch.no_grad():
        pts = xyz.detach()
        min_d2 = torch.full((B, N), float("inf"), dtype=pts.dtype, device=device)
        current = start
        for i in range(n_samples):
            out[:, i] = current
            centroid = pts[batch, current].unsqueeze(1)  # [B, 1, 3]
            d2 = (pts - centroid).square().sum(-1)
            min_d2 = torch.minimum(min_d2, d2)
            current = min_d2.argmax(dim=1)
    return out


def knn(query: Tensor, ref: Tensor, k: int, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """k nearest neighbours in ``ref`` ``[B, N, 3]`` of every ``query`` point ``[B, M, 3]``.

    Returns ``(dist2, idx)`` of shape ``[B, M, k]``: squared distances in ascending order and long
    indices into ``ref``. Neighbours are selected with ``torch.cdist`` + ``topk(largest=False)`` over
    chunks of ``chunk_size`` query rows (peak memory ``O(B * chunk_size * N)``); ``dist2`` is then
    recomputed from the gathered coordinates, so it is differentiable in both inputs."""
    _check_pair(query, ref)
    _check_chunk(chunk_size)
    N = ref.shape[1]
    if not 1 <= int(k) <= N:
        raise ValueError(f"k must be in [1, N={N}] (number of ref points), got {k}; lower k")
    k = int(k)
    idx_chunks = []
    with torch.no_grad():
        r = ref.detach()
        for q in query.detach().split(int(chunk_size), dim=1):
            idx_chunks.append(_sq_dist(q, r).topk(k, dim=-1, largest=False, sorted=True).indices)
    idx = torch.cat(idx_chunks, dim=1)
    neighbours = group_points(ref, idx)  # [B, M, k, 3]
    dist2 = (query.unsqueeze(2) - neighbours).square().sum(-1)
    return dist2, idx


def ball_query(query: Tensor, ref: Tensor, radius: float, k: int, chunk_size: int = 4096) -> Tensor:
    """Ball query of PointNet++ (Qi et al. 2017): ``[B, M, k]`` long indices into ``ref``.

    For every query point, the first ``k`` ref points *in index order* with squared distance
    ``< radius ** 2`` (as the CUDA reference, not the k nearest). When fewer than ``k`` are found,
    the remaining slots repeat the first found index. When none is found (impossible when the query
    points are a subset of ``ref``), every slot holds the index of the nearest ref point.
    ``k`` may exceed ``N``; the extra slots are padded the same way."""
    _check_pair(query, ref)
    _check_chunk(chunk_size)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = int(k)
    N = ref.shape[1]
    kk = min(k, N)
    r2 = float(radius) ** 2
    chunks = []
    with torch.no_grad():
        r = ref.detach()
        order = torch.arange(N, device=ref.device)
        for q in query.detach().split(int(chunk_size), dim=1):
            d2 = _sq_dist(q, r)  # [B, c, N]
            key = torch.where(d2 < r2, order, N)  # index if inside the ball, N (sentinel) otherwise
            first = key.topk(kk, dim=-1, largest=False, sorted=True).values  # first kk inside, ascending
            if kk < k:
                first = torch.cat([first, first.new_full((*first.shape[:-1], k - kk), N)], dim=-1)
            fill = torch.where(first[..., :1] < N, first[..., :1], d2.argmin(dim=-1, keepdim=True))
            chunks.append(torch.where(first < N, first, fill))
    return torch.cat(chunks, dim=1)


def group_points(points: Tensor, idx: Tensor) -> Tensor:
    """Gather ``points`` ``[B, N, C]`` at ``idx`` ``[B, M, k]`` -> ``[B, M, k, C]`` (PointNet++ grouping)."""
    if points.dim() != 3:
        raise ValueError(f"points must have shape [B, N, C], got {tuple(points.shape)}")
    if idx.dim() != 3:
        raise ValueError(f"idx must have shape [B, M, k], got {tuple(idx.shape)}")
    if idx.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"idx must be an integer tensor, got {idx.dtype}")
    B, N, C = points.shape
    if idx.shape[0] != B:
        raise ValueError(f"batch size mismatch: points has {B} clouds and idx has {idx.shape[0]}")
    if idx.numel() and (bool((idx < 0).any()) or bool((idx >= N).any())):
        raise ValueError(f"idx values must be in [0, {N - 1}] (N={N} points)")
    _, M, k = idx.shape
    flat = idx.long().reshape(B, M * k, 1).expand(-1, -1, C)
    return points.gather(1, flat).reshape(B, M, k, C)


def knn_interpolate(xyz_src: Tensor, feat_src: Tensor, xyz_dst: Tensor, k: int = 3, eps: float = 1e-8) -> Tensor:
    """Feature propagation of PointNet++ (Qi et al. 2017): ``[B, M, C]`` features at ``xyz_dst``.

    Each destination point averages the features of its ``k`` nearest sources with weights
    ``1 / (d2 + eps)`` normalised to sum to 1. A destination that coincides exactly with a source
    takes that source's feature (average over the coincident ones). ``k`` is clamped to ``N``."""
    _check_cloud(xyz_src, "xyz_src")
    _check_cloud(xyz_dst, "xyz_dst")
    if feat_src.dim() != 3 or feat_src.shape[:2] != xyz_src.shape[:2]:
        raise ValueError(
            f"feat_src must have shape [B, N, C] matching xyz_src {tuple(xyz_src.shape[:2])}, got {tuple(feat_src.shape)}"
        )
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dist2, idx = knn(xyz_dst, xyz_src, min(int(k), xyz_src.shape[1]))
    weight = 1.0 / (dist2 + eps)
    exact = dist2 == 0
    weight = torch.where(exact.any(-1, keepdim=True), exact.to(weight.dtype), weight)
    weight = weight / weight.sum(-1, keepdim=True)
    return (group_points(feat_src, idx) * weight.unsqueeze(-1).to(feat_src.dtype)).sum(2)
