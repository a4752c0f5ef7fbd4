"""Image view generation for joint-embedding SSL: recipes, a CPU-worker path and a batched device path.

Three layers:

* :class:`ViewSpec` describes one augmented view (crop, flip, colour, blur, solarize), and
  :func:`make_recipe` returns the published per-view recipes of SimCLR, BYOL and DINO as lists of specs.
* The **CPU path** turns a spec into a ``torchvision.transforms.v2`` pipeline (:func:`cpu_view_transform`,
  :class:`MultiViewTransform`) that runs in dataloader workers, one image at a time.
* The **device path** (:class:`DeviceAugmentation`) applies the same specs to a whole uint8/float batch on
  whatever device it lives on, with per-sample random parameters and no Python loop over samples. A
  datamodule calls it in ``on_after_batch_transfer`` (see DESIGN.md, "Views on the device"); the dataset then
  only returns :func:`base_transform` output (a resized, centre-cropped uint8 tensor).

Both paths follow torchvision's semantics for every operation (sampling of crop area and aspect ratio,
the ColorJitter factor ranges and blend formulas, ITU-R 601 grayscale, the Gaussian kernel and reflect
padding of ``GaussianBlur``, ``x >= threshold -> 1 - x`` solarization). Documented differences of the device
path: crops are continuous (sub-pixel) boxes resampled bilinearly without antialiasing, and the order of
the four colour-jitter operations is drawn once per view and batch rather than once per image.

Batch-level view transforms run after either path on whole view-batches: :class:`BatchStylesStandardization`
(Scalbert et al., ICLR 2024) gives every image of a view the low-frequency Fourier amplitude of one of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import v2

from lightning_ssl import distributed as dist

__all__ = [
    "ViewSpec",
    "RECIPES",
    "make_recipe",
    "blur_kernel_size",
    "cpu_view_transform",
    "MultiViewTransform",
    "eval_transform",
    "base_transform",
    "DeviceAugmentation",
    "BatchStylesStandardization",
    "low_frequency_mask",
    "sample_crop_boxes",
    "rgb_to_grayscale",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "gaussian_blur",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "normalize_stats",
    "default_stats",
]

# --------------------------------------------------------------------------------------------------
# Normalisation statistics
# --------------------------------------------------------------------------------------------------

IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
# Per-pixel statistics of the CIFAR training sets (the often-copied (0.2023, 0.1994, 0.2010) is the
# mean of per-image stds, not the dataset std).
CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, ...] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, ...] = (0.2673, 0.2564, 0.2762)
MNIST_MEAN: tuple[float, ...] = (0.1307,)
MNIST_STD: tuple[float, ...] = (0.3081,)

_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "mnist": (MNIST_MEAN, MNIST_STD),
}


def normalize_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a known dataset, for inputs scaled to [0, 1].

    Known names: ``imagenet`` (also the usual choice for STL-10 and other natural images at >= 64 px),
    ``cifar10``, ``cifar100``, ``mnist``. Case and ``-``/``_`` are ignored.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _STATS:
        raise ValueError(f"Unknown normalisation statistics {name!r}; known: {sorted(_STATS)}.")
    return _STATS[key]


def default_stats(num_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean 0.5 and std 0.5 per channel: maps [0, 1] to [-1, 1] for data without known statistics."""
    if num_channels < 1:
        raise ValueError(f"num_channels must be >= 1, got {num_channels}.")
    return (0.5,) * num_channels, (0.5,) * num_channels


# --------------------------------------------------------------------------------------------------
# View specifications and recipes
# --------------------------------------------------------------------------------------------------


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(f"{name} must be a (min, max) pair with min <= max, got {value!r}.")
    return pair  # type: ignore[return-value]


@dataclass
class ViewSpec:
    """One augmented view. Field meanings follow torchvision.

    Attributes:
        size: output side length (square output).
        scale: range of the crop's area as a fraction of the image area (``RandomResizedCrop``).
        ratio: range of the crop's aspect ratio w / h, sampled log-uniformly.
        hflip_p: probability of a horizontal flip.
        jitter_p: probability of applying colour jitter.
        brightness, contrast, saturation: jitter strengths; factors are uniform in
            ``[max(0, 1 - s), 1 + s]`` (0 disables the operation).
        hue: hue shift is uniform in ``[-hue, hue]`` (fraction of the hue circle, <= 0.5).
        grayscale_p: probability of converting to grayscale (3-channel inputs only).
        blur_p: probability of a Gaussian blur with kernel :func:`blur_kernel_size` ``(size)``.
        blur_sigma: range of the blur's standard deviation, in output pixels.
        solarize_p: probability of solarization.
        solarize_threshold: pixels with value ``>= threshold`` (in [0, 1]) are inverted.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 1:
            raise ValueError(f"size must be a positive integer, got {self.size!r}.")
        self.size = int(self.size)
        self.scale = _pair(self.scale, "scale")
        self.ratio = _pair(self.ratio, "ratio")
        self.blur_sigma = _pair(self.blur_sigma, "blur_sigma")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}.")
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {self.ratio}.")
        if self.blur_sigma[0] <= 0:
            raise ValueError(f"blur_sigma must be positive, got {self.blur_sigma}.")
        for name in ("hflip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p", "solarize_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}.")

    @property
    def jitter_enabled(self) -> bool:
        return self.jitter_p > 0 and any(
            v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue)
        )


RECIPES: tuple[str, ...] = ("simclr", "byol", "dino", "mae")

#: Images smaller than this get no Gaussian blur by default (the SimCLR CIFAR-10 recipe drops it:
#: a 3x3 blur destroys most of a 32 px image).
BLUR_MIN_SIZE = 64


def make_recipe(
    name: str,
    image_size: int,
    *,
    num_local_crops: int = 6,
    local_size: int | None = None,
    blur: bool | None = None,
) -> list[ViewSpec]:
    """The published view recipes, as one :class:`ViewSpec` per view.

    ``simclr`` -- Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations" (appendix A): two identical views; RandomResizedCrop scale (0.08, 1), flip 0.5,
    colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8 (the paper's strength s = 0.5, used for CIFAR and by
    most reimplementations; s = 1 would be (0.8, 0.8, 0.8, 0.2)), grayscale 0.2, Gaussian blur p 0.5 with
    sigma in (0.1, 2) and a kernel of 10% of the image side, no solarization.

    ``byol`` -- Grill et al. 2020, "Bootstrap Your Own Latent" (table 6): asymmetric pair; crop scale
    (0.08, 1), flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2; view 1 blur p 1.0 and no
    solarization, view 2 blur p 0.1 and solarization p 0.2.

    ``dino`` -- Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers":
    multi-crop; two global crops of ``image_size`` with scale (0.4, 1) (global 1 blur p 1.0, global 2 blur
    p 0.1 and solarization p 0.2), then ``num_local_crops`` local crops of ``local_size`` (default
    ``round(image_size * 96 / 224)``, at least 8) with scale (0.05, 0.4) and blur p 0.5; all with flip 0.5,
    jitter (0.4, 0.4, 0.2, 0.1) p 0.8 and grayscale 0.2.

    ``mae`` -- He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners": one view,
    RandomResizedCrop scale (0.2, 1) and flip 0.5, no colour operations (masking is the corruption;
    MAE resizes bicubically, both paths here bilinearly).

    Blur: by default only images with ``image_size >= 64`` are blurred (the SimCLR CIFAR recipe drops
    blur for 32 px images); the rule applies to every recipe. ``blur=True`` keeps the published blur
    probabilities for any size, ``blur=False`` removes blur. BYOL and DINO stay asymmetric without blur
    through the solarization of their second view.

    Raises:
        ValueError: for an unknown ``name`` (the message lists :data:`RECIPES`) or invalid sizes.
    """
    key = name.lower()
    if key not in RECIPES:
        raise ValueError(f"Unknown augmentation recipe {name!r}; valid names: {', '.join(RECIPES)}.")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    use_blur = image_size >= BLUR_MIN_SIZE if blur is None else bool(blur)

    def b(p: float) -> float:
        return p if use_blur else 0.0

    if key == "mae":
        return [ViewSpec(size=image_size, scale=(0.2, 1.0), jitter_p=0.0, grayscale_p=0.0)]

    if key == "simclr":
        view = ViewSpec(size=image_size, jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4,
                        hue=0.1, grayscale_p=0.2, blur_p=b(0.5))
        return [view, replace(view)]

    base = ViewSpec(size=image_size, jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                    grayscale_p=0.2)
    if key == "byol":
        return [replace(base, blur_p=b(1.0)), replace(base, blur_p=b(0.1), solarize_p=0.2)]

    # dino
    if num_local_crops < 0:
        raise ValueError(f"num_local_crops must be >= 0, got {num_local_crops}.")
    if local_size is None:
        local_size = max(8, round(image_size * 96 / 224))
    if local_size < 1:
        raise ValueError(f"local_size must be positive, got {local_size}.")
    glob = replace(base, scale=(0.4, 1.0))
    views = [replace(glob, blur_p=b(1.0)), replace(glob, blur_p=b(0.1), solarize_p=0.2)]
    local = replace(base, size=local_size, scale=(0.05, 0.4), blur_p=b(0.5))
    views += [replace(local) for _ in range(num_local_crops)]
    return views


def blur_kernel_size(size: int) -> int:
    """Gaussian blur kernel side: about 10% of the image side (SimCLR), odd, at least 3."""
    k = int(round(0.1 * size))
    if k % 2 == 0:
        k += 1
    return max(3, k)


# --------------------------------------------------------------------------------------------------
# CPU path (torchvision.transforms.v2, one image per call)
# --------------------------------------------------------------------------------------------------


def cpu_view_transform(spec: ViewSpec, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """A torchvision v2 pipeline producing one normalised float32 view ``[C, size, size]`` of ``spec``.

    Accepts a PIL image or a uint8 (or [0, 1] float) tensor ``[C, H, W]`` with 1 or 3 channels. The image
    is converted to a tensor first, cropped and flipped in its own dtype, then converted to float32 in
    [0, 1] before the colour operations (so the solarization threshold is in [0, 1]). On single-channel
    images torchvision makes saturation, hue and grayscale no-ops, which is the intended behaviour.
    """
    ops: list[Any] = [
        v2.ToImage(),
        v2.RandomResizedCrop(spec.size, scale=spec.scale, ratio=spec.ratio, antialias=True),
    ]
    if spec.hflip_p > 0:
        ops.append(v2.RandomHorizontalFlip(p=spec.hflip_p))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if spec.jitter_enabled:
        jitter = v2.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)
        ops.append(v2.RandomApply([jitter], p=spec.jitter_p))
    if spec.grayscale_p > 0:
        ops.append(v2.RandomGrayscale(p=spec.grayscale_p))
    if spec.blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(spec.size), sigma=spec.blur_sigma)
        ops.append(v2.RandomApply([blur], p=spec.blur_p))
    if spec.solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=spec.solarize_threshold, p=spec.solarize_p))
    ops += [v2.Normalize(mean=list(mean), std=list(std)), v2.ToPureTensor()]
    return v2.Compose(ops)


class MultiViewTransform:
    """Applies one CPU pipeline per :class:`ViewSpec` to the same image: ``__call__(img) -> list[Tensor]``."""

    def __init__(self, specs: Sequence[ViewSpec], mean: Sequence[float], std: Sequence[float]) -> None:
        if len(specs) == 0:
            raise ValueError("MultiViewTransform needs at least one ViewSpec.")
        self.specs = list(specs)
        self.transforms = [cpu_view_transform(s, mean, std) for s in self.specs]

    @classmethod
    def from_recipe(cls, name: str, image_size: int, mean: Sequence[float], std: Sequence[float],
                    **kwargs: Any) -> MultiViewTransform:
        """Build from :func:`make_recipe` ``(name, image_size, **kwargs)``."""
        return cls(make_recipe(name, image_size, **kwargs), mean, std)

    def __call__(self, img: Any) -> list[Tensor]:
        return [t(img) for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(specs={self.specs!r})"


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], *, crop_fraction: float = 1.0
) -> v2.Compose:
    """The clean evaluation view: resize the short side, centre crop, float32 in [0, 1], normalise.

    The short side is resized to ``round(image_size / crop_fraction)``; the default 1.0 resizes straight to
    ``image_size`` (small-image datasets), ImageNet evaluation conventionally uses 0.875 (256 -> 224).
    PIL images are converted to tensors first and resized by torchvision's antialiased tensor kernel, so
    for uint8 inputs the result equals :func:`base_transform` followed by an all-off
    :class:`DeviceAugmentation` (the CPU and device evaluation views agree).
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}.")
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(int(round(image_size / crop_fraction)), antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ])


def base_transform(image_size: int) -> v2.Compose:
    """What a dataset returns when augmentation runs on the device: a uint8 tensor ``[C, size, size]``.

    Resizes the short side to ``image_size`` (antialiased) and centre-crops, so that images of different
    sizes collate into one uint8 batch (4x less host-to-device traffic than float32).
    """
    return v2.Compose([
        v2.ToImage(),
        v2.ToDtype(torch.uint8, scale=True),
        v2.Resize(image_size, antialias=True),
        v2.CenterCrop(image_size),
        v2.ToPureTensor(),
    ])


# --------------------------------------------------------------------------------------------------
# Device path: batched functional ops with per-sample parameters (x: float [B, C, H, W] in [0, 1])
# --------------------------------------------------------------------------------------------------

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    return v.to(dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = _per_sample(factor, x)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """ITU-R 601 luma ``[B, 1, H, W]`` of an RGB batch ``[B, 3, H, W]`` (a 1-channel batch is returned as is)."""
    if x.shape[-3] == 1:
        return x
    r, g, b = x.unbind(dim=-3)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``clamp(factor * x)`` with one factor per sample (torchvision ``adjust_brightness``)."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale version (torchvision ``adjust_contrast``)."""
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each RGB image with its grayscale version; a no-op for one channel (as torchvision)."""
    if x.shape[-3] == 1:
        return x
    return _blend(x, rgb_to_grayscale(x), factor)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    # Vectorised port of torchvision's (Pillow's) conversion; all channels in [0, 1].
    r, g, b = x.unbind(dim=-3)
    maxc, _ = x.max(dim=-3)
    minc, _ = x.min(dim=-3)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_div
    gc = (maxc - g) / cr_div
    bc = (maxc - b) / cr_div
    max_is_r = maxc == r
    max_is_g = (maxc == g) & ~max_is_r
    max_is_b = ~max_is_r & ~max_is_g
    h = (bc - gc) * max_is_r + (2.0 + rc - bc) * max_is_g + (4.0 + gc - rc) * max_is_b
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    # Closed form of the piecewise HSV -> RGB map (no gather/index tensors, so nothing to copy to the
    # device): channel n in (5, 3, 1) for (r, g, b) is v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    h, s, v = x.unbind(dim=-3)
    out = []
    for offset in (5.0, 3.0, 1.0):
        k = torch.remainder(h * 6.0 + offset, 6.0)
        out.append(v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(out, dim=-3).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue by ``factor`` (fraction of the circle, per sample) via RGB -> HSV -> RGB.

    The same conversion as torchvision/Pillow, vectorised over the batch; a no-op for one channel.
    """
    if x.shape[-3] == 1:
        return x
    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0] + _per_sample(factor, x)[:, 0]).remainder(1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


def _gaussian_kernels(sigma: Tensor, kernel_size: int, dtype: torch.dtype) -> Tensor:
    half = (kernel_size - 1) / 2
    d = torch.arange(kernel_size, device=sigma.device, dtype=dtype) - half
    k = torch.exp(-0.5 * (d[None, :] / sigma.to(dtype)[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)  # [B, K]


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one ``sigma`` per sample, reflect padding (torchvision ``GaussianBlur``).

    The batch is viewed as ``[1, B*C, H, W]`` and convolved depthwise (``groups=B*C``) with per-sample
    kernels, so the whole batch is one pair of convolutions. ``sigma <= 0`` gives the identity kernel.
    """
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}.")
    B, C, H, W = x.shape
    sigma = sigma.to(device=x.device)
    kern = _gaussian_kernels(sigma.clamp_min(1e-6), kernel_size, x.dtype)
    identity = torch.zeros_like(kern)
    identity[:, kernel_size // 2] = 1.0
    kern = torch.where((sigma > 0)[:, None], kern, identity)
    kern = kern.repeat_interleave(C, dim=0)  # [B*C, K]
    pad = kernel_size // 2
    y = x.reshape(1, B * C, H, W)
    mode = "reflect" if pad < min(H, W) else "replicate"
    y = F.pad(y, (pad, pad, pad, pad), mode=mode)
    y = F.conv2d(y, kern.view(B * C, 1, 1, kernel_size), groups=B * C)
    y = F.conv2d(y, kern.view(B * C, 1, kernel_size, 1), groups=B * C)
    return y.view(B, C, H, W)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    device: torch.device | str | None = None,
    attempts: int = 10,
) -> Tensor:
    """Per-sample RandomResizedCrop boxes ``[n, 4]`` as ``(x0, y0, w, h)`` in (continuous) pixels.

    torchvision's sampling, vectorised: ``attempts`` candidates per sample with area fraction uniform in
    ``scale`` and aspect ratio log-uniform in ``ratio``; the first candidate that fits is kept, and samples
    without one fall back to torchvision's centre crop of the whole image with the ratio clamped to
    ``ratio``. Boxes always lie inside ``[0, width] x [0, height]``. Unlike torchvision, sizes and offsets
    are not rounded to whole pixels.
    """
    area = float(height * width)
    lo, hi = float(scale[0]), float(scale[1])
    log_r = (math.log(float(ratio[0])), math.log(float(ratio[1])))
    target = area * (lo + (hi - lo) * torch.rand(n, attempts, device=device))
    r = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * torch.rand(n, attempts, device=device))
    w = torch.sqrt(target * r)
    h = torch.sqrt(target / r)
    valid = (w <= width) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # Fallback (torchvision): whole image, ratio clamped to the allowed range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), width / float(ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = height * float(ratio[1]), float(height)
    else:
        fw, fh = float(width), float(height)
    ok = valid.any(dim=1)
    w = torch.where(ok, w, torch.full_like(w, fw)).clamp_(max=float(width))
    h = torch.where(ok, h, torch.full_like(h, fh)).clamp_(max=float(height))
    x0 = torch.rand(n, device=device) * (width - w)
    y0 = torch.rand(n, device=device) * (height - h)
    return torch.stack((x0, y0, w, h), dim=1)


class DeviceAugmentation(nn.Module):
    """Batched, per-sample random views on the device the batch lives on (DESIGN.md, "Views on the device").

    ``forward(images)`` takes ``[B, C, H, W]`` uint8 or float in [0, 1] with C in {1, 3} and returns one
    normalised float32 view ``[B, C, spec.size, spec.size]`` per :class:`ViewSpec`. Every random parameter
    is drawn per sample with ``torch.rand`` on the input's device; there is no loop over samples and no
    host-device synchronisation. Per view, in torchvision's order:

    1. random resized crop + horizontal flip as one affine ``grid_sample`` (bilinear,
       ``align_corners=False``, border padding; see :func:`sample_crop_boxes`);
    2. colour jitter with probability ``jitter_p`` per sample: brightness, contrast, saturation and hue
       factors per sample, in an order drawn once per view and call (torchvision draws it per image); hue
       is rotated in HSV with torchvision's RGB <-> HSV conversion. One-channel inputs get brightness
       and contrast only;
    3. grayscale with probability ``grayscale_p`` (ITU-R 601 weights, 3 channels only);
    4. Gaussian blur with probability ``blur_p``, sigma per sample, kernel :func:`blur_kernel_size`;
    5. solarization with probability ``solarize_p`` (``x >= threshold -> 1 - x``);
    6. normalisation with ``mean`` / ``std``.

    Every colour result is clamped to [0, 1]. Operations with probability 0 are skipped entirely. The
    module has no parameters and runs without gradients and with autocast disabled (float32).
    """

    def __init__(self, specs: Sequence[ViewSpec], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(specs) == 0:
            raise ValueError("DeviceAugmentation needs at least one ViewSpec.")
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}.")
        self.specs = list(specs)
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]), persistent=False)
        #: ``grid_sample`` padding; "border" matches torchvision's resize at image edges. Crops never leave
        #: the image, so "zeros" only differs by sub-pixel edge effects when a crop is upsampled.
        self.padding_mode = "border"

    @classmethod
    def from_recipe(cls, name: str, image_size: int, mean: Sequence[float], std: Sequence[float],
                    **kwargs: Any) -> DeviceAugmentation:
        """Build from :func:`make_recipe` ``(name, image_size, **kwargs)``."""
        return cls(make_recipe(name, image_size, **kwargs), mean, std)

    def extra_repr(self) -> str:
        return f"num_views={len(self.specs)}, sizes={[s.size for s in self.specs]}"

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        if images.dim() != 4:
            raise ValueError(f"DeviceAugmentation expects [B, C, H, W], got shape {tuple(images.shape)}.")
        C = images.shape[1]
        if C not in (1, 3):
            raise ValueError(f"DeviceAugmentation supports 1 or 3 channels, got {C}.")
        if self.mean.numel() not in (1, C):
            raise ValueError(f"mean/std have {self.mean.numel()} entries for {C}-channel images.")
        with torch.autocast(device_type=images.device.type, enabled=False):
            if images.is_floating_point():
                x = images.float()
            else:
                x = images.float().div_(255.0)
            return [self._view(x, spec) for spec in self.specs]

    # -- one view ---------------------------------------------------------------------------------

    def _view(self, x: Tensor, spec: ViewSpec) -> Tensor:
        v = self._crop_flip(x, spec)
        if spec.jitter_enabled:
            v = self._jitter(v, spec)
        B, C = v.shape[:2]
        dev = v.device
        if spec.grayscale_p > 0 and C == 3:
            apply = torch.rand(B, device=dev) < spec.grayscale_p
            v = torch.where(apply.view(-1, 1, 1, 1), rgb_to_grayscale(v).expand_as(v), v)
        if spec.blur_p > 0:
            lo, hi = spec.blur_sigma
            sigma = lo + (hi - lo) * torch.rand(B, device=dev)
            apply = torch.rand(B, device=dev) < spec.blur_p
            v = gaussian_blur(v, torch.where(apply, sigma, torch.zeros_like(sigma)), blur_kernel_size(spec.size))
        if spec.solarize_p > 0:
            apply = (torch.rand(B, device=dev) < spec.solarize_p).view(-1, 1, 1, 1)
            v = torch.where(apply & (v >= spec.solarize_threshold), 1.0 - v, v)
        mean = self.mean.to(device=dev, dtype=v.dtype).view(1, -1, 1, 1)
        std = self.std.to(device=dev, dtype=v.dtype).view(1, -1, 1, 1)
        return (v - mean) / std

    def _crop_flip(self, x: Tensor, spec: ViewSpec) -> Tensor:
        B, C, H, W = x.shape
        dev = x.device
        x0, y0, w, h = sample_crop_boxes(B, H, W, spec.scale, spec.ratio, device=dev).unbind(dim=1)
        sx = w / W
        sy = h / H
        if spec.hflip_p > 0:
            flip = torch.rand(B, device=dev) < spec.hflip_p
            sx = torch.where(flip, -sx, sx)
        tx = (2.0 * x0 + w) / W - 1.0
        ty = (2.0 * y0 + h) / H - 1.0
        zeros = torch.zeros_like(sx)
        theta = torch.stack((torch.stack((sx, zeros, tx), 1), torch.stack((zeros, sy, ty), 1)), 1)
        grid = F.affine_grid(theta.to(x.dtype), [B, C, spec.size, spec.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)

    def _jitter(self, v: Tensor, spec: ViewSpec) -> Tensor:
        B, C = v.shape[:2]
        dev = v.device

        def uniform(lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * torch.rand(B, device=dev)

        ops = []
        if spec.brightness > 0:
            ops.append((adjust_brightness, uniform(max(0.0, 1 - spec.brightness), 1 + spec.brightness)))
        if spec.contrast > 0:
            ops.append((adjust_contrast, uniform(max(0.0, 1 - spec.contrast), 1 + spec.contrast)))
        if C == 3 and spec.saturation > 0:
            ops.append((adjust_saturation, uniform(max(0.0, 1 - spec.saturation), 1 + spec.saturation)))
        if C == 3 and spec.hue > 0:
            ops.append((adjust_hue, uniform(-spec.hue, spec.hue)))
        if not ops:
            return v
        apply = (torch.rand(B, device=dev) < spec.jitter_p).view(-1, 1, 1, 1)
        out = v
        for i in torch.randperm(len(ops)).tolist():  # CPU permutation: no device sync
            fn, factor = ops[i]
            out = fn(out, factor)
        return torch.where(apply, out, v)


# --------------------------------------------------------------------------------------------------
# Batch Styles Standardization (Fourier amplitude of one image of the batch for every image)
# --------------------------------------------------------------------------------------------------


def _ratio_range(ratio: Any, name: str = "ratio") -> tuple[float, float]:
    """``(r_min, r_max)`` from an area ratio or a ``[min, max]`` pair, both in [0, 1]."""
    if isinstance(ratio, bool):
        pair = None
    elif isinstance(ratio, (int, float)):
        pair = (float(ratio), float(ratio))
    elif isinstance(ratio, Sequence) and not isinstance(ratio, str) and len(ratio) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in ratio
    ):
        pair = (float(ratio[0]), float(ratio[1]))
    else:
        pair = None
    if pair is None or not 0.0 <= pair[0] <= pair[1] <= 1.0:
        raise ValueError(
            f"{name} must be an area ratio in [0, 1] or a [min, max] pair with 0 <= min <= max <= 1 (the fraction "
            f"of the Fourier amplitude, around the zero frequency, taken from the style image), got {ratio!r}."
        )
    return pair


def low_frequency_mask(height: int, width: int, ratio: float, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``[height, width]`` mask of the low frequencies of an (unshifted) ``torch.fft.fft2`` spectrum.

    The centred rectangle of the shifted spectrum whose area is a fraction ``ratio`` of the whole, as in
    FACT (Xu et al. 2021, "A Fourier-based Framework for Domain Generalization": ``h_crop = int(h *
    sqrt(ratio))``) and Batch Styles Standardization: ``n = floor(sqrt(ratio) * side)`` frequencies per
    axis, lowered to an odd number so that the rectangle is symmetric about the zero frequency
    (``|k| <= (n - 1) / 2``); then a real image's amplitude keeps its symmetry and the inverse transform
    is real. ``ratio < 1 / side**2`` selects nothing (``0`` is the identity), up to ``9 / side**2`` the zero
    frequency (the mean) alone.
    FDA's (Yang & Soatto 2020) square of half-size ``beta * min(H, W)`` is ``ratio ~ (2 beta)^2`` on
    square images.
    """
    def axis(n: int) -> Tensor:
        count = _low_frequency_count(n, ratio)
        freq = torch.fft.fftfreq(n, d=1.0 / n, device=device).abs()
        if count < 1:
            return torch.zeros(n, dtype=torch.bool, device=device)
        return freq <= (count - 1) // 2

    return axis(height)[:, None] & axis(width)[None, :]


def _low_frequency_count(n: int, ratio: float) -> int:
    """Frequencies kept along an axis of ``n`` samples (before lowering to an odd count): ``floor(sqrt(r) n)``."""
    return int(math.floor(math.sqrt(ratio) * n + 1e-9))


def total_before(rank: int, sizes: Sequence[int]) -> int:
    """Rows held by ranks ``0 .. rank - 1`` (the offset of ``rank``'s rows in the gathered batch)."""
    return int(sum(sizes[:rank]))


class BatchStylesStandardization(nn.Module):
    """Batch Styles Standardization (BSS): every image of a view-batch gets the style of one image of it.

    Scalbert, Vakalopoulou, Couzinie-Devy, "Towards domain-invariant Self-Supervised Learning with Batch
    Styles Standardization", ICLR 2024 (arXiv 2303.06088; earlier arXiv title "Improving Generalization
    and Reducing Data Dependence in Self-Supervised Learning: Batch Styles Standardization"). For a batch
    ``[B, C, H, W]``, per call:

    1. draw an area ratio ``r`` uniformly in ``ratio = (r_min, r_max)`` (a float gives a fixed ``r``) and
       one image index ``j`` uniformly in the batch;
    2. ``F_i = fft2(x_i)`` per image and channel, amplitude ``|F_i|``, phase ``angle(F_i)``;
    3. on the low frequencies ``M_r`` (:func:`low_frequency_mask`: the centred rectangle of area ratio
       ``r``) replace every image's amplitude by image ``j``'s, keep each image's phase;
    4. ``x_hat_i = real(ifft2(...))``.

    Image ``j`` is returned unchanged (up to float error), and outside ``M_r`` every spectrum is untouched.
    The paper standardises style per view: call the module once per view (the datamodule does), so each
    view draws its own ``r`` and ``j``, positives differ in style and the negatives inside a view share
    one. With ``mean`` / ``std`` the input is a normalised view: it is mapped back to pixel space first
    and normalised again after (the zero frequency of a normalised image can be negative, and swapping
    its amplitude but not its sign would invert the brightness). Outputs are not clamped to [0, 1].

    Random draws use the default CPU generator (``torch.rand`` / ``torch.randint``; seeded by
    ``seed_everything``), so a single process has no host-device synchronisation. Under DDP the style is
    one of the **global** batch, as the gathered losses see it: rank 0's draw of ``r`` and of an index
    into the global batch, and every rank's batch size, are summed over ranks in one small all-reduce (one
    host sync), and the owner's low-frequency amplitude of that image reaches every rank in a second
    all-reduce, so every image on every rank gets the same style (rows are counted in rank order, as
    ``all_gather`` concatenates them). Runs in float32 without gradients and with autocast disabled, on
    whatever device the batch is on. The last draw is kept in :attr:`last_ratio` and :attr:`last_index`
    (the index in the global batch).

    Args:
        ratio: area ratio ``r`` in [0, 1], or a ``(r_min, r_max)`` range sampled uniformly per call.
            ``0`` is the identity.
        mean, std: per-channel normalisation of the input views (``None``: the input is in pixel space).
    """

    def __init__(
        self,
        ratio: float | Sequence[float],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.ratio = _ratio_range(ratio)
        if (mean is None) != (std is None):
            raise ValueError("Give both mean and std (the input's normalisation), or neither (pixel-space input).")
        if mean is not None and std is not None:
            if len(mean) != len(std):
                raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}.")
            if any(float(v) <= 0 for v in std):
                raise ValueError(f"std must be positive, got {list(std)}.")
        self.normalized = mean is not None
        self.register_buffer("mean", torch.tensor([float(m) for m in (mean or [0.0])]), persistent=False)
        self.register_buffer("std", torch.tensor([float(v) for v in (std or [1.0])]), persistent=False)
        self.last_ratio: float | None = None
        self._sizes: list[int] = []
        self.last_index: int | None = None

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, normalized={self.normalized}"

    def _draw(self, batch: int, device: torch.device) -> tuple[float, int, int | None, int]:
        """``(r, j, owner rank or None, global batch size)``; ``j`` indexes the global batch."""
        lo, hi = self.ratio
        u_r, u_j = float(torch.rand(())), float(torch.rand(()))
        if not dist.is_distributed():
            self._sizes = [batch]
            return lo + (hi - lo) * u_r, min(int(u_j * batch), batch - 1), None, batch
        world, me = dist.world_size(), dist.rank()
        local = torch.zeros(world + 2, dtype=torch.float64, device=device)
        local[me] = batch
        if me == 0:
            local[world], local[world + 1] = u_r, u_j
        summed = dist.all_reduce_sum(local).cpu()
        self._sizes = [int(v) for v in summed[:world]]
        total = sum(self._sizes)
        j = min(int(float(summed[world + 1]) * total), total - 1)
        owner = next(rank for rank in range(world) if j < total_before(rank + 1, self._sizes))
        return lo + (hi - lo) * float(summed[world]), j, owner, total

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                f"BatchStylesStandardization expects a float batch [B, C, H, W], got {images.dtype} "
                f"{tuple(images.shape)}."
            )
        B, C, H, W = images.shape
        if self.normalized and self.mean.numel() not in (1, C):
            raise ValueError(f"mean/std have {self.mean.numel()} entries for {C}-channel images.")
        lo, hi = self.ratio
        r, j, owner, total = self._draw(B, images.device)
        self.last_ratio, self.last_index = r, j
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.float()
            if total < 2 or min(_low_frequency_count(H, r), _low_frequency_count(W, r)) < 1:  # decided on the host
                return x.clone() if x is images else x
            mask = low_frequency_mask(H, W, r, device=x.device)
            if self.normalized:
                mean = self.mean.to(x.device).view(1, -1, 1, 1)
                std = self.std.to(x.device).view(1, -1, 1, 1)
                x = x * std + mean
            spec = torch.fft.fft2(x)
            if owner is None:  # one process
                style = spec[j : j + 1].abs()
            else:  # the owner's amplitude, summed with zeros from the other ranks
                style = torch.zeros_like(spec[:1].real)
                if dist.rank() == owner:
                    local_j = j - total_before(owner, self._sizes)
                    style = spec[local_j : local_j + 1].abs()
                style = dist.all_reduce_sum(style.contiguous())
            styled = torch.polar(style.expand_as(spec), spec.angle())
            out = torch.fft.ifft2(torch.where(mask, styled, spec)).real
            if self.normalized:
                out = (out - mean) / std
            return out.contiguous()

