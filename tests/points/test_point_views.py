"""Point views made on the device: rotations, scale, jitter, dropout, crop, normals."""

import math

import pytest
import torch

from lightning_ssl.data import PointView, apply_point_view
from lightning_ssl.data.point_views import DEFAULT_POINT_VIEWS, random_rotation, up_rotation


def _batch(b=4, n=64, seed=0, normals=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    if normals:
        nrm = torch.nn.functional.normalize(torch.randn(b, n, 3, generator=g), dim=-1)
        x = torch.cat([x, nrm], -1)
    return x


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _fit_rotation(a, b):
    """Least-squares R with b ~ a @ R^T per cloud."""
    return torch.linalg.lstsq(a, b).solution.transpose(1, 2)


def test_identity_view_returns_input():
    x = _batch()
    v = PointView()
    assert v.is_identity and apply_point_view(x, v) is x
    assert not PointView(translate=0.1).is_identity
    assert PointView(jitter_sigma=0.1, jitter_clip=0.0).is_identity


@pytest.mark.parametrize("up", ["x", "y", "z"])
def test_up_rotation_per_sample_preserves_norms_and_up_coordinate(up):
    x = _batch(b=6)
    y = apply_point_view(x, PointView(rotate="up"), up_axis=up, generator=_gen())
    a = "xyz".index(up)
    assert torch.allclose(y[..., a], x[..., a], atol=1e-6)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    R = _fit_rotation(x, y)
    angles = torch.atan2(R[:, (a + 2) % 3, (a + 1) % 3], R[:, (a + 1) % 3, (a + 1) % 3])
    assert angles.unique().numel() == 6  # a different angle per sample
    assert torch.allclose(torch.linalg.det(R), torch.ones(6), atol=1e-4)


def test_up_rotation_matrix_convention():
    R = up_rotation(torch.tensor([math.pi / 2]), "z")[0]
    assert torch.allclose(R @ torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), atol=1e-6)
    R = up_rotation(torch.tensor([math.pi / 2]), "y")[0]
    assert torch.allclose(R @ torch.tensor([0, 0, 1.0]), torch.tensor([1.0, 0, 0]), atol=1e-6)


def test_so3_rotations_orthonormal_det_one_and_normals_consistent():
    R = random_rotation(500, torch.zeros(1), _gen(1))
    eye = torch.eye(3).expand(500, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(500), atol=1e-5)
    # uniform: the image of a fixed vector has mean ~ 0
    assert (R @ torch.tensor([0, 0, 1.0])).mean(0).abs().max() < 0.12
    x = _batch(b=3, normals=True)
    y = apply_point_view(x, PointView(rotate="so3"), normals=True, generator=_gen(2))
    assert torch.allclose(y[..., :3].norm(dim=-1), x[..., :3].norm(dim=-1), atol=1e-5)
    # dot(point, normal) and the normals' length are preserved by a rotation
    assert torch.allclose((y[..., :3] * y[..., 3:]).sum(-1), (x[..., :3] * x[..., 3:]).sum(-1), atol=1e-5)
    assert torch.allclose(y[..., 3:].norm(dim=-1), torch.ones(3, 64), atol=1e-5)
    R = _fit_rotation(x[..., :3], y[..., :3])
    assert torch.allclose(y[..., 3:], x[..., 3:] @ R.transpose(1, 2), atol=1e-4)


def test_anisotropic_scale_and_normals_inverse_transpose():
    x = _batch(b=5, normals=True)
    y = apply_point_view(x, PointView(scale=(0.5, 2.0)), normals=True, generator=_gen(3))
    s = y[..., :3] / x[..., :3]
    s0 = s[:, :1]
    assert torch.allclose(s, s0.expand_as(s), atol=1e-4)  # one factor per cloud and axis
    assert ((s0 >= 0.5 - 1e-6) & (s0 <= 2.0 + 1e-6)).all()
    assert s0.flatten(1).std(1).min() > 0  # anisotropic: the axes differ
    assert torch.allclose(y[..., 3:], torch.nn.functional.normalize(x[..., 3:] / s0, dim=-1), atol=1e-5)


def test_translate_and_jitter_bounds():
    x = _batch(b=4, normals=True)
    y = apply_point_view(x, PointView(translate=0.2), normals=True, generator=_gen(4))
    shift = y[..., :3] - x[..., :3]
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6) and shift.abs().max() <= 0.2
    assert torch.equal(y[..., 3:], x[..., 3:])  # normals do not move with a translation
    z = apply_point_view(x[..., :3], PointView(jitter_sigma=1.0, jitter_clip=0.05), generator=_gen(5))
    d = z - x[..., :3]
    assert d.abs().max() <= 0.05 + 1e-6 and (d.abs() > 0).float().mean() > 0.9


def test_point_dropout_keeps_shape_and_uses_first_point():
    x = _batch(b=8, n=256)
    y = apply_point_view(x, PointView(point_dropout=0.9), generator=_gen(6))
    assert y.shape == x.shape
    dropped = (y != x).any(-1)
    assert dropped.any()
    assert torch.equal(y[dropped], x[:, :1].expand_as(x)[dropped])  # replaced by the cloud's first point
    ratios = dropped.float().mean(1)
    assert ratios.max() <= 0.99 and ratios.unique().numel() > 1  # a different ratio per cloud


def test_crop_keeps_shape_and_points_from_original_cloud():
    x = _batch(b=4, n=128, normals=True)
    y = apply_point_view(x, PointView(crop=0.3), normals=True, generator=_gen(7))
    assert y.shape == x.shape
    counts = []
    for b in range(4):
        d = (y[b, :, None] - x[b, None]).abs().amax(-1)  # every output row (xyz and normal) is an input row
        assert d.min(1).values.max() == 0
        kept = torch.unique(d.argmin(1))
        assert 0.3 * 128 <= kept.numel() <= 128
        # the kept points are the k nearest neighbours of one point of the cloud (a local crop)
        nearest = (x[b, :, None, :3] - x[b, None, :, :3]).norm(dim=-1).argsort(1)[:, :kept.numel()]
        assert any(torch.equal(nearest[c].sort().values, kept) for c in range(128))
        counts.append(kept.numel())
    assert min(counts) < 128 and len(set(counts)) > 1  # a different fraction per cloud


def test_views_are_batched_on_any_device_and_seeded():
    x = _batch(b=4, normals=True)
    v = PointView(rotate="so3", scale=(0.8, 1.2), jitter_sigma=0.01, translate=0.1, point_dropout=0.5, crop=0.5)
    a = apply_point_view(x, v, normals=True, generator=_gen(8))
    b = apply_point_view(x, v, normals=True, generator=_gen(8))
    assert torch.equal(a, b) and a.shape == x.shape and torch.isfinite(a).all()
    assert not torch.equal(a, apply_point_view(x, v, normals=True, generator=_gen(9)))
    x64 = x.double()
    assert apply_point_view(x64, v, normals=True).dtype == torch.float64
    extra = torch.cat([x, torch.rand(4, 64, 3)], -1)  # colours ride along unchanged (up to crop/dropout)
    out = apply_point_view(extra, PointView(rotate="up", scale=(0.5, 2)), normals=True, generator=_gen(1))
    assert torch.equal(out[..., 6:], extra[..., 6:])


def test_default_views_are_point_mae_scale_and_translate():
    assert len(DEFAULT_POINT_VIEWS) == 2
    for v in DEFAULT_POINT_VIEWS:
        assert v.scale == pytest.approx((2 / 3, 3 / 2)) and v.translate == 0.2 and v.rotate == "none"


def test_point_view_from_yaml_dict_via_jsonargparse():
    from jsonargparse import ArgumentParser

    from lightning_ssl.data import PointCloudDataModule

    parser = ArgumentParser()
    parser.add_class_arguments(PointCloudDataModule, "data")
    cfg = parser.parse_object({"data": {"num_points": 32, "views": [{"rotate": "up", "scale": [0.8, 1.25]},
                                                                      {"jitter_sigma": 0.01, "crop": 0.6}]}})
    init = parser.instantiate_classes(cfg)
    dm = init.data
    assert dm.views[0] == PointView(rotate="up", scale=(0.8, 1.25)) and dm.views[1].crop == 0.6
