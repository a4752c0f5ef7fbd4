"""Pure-torch point-cloud operators, batched over clouds of shape ``[B, N, 3]``.

Farthest point sampling, k-nearest neighbours, ball query, inverse-distance feature interpolation
and a gather helper, as used by PointNet++, DGCNN and Point-MAE. Everything runs on any device and
dtype (float32/float64) without compiled extensions; neighbour searches process query rows in chunks
so that peak memory is ``O(B * chunk_size * N)``. ``farthest_point_sample`` and ``knn`` take
``backend="auto" | "torch" | "compiled"``: with ``pyg-lib`` (or ``torch-cluster`` for older PyG)
installed, "auto" runs ``torch_geometric.nn.fps`` / ``knn`` instead (same results up to ties).
The underscored helpers skip validation (no host syncs) for use inside encoders' ``forward``.

Qi, Yi, Su, Guibas. "PointNet++: Deep Hierarchical Feature Learning on Point Sets in a Metric
Space." NeurIPS 2017. https://arxiv.org/abs/1706.02413

Pang, Wang, Tay, Liu, Tian, Yuan. "Masked Autoencoders for Point Cloud Self-supervised
Learning." ECCV 2022. https://arxiv.org/abs/2203.06604
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = [
    "ball_query",
    "farthest_point_sample",
    "feature_knn",
    "group_points",
    "has_compiled_ops",
    "knn",
    "knn_interpolate",
]

BACKENDS = ("auto", "torch", "compiled")


@functools.lru_cache(maxsize=None)
def _compiled_ops_usable() -> bool:
    try:
        import torch_geometric.typing as pyg_typing
    except Exception:
        return False
    with_fps, with_knn = getattr(pyg_typing, "WITH_FPS", None), getattr(pyg_typing, "WITH_KNN", None)
    if with_fps is not None and with_knn is not None:  # PyG >= 2.7: fps/knn come from pyg-lib
        return bool(with_fps and with_knn)
    try:  # older PyG: fps/knn come from torch-cluster
        import torch_cluster  # noqa: F401
    except Exception:  # ImportError, or a binary built for another torch version
        return False
    return True


def has_compiled_ops() -> bool:
    """True when ``torch_geometric.nn.fps`` and ``torch_geometric.nn.knn`` work, i.e. their compiled
    backend (``pyg-lib`` for PyG >= 2.7, ``torch-cluster`` before) is installed and loads.

    ``backend="auto"`` in :func:`farthest_point_sample` and :func:`knn` uses them when this is True."""
    return _compiled_ops_usable()


def _use_compiled(backend: str, op: str, expressible: bool = True, why: str = "") -> bool:
    """Resolve ``backend`` ("auto" | "torch" | "compiled") to True when the compiled op should run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}; got {backend!r}")
    if backend == "torch":
        return False
    if backend == "auto":
        return expressible and has_compiled_ops()
    if not has_compiled_ops():
        raise ImportError(
            f"backend='compiled' needs torch_geometric.nn.{op}, whose compiled extension (pyg-lib for PyG >= 2.7, "
            "torch-cluster for older PyG) is not installed or does not load here; install the wheel matching your "
            "torch/CUDA build from https://data.pyg.org/whl/, or use backend='torch' (or 'auto')"
        )
    if not expressible:
        raise ValueError(f"backend='compiled' cannot run this {op} call: {why}")
    return True


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
    backend: str = "auto",
) -> Tensor:
    """Iterative farthest point sampling (PointNet++, Qi et al. 2017; Point-MAE centres, Pang et al. 2022).

    Returns ``[B, n_samples]`` long indices into ``xyz`` ``[B, N, 3]``. The first index is ``start``
    (``[B]`` long) when given, 0 when ``deterministic=True``, else drawn uniformly per cloud with
    ``generator``. Each next index maximises the squared distance to the already chosen set; ties
    go to the lowest index. Indices are distinct while the cloud has that many distinct points.

    ``backend``: ``"torch"`` (the loop below), ``"compiled"`` (``torch_geometric.nn.fps`` with
    ``random_start=False``; only for ``deterministic=True`` and ``start=None``; ImportError when
    ``pyg-lib``/``torch-cluster`` is missing) or ``"auto"`` (compiled when available and expressible).
    Both give the same indices up to ties."""
    use_compiled = _use_compiled(
        backend, "fps", expressible=start is None and deterministic,
        why="PyG's fps starts at index 0 (random_start=False); pass deterministic=True and start=None, "
        "or use backend='torch' for random or explicit starts",
    )
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
        start = None
    else:
        gen_device = generator.device if generator is not None else device
        start = torch.randint(N, (B,), generator=generator, device=gen_device).to(device)
    if use_compiled:
        return _fps_compiled(xyz, n_samples)
    return _fps_indices(xyz, n_samples, start)


def _fps_indices(xyz: Tensor, n_samples: int, start: Tensor | None = None) -> Tensor:
    """FPS loop without validation or host syncs; ``start=None`` starts every cloud at index 0."""
    B, N, _ = xyz.shape
    device = xyz.device
    if start is None:
        start = torch.zeros(B, dtype=torch.long, device=device)
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


def _fps_compiled(xyz: Tensor, n_samples: int) -> Tensor:
    """``torch_geometric.nn.fps`` on the flattened batch, mapped back to ``[B, n_samples]`` local indices."""
    from torch_geometric.nn import fps as pyg_fps

    B, N, _ = xyz.shape
    batch = torch.arange(B, device=xyz.device).repeat_interleave(N)
    # PyG samples ceil(ratio * N) points per cloud; (n - 0.5) / N gives exactly n despite rounding
    ratio = (n_samples - 0.5) / N
    with torch.no_grad():
        idx = pyg_fps(xyz.detach().reshape(B * N, 3), batch, ratio=ratio, random_start=False, batch_size=B)
    return idx.reshape(B, n_samples) - (torch.arange(B, device=xyz.device) * N).unsqueeze(1)


def _fps_auto(xyz: Tensor, n_samples: int) -> Tensor:
    """Deterministic FPS (start at 0) for encoders: compiled when available, no validation, no host syncs."""
    if has_compiled_ops():
        return _fps_compiled(xyz, n_samples)
    return _fps_indices(xyz, n_samples)


def knn(query: Tensor, ref: Tensor, k: int, chunk_size: int = 4096, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """k nearest neighbours in ``ref`` ``[B, N, 3]`` of every ``query`` point ``[B, M, 3]``.

    Returns ``(dist2, idx)`` of shape ``[B, M, k]``: squared distances in ascending order and long
    indices into ``ref``. Neighbours are selected with ``torch.cdist`` + ``topk(largest=False)`` over
    chunks of ``chunk_size`` query rows (peak memory ``O(B * chunk_size * N)``); ``dist2`` is then
    recomputed from the gathered coordinates, so it is differentiable in both inputs.

    ``backend``: ``"torch"`` (above), ``"compiled"`` (``torch_geometric.nn.knn`` on the flattened
    batch, rows then sorted by distance; ImportError when ``pyg-lib``/``torch-cluster`` is missing)
    or ``"auto"`` (compiled when available). Both give the same neighbour sets up to ties."""
    use_compiled = _use_compiled(backend, "knn")
    _check_pair(query, ref)
    _check_chunk(chunk_size)
    N = ref.shape[1]
    if not 1 <= int(k) <= N:
        raise ValueError(f"k must be in [1, N={N}] (number of ref points), got {k}; lower k")
    if use_compiled:
        idx = _knn_compiled(query, ref, int(k))
    else:
        idx = _knn_indices(query, ref, int(k), int(chunk_size))
    return _knn_dist2(query, ref, idx)


def _knn_indices(query: Tensor, ref: Tensor, k: int, chunk_size: int = 4096) -> Tensor:
    """``[B, M, k]`` nearest-neighbour indices by chunked cdist + topk; no validation, no host syncs."""
    idx_chunks = []
    with torch.no_grad():
        r = ref.detach()
        for q in query.detach().split(chunk_size, dim=1):
            idx_chunks.append(_sq_dist(q, r).topk(k, dim=-1, largest=False, sorted=True).indices)
    return torch.cat(idx_chunks, dim=1)


def _knn_compiled(query: Tensor, ref: Tensor, k: int) -> Tensor:
    """``torch_geometric.nn.knn`` on the flattened batch -> ``[B, M, k]`` local indices, ascending distance."""
    from torch_geometric.nn import knn as pyg_knn

    (B, M, _), N = query.shape, ref.shape[1]
    device = query.device
    batch_q = torch.arange(B, device=device).repeat_interleave(M)
    batch_r = torch.arange(B, device=device).repeat_interleave(N)
    with torch.no_grad():
        q, r = query.detach().reshape(B * M, -1), ref.detach().reshape(B * N, -1)
        row, col = pyg_knn(r, q, k, batch_r, batch_q, batch_size=B)  # row: query, col: ref (global indices)
        col = col[row.argsort(stable=True)].reshape(B, M, k) - (torch.arange(B, device=device) * N).view(B, 1, 1)
        d2 = (query.detach().unsqueeze(2) - _gather(ref.detach(), col)).square().sum(-1)
        return col.gather(-1, d2.argsort(dim=-1, stable=True))


def _knn_auto(query: Tensor, ref: Tensor, k: int) -> Tensor:
    """kNN indices for encoders: compiled when available, no validation, no host syncs."""
    if has_compiled_ops():
        return _knn_compiled(query, ref, k)
    return _knn_indices(query, ref, k)


def _knn_dist2(query: Tensor, ref: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    neighbours = _gather(ref, idx)  # [B, M, k, 3]
    return (query.unsqueeze(2) - neighbours).square().sum(-1), idx


def feature_knn(x: Tensor, k: int, chunk_size: int = 4096) -> Tensor:
    """k nearest rows of the same cloud in feature space (the dynamic graph of DGCNN, Wang et al. 2019).

    ``x`` is ``[B, N, C]`` with any ``C``; returns ``[B, N, k]`` long indices into the same cloud,
    ascending Euclidean distance, the point itself included (distance 0) as in DGCNN's ``knn``.
    Chunked ``cdist`` + ``topk`` over ``chunk_size`` rows: peak memory ``O(B * chunk_size * N)``.

    Wang, Sun, Liu, Sarma, Bronstein, Solomon. "Dynamic Graph CNN for Learning on Point Clouds."
    ACM TOG 2019. https://arxiv.org/abs/1801.07829"""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape [B, N, C], got {type(x).__name__}")
    if x.dim() != 3:
        hint = " (a single cloud [N, C]? add a batch dimension with x.unsqueeze(0))" if x.dim() == 2 else ""
        raise ValueError(f"x must have shape [B, N, C] (points along dim 1, features last); got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}; convert with x.float()")
    B, N, C = x.shape
    if B == 0 or N == 0 or C == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}); every cloud needs at least one point and one channel")
    if not 1 <= int(k) <= N:
        raise ValueError(f"k must be in [1, N={N}] (points per cloud), got {k}; lower k or use more points")
    _check_chunk(chunk_size)
    return _knn_indices(x, x, int(k), int(chunk_size))


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
    return _ball_query_indices(query, ref, float(radius), int(k), int(chunk_size))


def _ball_query_indices(query: Tensor, ref: Tensor, radius: float, k: int, chunk_size: int = 4096) -> Tensor:
    """Ball query without validation or host syncs (see :func:`ball_query`)."""
    N = ref.shape[1]
    kk = min(k, N)
    r2 = radius**2
    chunks = []
    with torch.no_grad():
        r = ref.detach()
        order = torch.arange(N, device=ref.device)
        for q in query.detach().split(chunk_size, dim=1):
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
    return _gather(points, idx)


def _gather(points: Tensor, idx: Tensor) -> Tensor:
    """:func:`group_points` without validation or host syncs."""
    (B, _, C), (_, M, k) = points.shape, idx.shape
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
