"""Tests for lightning_ssl.data.image_transforms: recipes, the CPU (torchvision v2) path and the device path."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from lightning_ssl.data.image_transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RECIPES,
    DeviceAugmentation,
    MultiViewTransform,
    ViewSpec,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    base_transform,
    blur_kernel_size,
    cpu_view_transform,
    default_stats,
    eval_transform,
    gaussian_blur,
    make_recipe,
    normalize_stats,
    rgb_to_grayscale,
    sample_crop_boxes,
)


def _off(size: int, **kw) -> ViewSpec:
    """A spec with every random operation disabled and a full-image crop."""
    base = dict(size=size, scale=(1.0, 1.0), hflip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
                solarize_p=0.0)
    base.update(kw)
    return ViewSpec(**base)


def _gradients(n: int, c: int = 3, size: int = 64) -> torch.Tensor:
    """Deterministic smooth 'natural-looking' images in [0, 1]: oriented colour gradients plus a blob."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    imgs = []
    for i in range(n):
        a = 2 * math.pi * i / n
        ch = []
        for k in range(c):
            phase = a + 2.1 * k
            g = 0.5 + 0.25 * math.cos(phase) * xx + 0.2 * math.sin(phase) * yy
            cx = -0.5 + 0.5 * (i % 3)
            blob = 0.25 * torch.exp(-((xx - cx) ** 2 + yy**2) / 0.1)
            ch.append((g + blob * (1 if k % 2 else -1)).clamp(0, 1))
        imgs.append(torch.stack(ch))
    return torch.stack(imgs)


# ------------------------------------------------------------------------------------------------
# Recipes
# ------------------------------------------------------------------------------------------------


def test_simclr_recipe():
    small = make_recipe("simclr", 32)
    assert len(small) == 2 and small[0] == small[1]
    v = small[0]
    assert v.size == 32 and v.scale == (0.08, 1.0) and v.hflip_p == 0.5
    assert (v.brightness, v.contrast, v.saturation, v.hue, v.jitter_p) == (0.4, 0.4, 0.4, 0.1, 0.8)
    assert v.grayscale_p == 0.2 and v.solarize_p == 0.0
    assert v.blur_p == 0.0  # CIFAR recipe: no blur
    assert all(s.blur_p == 0.5 for s in make_recipe("simclr", 224))
    assert all(s.blur_p == 0.5 for s in make_recipe("simclr", 32, blur=True))
    assert all(s.blur_p == 0.0 for s in make_recipe("SimCLR", 224, blur=False))


def test_byol_recipe_is_asymmetric():
    v1, v2_ = make_recipe("byol", 224)
    assert (v1.blur_p, v1.solarize_p) == (1.0, 0.0)
    assert (v2_.blur_p, v2_.solarize_p) == (0.1, 0.2)
    for v in (v1, v2_):
        assert (v.brightness, v.contrast, v.saturation, v.hue, v.jitter_p) == (0.4, 0.4, 0.2, 0.1, 0.8)
        assert v.grayscale_p == 0.2 and v.size == 224 and v.scale == (0.08, 1.0)
    s1, s2 = make_recipe("byol", 32)
    assert s1.blur_p == s2.blur_p == 0.0
    assert s1 != s2 and (s1.solarize_p, s2.solarize_p) == (0.0, 0.2)  # asymmetry kept via solarize
    b1, b2 = make_recipe("byol", 32, blur=True)
    assert (b1.blur_p, b2.blur_p) == (1.0, 0.1)


def test_dino_recipe_multicrop():
    views = make_recipe("dino", 224)
    assert len(views) == 8
    g1, g2, *local = views
    assert g1.size == g2.size == 224 and g1.scale == g2.scale == (0.4, 1.0)
    assert (g1.blur_p, g1.solarize_p, g2.blur_p, g2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert len(local) == 6
    for v in local:
        assert v.size == 96 and v.scale == (0.05, 0.4) and v.blur_p == 0.5 and v.solarize_p == 0.0
    for v in views:
        assert (v.brightness, v.contrast, v.saturation, v.hue, v.jitter_p, v.grayscale_p) == (
            0.4, 0.4, 0.2, 0.1, 0.8, 0.2)
    assert [v.size for v in make_recipe("dino", 32, num_local_crops=4)] == [32, 32, 14, 14, 14, 14]
    assert make_recipe("dino", 16)[-1].size == 8  # at least 8
    assert len(make_recipe("dino", 64, num_local_crops=0)) == 2
    assert make_recipe("dino", 64, local_size=20)[-1].size == 20
    assert all(v.blur_p == 0 for v in make_recipe("dino", 32))
    with pytest.raises(ValueError):
        make_recipe("dino", 64, num_local_crops=-1)


def test_unknown_recipe_lists_valid_names():
    with pytest.raises(ValueError) as err:
        make_recipe("swav", 32)
    assert "swav" in str(err.value)
    for name in RECIPES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "kwargs",
    [dict(size=0), dict(size=8, scale=(0.5, 0.2)), dict(size=8, scale=(0.0, 1.0)), dict(size=8, hflip_p=1.5),
     dict(size=8, hue=0.6), dict(size=8, brightness=-0.1), dict(size=8, blur_sigma=(0.0, 1.0))],
)
def test_viewspec_validation(kwargs):
    with pytest.raises(ValueError):
        ViewSpec(**kwargs)


def test_stats_and_kernel_size():
    assert normalize_stats("CIFAR-10") == (CIFAR10_MEAN, CIFAR10_STD)
    assert normalize_stats("imagenet") == (IMAGENET_MEAN, IMAGENET_STD)
    assert default_stats(1) == ((0.5,), (0.5,))
    assert default_stats(3) == ((0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="cifar10"):
        normalize_stats("foo")
    assert [blur_kernel_size(s) for s in (8, 32, 64, 96, 224)] == [3, 3, 7, 11, 23]


# ------------------------------------------------------------------------------------------------
# CPU path
# ------------------------------------------------------------------------------------------------


def _inputs(kind: str):
    rng = np.random.default_rng(0)
    if kind == "pil_rgb":
        return Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), mode="RGB"), 3
    if kind == "pil_l":
        return Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8), mode="L"), 1
    if kind == "tensor_rgb":
        return torch.from_numpy(rng.integers(0, 256, (3, 40, 48), dtype=np.uint8)), 3
    return torch.from_numpy(rng.integers(0, 256, (1, 40, 48), dtype=np.uint8)), 1


@pytest.mark.parametrize("kind", ["pil_rgb", "pil_l", "tensor_rgb", "tensor_l"])
@pytest.mark.parametrize("recipe", ["byol", "dino"])
def test_cpu_views_shapes_and_dtypes(kind, recipe):
    torch.manual_seed(0)
    img, c = _inputs(kind)
    mean, std = default_stats(c)
    specs = make_recipe(recipe, 24, num_local_crops=2, blur=True)
    # everything on with certainty, to exercise every op on 1 and 3 channels
    specs = [replace(s, jitter_p=1.0, grayscale_p=1.0, blur_p=1.0, solarize_p=1.0) for s in specs]
    tf = MultiViewTransform(specs, mean, std)
    for _ in range(3):
        views = tf(img)
        assert len(views) == len(specs) == len(tf)
        for v, s in zip(views, specs):
            assert type(v) is torch.Tensor
            assert v.shape == (c, s.size, s.size) and v.dtype == torch.float32
            assert torch.isfinite(v).all()
            assert v.min() >= -1.0 - 1e-6 and v.max() <= 1.0 + 1e-6  # (x - .5) / .5 with x in [0, 1]


def test_cpu_identity_and_flip():
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    ref = (img.float() / 255 - torch.tensor(CIFAR10_MEAN)[:, None, None]) / torch.tensor(CIFAR10_STD)[:, None, None]
    out = cpu_view_transform(_off(16), CIFAR10_MEAN, CIFAR10_STD)(img)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    flipped = cpu_view_transform(_off(16, hflip_p=1.0), CIFAR10_MEAN, CIFAR10_STD)(img)
    torch.testing.assert_close(flipped, ref.flip(-1), atol=1e-5, rtol=0)


def test_cpu_views_are_random():
    torch.manual_seed(0)
    img, _ = _inputs("tensor_rgb")
    tf = MultiViewTransform.from_recipe("simclr", 24, IMAGENET_MEAN, IMAGENET_STD)
    a, b = tf(img)
    assert not torch.allclose(a, b)


def test_eval_and_base_transforms():
    img, _ = _inputs("pil_rgb")  # 48 x 40 (w x h)
    ev = eval_transform(32, IMAGENET_MEAN, IMAGENET_STD)
    out = ev(img)
    assert type(out) is torch.Tensor and out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, ev(img))  # deterministic
    assert eval_transform(32, IMAGENET_MEAN, IMAGENET_STD, crop_fraction=0.875)(img).shape == (3, 32, 32)
    x = torch.randint(0, 256, (1, 20, 20), dtype=torch.uint8)
    torch.testing.assert_close(eval_transform(20, (0.0,), (1.0,))(x), x.float() / 255)

    base = base_transform(32)
    for inp in (img, torch.rand(3, 50, 40), _inputs("pil_l")[0]):
        b = base(inp)
        assert type(b) is torch.Tensor and b.dtype == torch.uint8 and b.shape[-2:] == (32, 32)
    assert base(_inputs("pil_l")[0]).shape == (1, 32, 32)
    # a base batch fed to an everything-off device aug equals the eval view
    x = base(img)[None]
    dev = DeviceAugmentation([_off(32)], IMAGENET_MEAN, IMAGENET_STD)(x)[0][0]
    torch.testing.assert_close(dev, ev(img), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# Device path
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("channels", [1, 3])
def test_device_shapes_per_recipe(recipe, channels):
    torch.manual_seed(0)
    specs = make_recipe(recipe, 32, num_local_crops=3, blur=True)
    aug = DeviceAugmentation(specs, *default_stats(channels))
    for x in (torch.randint(0, 256, (4, channels, 40, 36), dtype=torch.uint8), torch.rand(4, channels, 32, 32)):
        views = aug(x)
        assert len(views) == len(specs)
        for v, s in zip(views, specs):
            assert v.shape == (4, channels, s.size, s.size) and v.dtype == torch.float32
            assert torch.isfinite(v).all() and not v.requires_grad
            assert v.min() >= -1 - 1e-5 and v.max() <= 1 + 1e-5  # colour ops clamp to [0, 1]


def test_device_per_sample_variation():
    torch.manual_seed(0)
    x = _gradients(1).expand(16, -1, -1, -1).contiguous()
    for spec in make_recipe("dino", 32, num_local_crops=1, blur=True):
        v = DeviceAugmentation([spec], IMAGENET_MEAN, IMAGENET_STD)(x)[0].flatten(1)
        d = torch.cdist(v, v)
        off_diag = d[~torch.eye(16, dtype=torch.bool)]
        assert (off_diag > 1e-3).all(), spec
    # colour alone (no crop, no flip) also varies per sample
    spec = _off(32, jitter_p=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    v = DeviceAugmentation([spec], (0, 0, 0), (1, 1, 1))(x[:, :, :32, :32].contiguous())[0].flatten(1)
    assert (torch.cdist(v, v)[~torch.eye(16, dtype=torch.bool)] > 1e-3).all()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("ratio", [(3 / 4, 4 / 3), (1.0, 1.0)])
def test_device_identity_when_everything_off(channels, ratio):
    x = torch.randint(0, 256, (5, channels, 24, 24), dtype=torch.uint8)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.3,), (0.2,))
    out = DeviceAugmentation([_off(24, ratio=ratio)], mean, std)(x)[0]
    ref = (x.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # float input in [0, 1] is treated like uint8 / 255
    torch.testing.assert_close(DeviceAugmentation([_off(24)], mean, std)(x.float() / 255)[0], ref, atol=1e-5,
                               rtol=0)


def test_device_flip():
    x = torch.rand(4, 3, 20, 20)
    out = DeviceAugmentation([_off(20, hflip_p=1.0)], (0, 0, 0), (1, 1, 1))(x)[0]
    torch.testing.assert_close(out, torch.flip(x, dims=[-1]), atol=1e-5, rtol=0)
    assert not torch.allclose(out, x, atol=1e-3)


def test_device_grayscale():
    x = torch.rand(6, 3, 16, 16)
    out = DeviceAugmentation([_off(16, grayscale_p=1.0)], (0, 0, 0), (1, 1, 1))(x)[0]
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 1], out[:, 2])
    torch.testing.assert_close(out[:, :1], TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    # 1-channel inputs: grayscale is skipped without error
    y = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(DeviceAugmentation([_off(16, grayscale_p=1.0)], (0,), (1,))(y)[0], y, atol=1e-6,
                               rtol=0)


def test_device_solarize():
    x = torch.rand(4, 3, 16, 16)
    inv = DeviceAugmentation([_off(16, solarize_p=1.0, solarize_threshold=0.0)], (0, 0, 0), (1, 1, 1))(x)[0]
    torch.testing.assert_close(inv, 1 - x, atol=1e-6, rtol=0)
    half = DeviceAugmentation([_off(16, solarize_p=1.0)], (0, 0, 0), (1, 1, 1))(x)[0]
    torch.testing.assert_close(half, torch.where(x >= 0.5, 1 - x, x), atol=1e-6, rtol=0)


def test_device_blur_reduces_high_frequencies():
    torch.manual_seed(0)
    size = 64
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    board = ((xx + yy) % 2).float().expand(4, 3, -1, -1).contiguous()
    out = DeviceAugmentation([_off(size, blur_p=1.0, blur_sigma=(1.0, 2.0))], (0, 0, 0), (1, 1, 1))(board)[0]

    def hf_energy(t):
        spec = torch.fft.rfft2(t - t.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
        return spec[..., size // 4:, size // 4:].sum(dim=(-3, -2, -1))

    assert (hf_energy(out) < 0.05 * hf_energy(board)).all()
    torch.testing.assert_close(out.mean(dim=(-2, -1)), board.mean(dim=(-2, -1)), atol=1e-3, rtol=0)


def test_gaussian_blur_matches_torchvision():
    x = torch.rand(3, 3, 20, 20)
    sigma = torch.tensor([0.3, 1.0, 2.0])
    out = gaussian_blur(x, sigma, 7)
    for i in range(3):
        ref = TF.gaussian_blur(x[i], [7, 7], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(gaussian_blur(x, torch.zeros(3), 7), x)  # sigma 0 -> identity


def test_colour_ops_match_torchvision_per_sample():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 12, 12)
    f = torch.tensor([0.6, 0.9, 1.0, 1.2, 1.4])
    h = torch.tensor([-0.1, -0.03, 0.0, 0.05, 0.1])
    pairs = [(adjust_brightness, TF.adjust_brightness, f), (adjust_contrast, TF.adjust_contrast, f),
             (adjust_saturation, TF.adjust_saturation, f), (adjust_hue, TF.adjust_hue, h)]
    for ours, theirs, fac in pairs:
        out = ours(x.clone(), fac)
        for i in range(5):
            torch.testing.assert_close(out[i], theirs(x[i], float(fac[i])), atol=1e-5, rtol=0,
                                       msg=f"{ours.__name__} sample {i}")
    g = torch.rand(5, 1, 12, 12)
    for i in range(5):
        torch.testing.assert_close(adjust_contrast(g, f)[i], TF.adjust_contrast(g[i], float(f[i])), atol=1e-6,
                                   rtol=0)
    assert adjust_hue(g, h) is g and adjust_saturation(g, f) is g
    torch.testing.assert_close(rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)


def test_device_jitter_probability_zero_and_one_channel():
    x = torch.rand(8, 1, 16, 16)
    spec = _off(16, jitter_p=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    out = DeviceAugmentation([spec], (0,), (1,))(x)[0]
    assert out.shape == x.shape and not torch.allclose(out, x)
    # jitter_p = 0 with non-zero strengths is an exact no-op
    spec0 = _off(16, jitter_p=0.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    torch.testing.assert_close(DeviceAugmentation([spec0], (0,), (1,))(x)[0], x, atol=1e-6, rtol=0)


def test_device_crop_never_leaves_image():
    torch.manual_seed(0)
    ones = torch.ones(64, 3, 128, 96)
    spec = ViewSpec(size=16, scale=(0.08, 1.0), ratio=(0.3, 3.0), jitter_p=0, grayscale_p=0)
    aug = DeviceAugmentation([spec], (0, 0, 0), (1, 1, 1))
    aug.padding_mode = "zeros"  # any sample outside the image would pull in zeros
    torch.testing.assert_close(aug(ones)[0], torch.ones(64, 3, 16, 16), atol=1e-5, rtol=0)

    boxes = sample_crop_boxes(2000, 30, 50, (0.08, 1.0), (0.2, 5.0))
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (w > 0).all() and (h > 0).all()
    assert (x0 + w <= 50 + 1e-4).all() and (y0 + h <= 30 + 1e-4).all()


def test_crop_area_statistics_follow_scale():
    torch.manual_seed(0)
    H, W = 64, 64
    for scale in [(0.08, 1.0), (0.05, 0.4), (0.4, 1.0)]:
        boxes = sample_crop_boxes(2000, H, W, scale, (3 / 4, 4 / 3))
        frac = boxes[:, 2] * boxes[:, 3] / (H * W)
        assert frac.min() >= scale[0] - 1e-4 and frac.max() <= scale[1] + 1e-4
        assert frac.min() < scale[0] + 0.05 * (scale[1] - scale[0]) + 0.01  # covers the range
        assert frac.max() > scale[1] - 0.15 * (scale[1] - scale[0])
        r = boxes[:, 2] / boxes[:, 3]
        assert r.min() >= 3 / 4 - 1e-4 and r.max() <= 4 / 3 + 1e-4
        # same distribution as torchvision's (rejection-sampled) RandomResizedCrop
        tv = []
        for _ in range(2000):
            _, _, h, w = T.RandomResizedCrop.get_params(torch.empty(3, H, W), list(scale), [3 / 4, 4 / 3])
            tv.append(h * w / (H * W))
        assert abs(float(frac.mean()) - float(np.mean(tv))) < 0.03


def test_cpu_and_device_view_statistics_agree():
    torch.manual_seed(0)
    imgs = (_gradients(32) * 255).round().to(torch.uint8)
    specs = make_recipe("byol", 32, blur=True)
    dev_views = DeviceAugmentation(specs, CIFAR10_MEAN, CIFAR10_STD)(imgs)
    cpu_tf = MultiViewTransform(specs, CIFAR10_MEAN, CIFAR10_STD)
    cpu_views = [torch.stack(vs) for vs in zip(*[cpu_tf(img) for img in imgs])]
    for d, c in zip(dev_views, cpu_views):
        assert d.shape == c.shape
        dm, cm = d.mean(dim=(0, 2, 3)), c.mean(dim=(0, 2, 3))
        ds, cs = d.std(dim=(0, 2, 3)), c.std(dim=(0, 2, 3))
        assert (dm - cm).abs().max() < 0.3, (dm, cm)
        assert ((ds / cs) > 0.7).all() and ((ds / cs) < 1.4).all(), (ds, cs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_runs_on_cuda():
    aug = DeviceAugmentation.from_recipe("dino", 32, IMAGENET_MEAN, IMAGENET_STD, num_local_crops=2, blur=True)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        views = aug(x)
    assert all(v.is_cuda and v.dtype == torch.float32 for v in views)
    assert [tuple(v.shape) for v in views] == [(8, 3, 32, 32)] * 2 + [(8, 3, 14, 14)] * 2
