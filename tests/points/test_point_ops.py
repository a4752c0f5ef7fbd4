"""Pure-torch point-cloud operators (FPS, kNN, ball query, interpolation) and the Chamfer loss."""

import pytest
import torch

from lightning_ssl.encoders.point_ops import (
    ball_query,
    farthest_point_sample,
    group_points,
    has_compiled_ops,
    knn,
    knn_interpolate,
)
from lightning_ssl.losses.chamfer import ChamferDistance, chamfer_distance


def _cloud(b, n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 3, generator=g, dtype=dtype)


def _fps_reference(pts, n_samples, start):
    """Brute-force FPS on one cloud [N, 3] in python loops."""
    chosen = [start]
    for _ in range(n_samples - 1):
        best, best_d = None, -1.0
        for i in range(pts.shape[0]):
            d = min(float(((pts[i] - pts[j]) ** 2).sum()) for j in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def _brute_d2(q, r):
    return ((q[:, :, None, :] - r[:, None, :, :]) ** 2).sum(-1)


# ---------------------------------------------------------------------------------------------- FPS


def test_fps_matches_reference_deterministic_start():
    xyz = _cloud(2, 40, seed=1, dtype=torch.float64)
    idx = farthest_point_sample(xyz, 10, deterministic=True)
    assert idx.shape == (2, 10) and idx.dtype == torch.long
    for b in range(2):
        assert idx[b].tolist() == _fps_reference(xyz[b], 10, 0)


def test_fps_explicit_start_and_generator():
    xyz = _cloud(3, 30, seed=2, dtype=torch.float64)
    start = torch.tensor([5, 0, 29])
    idx = farthest_point_sample(xyz, 6, start=start)
    for b in range(3):
        assert idx[b].tolist() == _fps_reference(xyz[b], 6, int(start[b]))
    a = farthest_point_sample(xyz, 6, generator=torch.Generator().manual_seed(7))
    c = farthest_point_sample(xyz, 6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, c)


def test_fps_distinct_and_covers_clusters():
    g = torch.Generator().manual_seed(3)
    centres = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    blob = centres.repeat_interleave(25, 0) + 0.1 * torch.randn(100, 3, generator=g)
    xyz = torch.stack([blob, blob[torch.randperm(100, generator=g)]])
    for seed in range(3):
        idx = farthest_point_sample(xyz, 4, generator=torch.Generator().manual_seed(seed))
        for b in range(2):
            nearest_centre = torch.cdist(xyz[b, idx[b]], centres).argmin(1)
            assert sorted(nearest_centre.tolist()) == [0, 1, 2, 3]
    idx = farthest_point_sample(xyz, 50, deterministic=True)
    for b in range(2):
        assert len(set(idx[b].tolist())) == 50


# ---------------------------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
def test_knn_matches_brute_force(chunk_size):
    q, r = _cloud(2, 50, seed=4, dtype=torch.float64), _cloud(2, 80, seed=5, dtype=torch.float64)
    dist2, idx = knn(q, r, 5, chunk_size=chunk_size)
    full = _brute_d2(q, r)
    ref_idx = full.argsort(-1)[..., :5]
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist2, full.gather(-1, ref_idx))
    assert bool((dist2[..., 1:] >= dist2[..., :-1]).all())
    d_full, i_full = knn(q, r, 5, chunk_size=10_000)
    assert torch.equal(idx, i_full) and torch.equal(dist2, d_full)


def test_knn_self_is_nearest_and_float32():
    x = _cloud(3, 60, seed=6)
    dist2, idx = knn(x, x, 1)
    assert torch.equal(idx[..., 0], torch.arange(60).expand(3, -1))
    assert bool((dist2 == 0).all()) and dist2.dtype == torch.float32


# --------------------------------------------------------------------------------------- ball query


def _ball_reference(q, r, radius, k):
    out = []
    for i in range(q.shape[0]):
        d2 = ((r - q[i]) ** 2).sum(-1)
        found = [j for j in range(r.shape[0]) if float(d2[j]) < radius**2][:k]
        if not found:
            found = [int(d2.argmin())]
        out.append(found + [found[0]] * (k - len(found)))
    return out


@pytest.mark.parametrize("chunk_size", [3, 4096])
def test_ball_query_matches_reference(chunk_size):
    q, r = _cloud(2, 20, seed=7, dtype=torch.float64), _cloud(2, 60, seed=8, dtype=torch.float64)
    q[0, 0] = 5.0  # far from everything: falls back to the nearest neighbour
    idx = ball_query(q, r, 0.3, 8, chunk_size=chunk_size)
    assert idx.shape == (2, 20, 8)
    for b in range(2):
        assert idx[b].tolist() == _ball_reference(q[b], r[b], 0.3, 8)
    assert idx[0, 0].tolist() == [int(_brute_d2(q, r)[0, 0].argmin())] * 8


def test_ball_query_k_larger_than_n_pads():
    r = _cloud(1, 4, seed=9)
    idx = ball_query(r[:, :1], r, 10.0, 6)
    assert idx[0, 0].tolist() == [0, 1, 2, 3, 0, 0]


# ------------------------------------------------------------------------ interpolation / grouping


def test_knn_interpolate_exact_and_constant():
    src = _cloud(2, 30, seed=10, dtype=torch.float64)
    feat = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dst = torch.cat([src[:, [3, 17]], _cloud(2, 5, seed=11, dtype=torch.float64)], 1)
    out = knn_interpolate(src, feat, dst, k=3)
    assert out.shape == (2, 7, 4)
    torch.testing.assert_close(out[:, 0], feat[:, 3], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1], feat[:, 17], rtol=0, atol=0)
    const = torch.full((2, 30, 4), 2.5, dtype=torch.float64)
    torch.testing.assert_close(knn_interpolate(src, const, dst, k=3), torch.full((2, 7, 4), 2.5, dtype=torch.float64))
    # matches the explicit inverse squared distance formula on non-coincident points
    d2 = _brute_d2(dst[:, 2:], src)
    dd, ii = d2.topk(3, largest=False)
    w = 1 / (dd + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    expected = (torch.stack([feat[b][ii[b]] for b in range(2)]) * w[..., None]).sum(2)
    torch.testing.assert_close(out[:, 2:], expected)


def test_group_points():
    pts = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    idx = torch.tensor([[[0, 4], [2, 2], [1, 3]], [[4, 4], [0, 1], [3, 2]]])
    out = group_points(pts, idx)
    assert out.shape == (2, 3, 2, 2)
    for b in range(2):
        for m in range(3):
            for j in range(2):
                assert torch.equal(out[b, m, j], pts[b, idx[b, m, j]])
    with pytest.raises(ValueError, match=r"idx values must be in \[0, 4\]"):
        group_points(pts, idx + 1)


# ------------------------------------------------------------------------------------------ Chamfer


def test_chamfer_matches_brute_force_and_reductions():
    x, y = _cloud(3, 25, seed=12, dtype=torch.float64), _cloud(3, 40, seed=13, dtype=torch.float64)
    d2 = _brute_d2(x, y)
    l2 = d2.min(2).values.mean(1) + d2.min(1).values.mean(1)
    l1 = (d2.min(2).values.sqrt().mean(1) + d2.min(1).values.sqrt().mean(1)) / 2
    torch.testing.assert_close(chamfer_distance(x, y, reduction="none"), l2)
    torch.testing.assert_close(chamfer_distance(x, y), l2.mean())
    torch.testing.assert_close(chamfer_distance(x, y, reduction="sum"), l2.sum())
    torch.testing.assert_close(chamfer_distance(x, y, squared=False, reduction="none", chunk_size=4), l1)
    torch.testing.assert_close(ChamferDistance(squared=False)(x, y), l1.mean())
    torch.testing.assert_close(chamfer_distance(y, x, reduction="none"), l2)  # symmetric
    with pytest.raises(ValueError, match="reduction must be one of"):
        chamfer_distance(x, y, reduction="avg")


def test_chamfer_zero_for_identical_clouds_with_finite_grad():
    x = _cloud(2, 30, seed=14).requires_grad_()
    for squared in (True, False):
        loss = chamfer_distance(x, x.detach().clone(), squared=squared)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, x)
        assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("squared", [True, False])
def test_chamfer_gradcheck(squared):
    x = _cloud(1, 5, seed=15, dtype=torch.float64).requires_grad_()
    y = (_cloud(1, 6, seed=16, dtype=torch.float64) + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: chamfer_distance(a, b, squared=squared), (x, y))


# ------------------------------------------------------------------------------------------- errors


def test_error_messages():
    x = _cloud(2, 10, seed=17)
    with pytest.raises(ValueError, match=r"got \[B, 3, N\]\? transpose with x.transpose\(1, 2\)"):
        knn(x.transpose(1, 2).contiguous()[:, :, :8], x, 1)
    with pytest.raises(ValueError, match=r"expected \[B, N, 3\]"):
        farthest_point_sample(x[0], 2)
    nan = x.clone()
    nan[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        farthest_point_sample(nan, 2)
    with pytest.raises(ValueError, match="NaN"):
        chamfer_distance(x, nan)
    with pytest.raises(ValueError, match=r"k must be in \[1, N=10\]"):
        knn(x, x, 11)
    with pytest.raises(ValueError, match=r"k must be in \[1, N=10\]"):
        knn(x, x, 0)
    with pytest.raises(ValueError, match=r"n_samples must be in \[1, N=10\]"):
        farthest_point_sample(x, 11)
    with pytest.raises(ValueError, match=r"n_samples must be in"):
        farthest_point_sample(x, 0)
    with pytest.raises(ValueError, match="empty"):
        knn(x[:, :0], x, 1)
    with pytest.raises(ValueError, match="empty"):
        chamfer_distance(x, x[:, :0])
    with pytest.raises(ValueError, match="batch size mismatch"):
        knn(x[:1], x, 1)
    with pytest.raises(ValueError, match="batch size mismatch"):
        ball_query(x[:1], x, 0.5, 4)
    with pytest.raises(ValueError, match="radius must be > 0"):
        ball_query(x, x, 0.0, 4)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        knn(x, x, 1, chunk_size=0)


# ----------------------------------------------------------------------------- compiled reference


@pytest.mark.skipif(not has_compiled_ops(), reason="torch_cluster / pyg_lib not installed: no compiled reference")
def test_matches_torch_geometric_compiled_ops():
    from torch_geometric.nn import fps as pyg_fps
    from torch_geometric.nn import knn as pyg_knn

    xyz = _cloud(2, 64, seed=18, dtype=torch.float64)
    flat = xyz.reshape(-1, 3)
    batch = torch.arange(2).repeat_interleave(64)
    ref = pyg_fps(flat, batch, ratio=0.25, random_start=False).reshape(2, 16) - torch.tensor([[0], [64]])
    assert torch.equal(farthest_point_sample(xyz, 16, deterministic=True, backend="torch"), ref)
    row, col = pyg_knn(flat, flat, 4, batch, batch)  # row: query, col: reference
    _, idx = knn(xyz, xyz, 4, backend="torch")
    ours = {(b * 64 + m, b * 64 + int(j)) for b in range(2) for m in range(64) for j in idx[b, m]}
    assert ours == set(zip(row.tolist(), col.tolist()))


@pytest.mark.skipif(not has_compiled_ops(), reason="torch_cluster / pyg_lib not installed: no compiled reference")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backend_torch_equals_compiled(dtype):
    xyz = _cloud(3, 50, seed=19, dtype=dtype)
    query = _cloud(3, 7, seed=20, dtype=dtype)
    for n in (1, 3, 17, 50):
        assert torch.equal(
            farthest_point_sample(xyz, n, deterministic=True, backend="torch"),
            farthest_point_sample(xyz, n, deterministic=True, backend="compiled"),
        )
    for q, k in ((query, 1), (query, 5), (xyz, 50)):
        d_t, i_t = knn(q, xyz, k, backend="torch")
        d_c, i_c = knn(q, xyz, k, backend="compiled")
        assert i_c.shape == i_t.shape == (3, q.shape[1], k)
        assert torch.equal(i_t.sort(-1).values, i_c.sort(-1).values)  # same neighbour sets
        torch.testing.assert_close(d_c, d_t)  # both ascending by distance
        assert bool((d_c[..., 1:] >= d_c[..., :-1]).all())


def test_backend_selection_and_errors(monkeypatch):
    from lightning_ssl.encoders import point_ops

    xyz = _cloud(2, 20, seed=21)
    with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'torch', 'compiled'; got 'cuda'"):
        farthest_point_sample(xyz, 4, deterministic=True, backend="cuda")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        knn(xyz, xyz, 2, backend="pyg")
    monkeypatch.setattr(point_ops, "has_compiled_ops", lambda: False)
    with pytest.raises(ImportError, match=r"pyg-lib.*torch-cluster.*backend='torch'"):
        farthest_point_sample(xyz, 4, deterministic=True, backend="compiled")
    with pytest.raises(ImportError, match=r"torch_geometric.nn.knn.*pyg-lib.*torch-cluster"):
        knn(xyz, xyz, 2, backend="compiled")
    # "auto" falls back to the torch path without compiled ops
    assert torch.equal(
        farthest_point_sample(xyz, 5, deterministic=True), farthest_point_sample(xyz, 5, deterministic=True, backend="torch")
    )
    assert torch.equal(knn(xyz, xyz, 3)[1], knn(xyz, xyz, 3, backend="torch")[1])
    # with compiled ops, fps calls PyG cannot express are refused before reaching PyG
    monkeypatch.setattr(point_ops, "has_compiled_ops", lambda: True)
    with pytest.raises(ValueError, match=r"deterministic=True and start=None"):
        farthest_point_sample(xyz, 4, backend="compiled")
    with pytest.raises(ValueError, match=r"deterministic=True and start=None"):
        farthest_point_sample(xyz, 4, start=torch.tensor([1, 2]), deterministic=True, backend="compiled")
    # "auto" keeps random / explicit starts on the torch path even when compiled ops exist
    start = torch.tensor([3, 7])
    assert torch.equal(farthest_point_sample(xyz, 4, start=start)[:, 0], start)


def test_compiled_path_index_mapping_with_fake_pyg_ops(monkeypatch):
    """The flatten/unflatten around PyG's fps/knn, checked against stand-ins with PyG's semantics
    (global indices, ceil(ratio * N) samples per cloud, knn edges in arbitrary order)."""
    import math

    import torch_geometric.nn as pyg_nn

    from lightning_ssl.encoders import point_ops

    def fake_fps(x, batch, ratio, random_start=True, batch_size=None):
        assert not random_start
        out, offset = [], 0
        for b in range(int(batch.max()) + 1):
            pts = x[batch == b]
            n = math.ceil(torch.tensor(pts.shape[0], dtype=torch.float32).item() * ratio)
            out.append(torch.tensor(_fps_reference(pts, n, 0)) + offset)
            offset += pts.shape[0]
        return torch.cat(out)

    def fake_knn(x, y, k, batch_x, batch_y, batch_size=None):
        d2 = ((y[:, None] - x[None]) ** 2).sum(-1).masked_fill(batch_y[:, None] != batch_x[None], float("inf"))
        col = d2.topk(k, dim=1, largest=False).indices
        row = torch.arange(y.shape[0]).repeat_interleave(k)
        perm = torch.randperm(row.numel(), generator=torch.Generator().manual_seed(0))  # any edge order
        return torch.stack([row, col.reshape(-1)])[:, perm]

    monkeypatch.setattr(point_ops, "has_compiled_ops", lambda: True)
    monkeypatch.setattr(pyg_nn, "fps", fake_fps)
    monkeypatch.setattr(pyg_nn, "knn", fake_knn)
    xyz = _cloud(3, 23, seed=22, dtype=torch.float64)
    query = _cloud(3, 6, seed=23, dtype=torch.float64)
    for n in (1, 3, 7, 23):
        assert torch.equal(
            farthest_point_sample(xyz, n, deterministic=True, backend="compiled"),
            farthest_point_sample(xyz, n, deterministic=True, backend="torch"),
        )
    for q, k in ((query, 1), (query, 4), (xyz, 23)):
        d_c, i_c = knn(q, xyz, k, backend="compiled")
        d_t, i_t = knn(q, xyz, k, backend="torch")
        assert torch.equal(i_c, i_t)  # random clouds: no ties, so the sorted rows agree exactly
        torch.testing.assert_close(d_c, d_t)
