"""Point-cloud views made on the device, batched with per-sample random parameters.

:func:`apply_point_view` turns a batch ``[B, N, 3 + C]`` into one augmented view, in this order:

1. ``crop`` (< 1): keep the fraction ``f ~ U(crop, 1)`` of the points nearest to a random point of
   the cloud, then refill to ``N`` points by sampling kept points with replacement (every kept point
   appears at least once);
2. ``point_dropout`` (> 0): PointNet++'s random input dropout (Qi et al. 2017): a ratio
   ``r ~ U(0, point_dropout)`` per cloud, each point dropped with probability ``r`` and replaced by
   the cloud's first point (shapes stay dense);
3. ``scale``: an independent factor per axis, uniform in ``scale`` (anisotropic);
4. ``rotate``: ``"up"`` (uniform angle about the up axis) or ``"so3"`` (uniform random rotation, from
   a normalised Gaussian quaternion);
5. ``translate``: a uniform shift in ``[-translate, translate]`` per axis;
6. ``jitter_sigma``: Gaussian noise per point and axis, clipped to ``[-jitter_clip, jitter_clip]``.

Normals (channels 3:6 when ``normals=True``) follow the geometry: scaled by the inverse transpose
(``n / s``), rotated, then renormalised to unit length; translation and jitter leave them unchanged.
Other feature channels (colours) are carried along unchanged (and dropped / refilled with their point).

Point-MAE's pretraining augmentation (Pang et al. 2022, ``PointcloudScaleAndTranslate``) is
``PointView(scale=(2/3, 3/2), translate=0.2)``; two of them are :data:`DEFAULT_POINT_VIEWS`.
Nothing here loops over samples in Python or synchronises with the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ROTATIONS = ("none", "up", "so3")
_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass
class PointView:
    """One augmented view of a point cloud (see the module docstring for the order of operations).

    Args:
        rotate: ``"none"``, ``"up"`` (random angle about the up axis) or ``"so3"`` (uniform rotation).
        scale: ``(low, high)``; each axis is multiplied by its own factor ``~ U(low, high)``.
        jitter_sigma: standard deviation of the per-point Gaussian noise (0 = none).
        jitter_clip: the noise is clipped to ``[-jitter_clip, jitter_clip]``.
        translate: a shift ``~ U(-translate, translate)`` per axis.
        point_dropout: maximum dropout ratio in [0, 1) (the ratio is ``U(0, max)`` per cloud).
        crop: minimum fraction of points kept by the local crop, in (0, 1]; 1 = no crop.
    """

    rotate: str = "none"
    scale: tuple[float, float] = (1.0, 1.0)
    jitter_sigma: float = 0.0
    jitter_clip: float = 0.05
    translate: float = 0.0
    point_dropout: float = 0.0
    crop: float = 1.0

    def __post_init__(self) -> None:
        if self.rotate not in ROTATIONS:
            raise ValueError(f"PointView.rotate must be one of {ROTATIONS}, got {self.rotate!r}.")
        try:
            lo, hi = (float(v) for v in self.scale)
        except (TypeError, ValueError):
            raise ValueError(f"PointView.scale must be a pair (low, high), e.g. [0.67, 1.5]; got {self.scale!r}.") from None
        if not 0 < lo <= hi:
            raise ValueError(f"PointView.scale must satisfy 0 < low <= high, got {self.scale!r}; e.g. scale: [0.67, 1.5].")
        self.scale = (lo, hi)
        if self.jitter_sigma < 0 or self.jitter_clip < 0:
            raise ValueError(f"PointView.jitter_sigma ({self.jitter_sigma}) and jitter_clip ({self.jitter_clip}) must be "
                             ">= 0; e.g. jitter_sigma: 0.01, jitter_clip: 0.05.")
        if self.translate < 0:
            raise ValueError(f"PointView.translate must be >= 0 (the shift is uniform in [-t, t]), got {self.translate}.")
        if not 0 <= self.point_dropout < 1:
            raise ValueError(f"PointView.point_dropout must be in [0, 1) (the maximum dropout ratio), got {self.point_dropout}; "
                             "PointNet++ uses 0.875.")
        if not 0 < self.crop <= 1:
            raise ValueError(f"PointView.crop must be in (0, 1] (the minimum fraction of points kept; 1 = no crop), "
                             f"got {self.crop}.")

    @property
    def is_identity(self) -> bool:
        """True when the view returns its input unchanged."""
        return (self.rotate == "none" and self.scale == (1.0, 1.0) and (self.jitter_sigma == 0 or self.jitter_clip == 0)
                and self.translate == 0 and self.point_dropout == 0 and self.crop == 1)


#: Point-MAE's pretraining views: random anisotropic scale in [2/3, 3/2] and translation in [-0.2, 0.2]
DEFAULT_POINT_VIEWS: tuple[PointView, PointView] = (
    PointView(scale=(2 / 3, 3 / 2), translate=0.2), PointView(scale=(2 / 3, 3 / 2), translate=0.2))


def _rand(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def up_rotation(angle: Tensor, up_axis: str = "y") -> Tensor:
    """Rotation matrices ``[B, 3, 3]`` by ``angle`` ``[B]`` (radians) about ``up_axis``."""
    if up_axis not in _AXES:
        raise ValueError(f"up_axis must be 'x', 'y' or 'z', got {up_axis!r}.")
    a = _AXES[up_axis]
    i, j = [k for k in range(3) if k != a][::-1] if a == 1 else [k for k in range(3) if k != a]
    # right-handed rotation about axis a: (i, j) = (y, z) for x, (z, x) for y, (x, y) for z
    c, s = torch.cos(angle), torch.sin(angle)
    R = torch.zeros(angle.shape[0], 3, 3, device=angle.device, dtype=angle.dtype)
    R[:, a, a] = 1
    R[:, i, i], R[:, j, j] = c, c
    R[:, i, j], R[:, j, i] = -s, s
    return R


def random_rotation(batch: int, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniformly distributed rotations ``[B, 3, 3]`` (normalised Gaussian quaternions), det = +1."""
    q = torch.randn(batch, 4, generator=generator, device=like.device, dtype=like.dtype)
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], 1).reshape(batch, 3, 3)


def apply_point_view(x: Tensor, view: PointView, up_axis: str = "y", normals: bool = False,
                     generator: torch.Generator | None = None) -> Tensor:
    """One augmented view of a batch ``x`` ``[B, N, 3 + C]`` on its device (same shape; ``x`` untouched).

    ``normals=True``: channels 3:6 are normals and are transformed with the geometry (scaled by the
    inverse transpose, rotated, renormalised). ``generator`` (on ``x``'s device) makes it reproducible.
    """
    if x.dim() != 3 or x.shape[-1] < 3:
        raise ValueError(f"apply_point_view expects [B, N, 3 + C] points, got shape {tuple(x.shape)}.")
    if normals and x.shape[-1] < 6:
        raise ValueError(f"normals=True needs channels 3:6 to hold normals, but x has {x.shape[-1]} channels.")
    if up_axis not in _AXES:
        raise ValueError(f"up_axis must be 'x', 'y' or 'z', got {up_axis!r}.")
    if view.is_identity:
        return x
    B, N, _ = x.shape
    dev = x.device
    if view.crop < 1:
        f = view.crop + (1 - view.crop) * _rand((B,), x, generator)
        k = (f * N).ceil().clamp(1, N).long()  # [B] points kept
        centre = (_rand((B,), x, generator) * N).long().clamp_max(N - 1)
        c = x[torch.arange(B, device=dev), centre, :3].unsqueeze(1)
        order = (x[..., :3] - c).square().sum(-1).argsort(dim=1)  # nearest first
        pos = torch.arange(N, device=dev).expand(B, N)
        refill = (_rand((B, N), x, generator) * k[:, None]).long().clamp_max(N - 1)
        src = torch.where(pos < k[:, None], pos, torch.minimum(refill, k[:, None] - 1))
        idx = order.gather(1, src)
        x = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
    if view.point_dropout > 0:
        ratio = view.point_dropout * _rand((B, 1), x, generator)
        drop = _rand((B, N), x, generator) <= ratio
        x = torch.where(drop[..., None], x[:, :1].expand_as(x), x)
    xyz = x[..., :3]
    nrm = x[..., 3:6] if normals else None
    lo, hi = view.scale
    if (lo, hi) != (1.0, 1.0):
        s = lo + (hi - lo) * _rand((B, 1, 3), x, generator)
        xyz = xyz * s
        if nrm is not None:
            nrm = nrm / s
            nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if view.rotate != "none":
        if view.rotate == "up":
            R = up_rotation(2 * math.pi * _rand((B,), x, generator), up_axis)
        else:
            R = random_rotation(B, x, generator)
        xyz = xyz @ R.transpose(1, 2)
        if nrm is not None:
            nrm = nrm @ R.transpose(1, 2)
    if view.translate > 0:
        xyz = xyz + view.translate * (2 * _rand((B, 1, 3), x, generator) - 1)
    if view.jitter_sigma > 0 and view.jitter_clip > 0:
        noise = torch.randn(xyz.shape, generator=generator, device=dev, dtype=x.dtype)
        xyz = xyz + (view.jitter_sigma * noise).clamp(-view.jitter_clip, view.jitter_clip)
    parts = [xyz] + ([nrm, x[..., 6:]] if nrm is not None else [x[..., 3:]])
    return torch.cat(parts, dim=-1)


__all__ = ["DEFAULT_POINT_VIEWS", "PointView", "ROTATIONS", "apply_point_view", "random_rotation", "up_rotation"]
