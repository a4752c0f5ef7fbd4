"""Point-cloud SSL data: ModelNet, ShapeNet parts, folders of point/mesh files and synthetic shapes.

Datasets (``PointCloudDataModule(dataset=...)``, :data:`POINT_DATASETS`):

- ``"synthetic"`` (default, no files): :func:`make_synthetic_shapes`, six procedural primitives
  (:data:`SYNTHETIC_SHAPES`) with per-point part labels (two per class) and analytic normals.
- ``"modelnet10"`` / ``"modelnet40"``: ``root`` is what ``torch_geometric.datasets.ModelNet`` uses,
  ``root/raw/<class>/{train,test}/<class>_XXXX.off``, i.e. the unzipped archive
  http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip or
  http://modelnet.cs.princeton.edu/ModelNet40.zip with its ``ModelNet10``/``ModelNet40`` folder renamed
  ``raw`` (``root/ModelNet40/raw`` is also accepted). A root that directly holds the class folders
  (``root/<class>/{train,test}/*.off``, the unzipped layout) is read like ``"folder"``. Official
  train/test split; validation is ``val_fraction`` of train.
- ``"shapenet"``: ``torch_geometric.datasets.ShapeNet``'s layout, ``root/raw/<synset id>/*.txt`` (7
  columns: xyz, normal, part label) plus ``root/raw/train_test_split/shuffled_{train,val,test}_file_list.json``,
  i.e. https://shapenet.cs.stanford.edu/media/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip
  unzipped and renamed ``raw``. Official train/val/test split; 50 global part labels; the class is
  the category (among ``shapenet_categories``, default all 16).
- ``"folder"``: ``root/<class>/<file>`` or ``root/<class>/{train,test}/<file>`` (class = sub-folder
  name, sorted); files read by :func:`lightning_ssl.data.point_io.read_point_file` (``.off``, ``.ply``,
  ``.npy``, ``.xyz``, ``.txt``, ``.pts``). With ``train/``/``test/`` sub-folders that split is used.

Nothing downloads at run time. ``root`` may be read-only: PyG's processed files go to a cache
(``cache_dir``, else ``$LIGHTNING_SSL_CACHE``, else ``~/.cache/lightning_ssl``) whose ``raw`` links to
``root`` (:func:`lightning_ssl.data.graph._mirror`); nothing is ever written under ``root``.

Samples: every sample has exactly ``num_points`` points. Meshes (files with faces) are sampled on the
surface, uniformly by area, with PyG's ``SamplePoints`` under ``torch.random.fork_rng`` seeded by
``sample_seed + sample index`` (deterministic). Point clouds with more points are subsampled
(``subsample="random"``, seeded, or ``"fps"``: farthest point sampling from the cloud's first point);
with fewer points, ``too_few_points="resample"`` keeps all points and draws the missing ones with
replacement (seeded; one warning naming the files) and ``"error"`` raises. Every sample is then
centred on its centroid and scaled so its farthest point has norm 1 (unit sphere). Samples are
prepared once in ``setup`` as dense CPU tensors ``points [M, N, 3 + C]``, ``labels [M]`` and (with
part labels) ``parts [M, N]``. Feature channels follow xyz in a fixed order: normals (3), colours (3).

Splits without an official test (or validation) split are stratified and seeded (``split_seed``):
per class of ``n`` samples, ``round(n * test_fraction)`` go to test and ``round(n * val_fraction)``
to validation (halves rounded up), always leaving at least one sample of every class in train; if a
split would then be empty although its fraction is > 0, one sample of the class with the most training
samples (at least 2) is moved there. E.g. the 9-mesh sample (1 airplane, 5 bathtubs, 3 beds) with
0.1/0.2 gives train 6 (the single airplane is always in train), validation 1 and test 2.

Up axes (for ``PointView(rotate="up")``; ``up_axis`` overrides): ``"z"`` for ModelNet (its OFF meshes
are z-up) and for folders whose files are all ``.off``; ``"y"`` for ShapeNet, synthetic shapes and
other folders.

Batches: ``SSLBatch(views=[points [B, N, 3 + C]], target=labels [B], index=[B])``. Training batches get
their views in ``on_after_batch_transfer`` on the device (:func:`apply_point_view`, one per entry of
``views``; default Point-MAE's scale-and-translate twice); evaluation batches keep one clean view.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.data.graph import _mirror, default_cache_dir
from lightning_ssl.data.image import collate_views
from lightning_ssl.data.point_io import POINT_EXTENSIONS, read_point_file
from lightning_ssl.data.point_views import DEFAULT_POINT_VIEWS, PointView, apply_point_view

#: dataset names PointCloudDataModule knows
POINT_DATASETS: tuple[str, ...] = ("synthetic", "modelnet10", "modelnet40", "shapenet", "folder")
#: the classes of :func:`make_synthetic_shapes`, in label order
SYNTHETIC_SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid")
FEATURES: tuple[str, ...] = ("normals", "colors")
MODELNET_URLS = {"10": "http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip",
                 "40": "http://modelnet.cs.princeton.edu/ModelNet40.zip"}
SHAPENET_URL = "https://shapenet.cs.stanford.edu/media/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip"


# ============================================================================ synthetic shapes
def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _choice(p: Sequence[float], shape: tuple[int, int], g: torch.Generator) -> Tensor:
    """Region index per point, drawn with probabilities ``p`` (areas)."""
    cdf = torch.tensor(p, dtype=torch.float64).cumsum(0)
    cdf = (cdf / cdf[-1]).float()
    return torch.searchsorted(cdf, torch.rand(shape, generator=g)).clamp_max(len(p) - 1)


def _cyl(theta: Tensor, r: Tensor, y: Tensor) -> Tensor:
    return torch.stack([r * torch.cos(theta), y, r * torch.sin(theta)], -1)


def _sphere(S: int, N: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    p = _unit(torch.randn(S, N, 3, generator=g))
    return p, p.clone(), (p[..., 1] < 0).long()  # parts: upper / lower hemisphere


def _cube(S: int, N: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    face = _choice([1.0] * 6, (S, N), g)  # 0..5: +x -x +y -y +z -z
    axis, sign = face // 2, 1.0 - 2.0 * (face % 2).float()
    p = torch.rand(S, N, 3, generator=g) * 2 - 1
    p = p.scatter(-1, axis[..., None], sign[..., None])
    n = torch.zeros(S, N, 3).scatter(-1, axis[..., None], sign[..., None])
    return p, n, (axis != 1).long()  # parts: top + bottom / sides


def _cylinder(S: int, N: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    cap = _choice([4 * math.pi, 2 * math.pi], (S, N), g).bool()  # side area 2*pi*r*h, caps 2*pi*r^2
    theta = torch.rand(S, N, generator=g) * 2 * math.pi
    u, v = torch.rand(S, N, generator=g), torch.rand(S, N, generator=g)
    sign = torch.where(v < 0.5, 1.0, -1.0)
    r = torch.where(cap, u.sqrt(), torch.ones_like(u))
    y = torch.where(cap, sign, 2 * u - 1)
    p = _cyl(theta, r, y)
    n_side = _cyl(theta, torch.ones_like(u), torch.zeros_like(u))
    n_cap = torch.zeros_like(p)
    n_cap[..., 1] = sign
    return p, torch.where(cap[..., None], n_cap, n_side), cap.long()  # parts: side / caps


def _cone(S: int, N: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    base = _choice([math.pi * math.sqrt(5), math.pi], (S, N), g).bool()  # apex (0,1,0), base radius 1 at y=-1
    theta = torch.rand(S, N, generator=g) * 2 * math.pi
    t = torch.rand(S, N, generator=g).sqrt()  # lateral: fraction of the slant from the apex; base: radius
    y = torch.where(base, -torch.ones_like(t), 1 - 2 * t)
    p = _cyl(theta, t, y)
    n_side = _cyl(theta, torch.full_like(t, 2 / math.sqrt(5)), torch.full_like(t, 1 / math.sqrt(5)))
    n_base = torch.zeros_like(p)
    n_base[..., 1] = -1
    return p, torch.where(base[..., None], n_base, n_side), base.long()  # parts: side / base


def _torus(S: int, N: int, g: torch.Generator, R: float = 1.0, r: float = 0.4) -> tuple[Tensor, Tensor, Tensor]:
    bins = 1024  # phi has density (R + r cos phi) / (2 pi R): inverse CDF on a fine grid
    edges = torch.linspace(0, 2 * math.pi, bins + 1)
    mid = (edges[:-1] + edges[1:]) / 2
    k = _choice((R + r * torch.cos(mid)).tolist(), (S, N), g)
    phi = edges[k] + torch.rand(S, N, generator=g) * (2 * math.pi / bins)
    theta = torch.rand(S, N, generator=g) * 2 * math.pi
    p = _cyl(theta, R + r * torch.cos(phi), r * torch.sin(phi))
    n = _cyl(theta, torch.cos(phi), torch.sin(phi))
    return p, n, (torch.cos(phi) >= 0).long()  # parts: inner / outer half of the tube


def _pyramid(S: int, N: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    # square base [-1, 1]^2 at y = -1, apex (0, 1, 0); each side triangle has area sqrt(5)
    face = _choice([4.0] + [math.sqrt(5)] * 4, (S, N), g)
    u, v = torch.rand(S, N, generator=g), torch.rand(S, N, generator=g)
    base = torch.stack([2 * u - 1, -torch.ones_like(u), 2 * v - 1], -1)
    flip = u + v > 1  # uniform in a triangle: reflect the upper half of the unit square
    a, b = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    # side k: corners c0, c1 on the base and the apex; outward normal of the side facing direction d
    dirs = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [-1.0, 0, 0], [0, 0, -1.0]])
    perp = torch.tensor([[0, 0, 1.0], [-1.0, 0, 0], [0, 0, -1.0], [1.0, 0, 0]])
    side = (face - 1).clamp_min(0)
    d, q = dirs[side], perp[side]
    c0 = d - q + torch.tensor([0, -1.0, 0])
    c1 = d + q + torch.tensor([0, -1.0, 0])
    apex = torch.tensor([0, 1.0, 0])
    tri = c0 + a[..., None] * (c1 - c0) + b[..., None] * (apex - c0)
    is_base = face == 0
    p = torch.where(is_base[..., None], base, tri)
    n_side = _unit(2 * d + torch.tensor([0, 1.0, 0]))
    n_base = torch.zeros_like(p)
    n_base[..., 1] = -1
    return p, torch.where(is_base[..., None], n_base, n_side), (~is_base).long()  # parts: base / sides


_SHAPE_FNS = {"sphere": _sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
              "pyramid": _pyramid}


def make_synthetic_shapes(samples_per_class: int = 64, num_points: int = 1024, noise: float = 0.01, seed: int = 0,
                          classes: Sequence[str] | None = None) -> dict[str, Tensor]:
    """A procedural dataset of primitive shapes: ``dict(points [M, N, 3], normals [M, N, 3], labels [M],
    parts [M, N])`` with ``M = samples_per_class * len(classes)``.

    Classes (:data:`SYNTHETIC_SHAPES`, label = position in ``classes``): a unit sphere, the cube
    [-1, 1]^3, a cylinder (radius 1, height 2), a cone (base radius 1, height 2), a torus (radii 1 and
    0.4) and a square pyramid (base 2 x 2, height 2), all y-up. Points are uniform on the surface (by
    area); every shape gets an anisotropic scale ``U(0.6, 1.4)`` per axis, a random rotation about y and
    Gaussian noise of std ``noise``. Normals are analytic (after the scale: inverse transpose,
    renormalised; before the noise). Parts: two per class with global ids ``2 * class + {0, 1}``:
    sphere upper/lower, cube top+bottom/sides, cylinder side/caps, cone side/base, torus inner/outer,
    pyramid base/sides. Shapes are not normalised (the datamodule does that). Seeded and vectorised.
    """
    names = list(SYNTHETIC_SHAPES if classes is None else classes)
    unknown = [c for c in names if c not in _SHAPE_FNS]
    if unknown or not names:
        raise ValueError(f"Unknown synthetic shape(s) {unknown}; valid: {', '.join(SYNTHETIC_SHAPES)}.")
    if samples_per_class < 1 or num_points < 1 or noise < 0:
        raise ValueError(f"samples_per_class ({samples_per_class}) and num_points ({num_points}) must be >= 1 and "
                         f"noise ({noise}) >= 0.")
    g = torch.Generator().manual_seed(int(seed))
    S, N = int(samples_per_class), int(num_points)
    pts, nrm, labels, parts = [], [], [], []
    for c, name in enumerate(names):
        p, n, part = _SHAPE_FNS[name](S, N, g)
        s = 0.6 + 0.8 * torch.rand(S, 1, 3, generator=g)
        angle = torch.rand(S, generator=g) * 2 * math.pi
        cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        def rot(v: Tensor) -> Tensor:  # about y: x' = c x + s z, z' = -s x + c z
            return torch.stack([cos * v[..., 0] + sin * v[..., 2], v[..., 1], -sin * v[..., 0] + cos * v[..., 2]], -1)
        p = rot(p * s) + noise * torch.randn(S, N, 3, generator=g)
        n = rot(_unit(n / s))
        pts.append(p)
        nrm.append(n)
        labels.append(torch.full((S,), c, dtype=torch.long))
        parts.append(part + 2 * c)
    return {"points": torch.cat(pts), "normals": torch.cat(nrm), "labels": torch.cat(labels), "parts": torch.cat(parts)}


# ============================================================================ helpers
def normalize_unit_sphere(points: Tensor) -> Tensor:
    """Centre ``[..., N, 3]`` clouds on their centroid and scale the farthest point to norm 1."""
    centred = points - points.mean(dim=-2, keepdim=True)
    radius = centred.norm(dim=-1).amax(dim=-1, keepdim=True)[..., None].clamp_min(1e-12)
    return centred / radius


def stratified_split(labels: Tensor, fractions: Sequence[float], seed: int = 0) -> list[Tensor]:
    """Split sample indices by class into ``[train] + one part per fraction`` (seeded), with the rule of
    the module docstring: every class keeps >= 1 training sample; an empty split with a fraction > 0
    takes one sample from the class with the most training samples (>= 2)."""
    g = torch.Generator().manual_seed(int(seed))
    per_class: list[list[list[int]]] = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)].tolist()
        n = len(idx)
        counts = [int(math.floor(n * f + 0.5)) for f in fractions]
        while sum(counts) > n - 1 and sum(counts) > 0:  # keep one in train: shrink the largest held-out part
            counts[max(range(len(counts)), key=lambda i: counts[i])] -= 1
        parts, start = [], 0
        for k in counts:
            parts.append(idx[start:start + k])
            start += k
        per_class.append([idx[start:]] + parts)
    for j, f in enumerate(fractions, start=1):
        if f > 0 and not any(pc[j] for pc in per_class):
            donor = max(per_class, key=lambda pc: len(pc[0]))
            if len(donor[0]) >= 2:
                donor[j].append(donor[0].pop())
    return [torch.tensor(sorted(i for pc in per_class for i in pc[j]), dtype=torch.long)
            for j in range(len(fractions) + 1)]


def _suggest(value: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(value.lower(), list(valid), n=1, cutoff=0.4)
    return f" Did you mean {close[0]!r}?" if close else ""


class _Indexed(Dataset):
    """``(points[i], labels[i], i)`` items of the dense sample tensors (for :func:`collate_views`)."""

    def __init__(self, points: Tensor, labels: Tensor, indices: Tensor) -> None:
        self.points, self.labels, self.indices = points, labels, indices

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        j = int(self.indices[i])
        return self.points[j], self.labels[j], j


class _Parts(Dataset):
    def __init__(self, points: Tensor, parts: Tensor, labels: Tensor, indices: Tensor) -> None:
        self.points, self.parts, self.labels, self.indices = points, parts, labels, indices

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        j = int(self.indices[i])
        return {"points": self.points[j], "parts": self.parts[j], "labels": self.labels[j]}


# ============================================================================ datamodule
class PointCloudDataModule(L.LightningDataModule):
    """Point-cloud SSL datamodule (datasets, layouts, sampling, splits and up axes: module docstring).

    Args:
        dataset: one of :data:`POINT_DATASETS`.
        root: the data folder (not needed for ``synthetic``); may be read-only.
        num_points: points per sample.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        views: training views, one :class:`PointView` per view (default: Point-MAE's scale and
            translate, twice).
        features: extra input channels after xyz: a subset of ``"normals"``, ``"colors"``.
        val_fraction, test_fraction: held-out fractions where the dataset has no official split
            (``test_fraction`` only where there is no official test split).
        split_seed: seed of the stratified splits.
        sample_seed: seed of surface sampling / subsampling (sample ``i`` uses ``sample_seed + i``).
        too_few_points: ``"resample"`` (with replacement, one warning) or ``"error"``.
        subsample: ``"random"`` or ``"fps"`` for clouds with more than ``num_points`` points.
        up_axis: ``"x"``, ``"y"`` or ``"z"``; default per dataset (module docstring).
        cache_dir: where PyG's processed files go (default ``$LIGHTNING_SSL_CACHE`` or ``~/.cache/lightning_ssl``).
        synthetic_samples_per_class, synthetic_noise: the synthetic dataset's size and noise.
        shapenet_categories: ShapeNet categories (default all 16), e.g. ``["Airplane", "Chair"]``.
        pin_memory: DataLoader ``pin_memory``.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str | None = None,
        num_points: int = 1024,
        batch_size: int = 32,
        num_workers: int = 0,
        views: list[PointView] | None = None,
        features: list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        sample_seed: int = 0,
        too_few_points: str = "resample",
        subsample: str = "random",
        up_axis: str | None = None,
        cache_dir: str | None = None,
        synthetic_samples_per_class: int = 64,
        synthetic_noise: float = 0.01,
        shapenet_categories: list[str] | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        name = str(dataset).lower()
        if name not in POINT_DATASETS:
            raise ValueError(f"Unknown point dataset {dataset!r}.{_suggest(name, POINT_DATASETS)} "
                             f"Valid names: {', '.join(POINT_DATASETS)}.")
        features = list(features or [])
        bad = [f for f in features if f not in FEATURES]
        if bad:
            raise ValueError(f"Unknown feature(s) {bad}.{_suggest(bad[0], FEATURES)} Valid features: {', '.join(FEATURES)}.")
        if len(set(features)) != len(features):
            raise ValueError(f"features lists a feature twice: {features}.")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) and sum "
                             "to less than 1 (the rest is the training split); e.g. val_fraction: 0.1, test_fraction: 0.2.")
        if num_points < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(f"num_points ({num_points}) and batch_size ({batch_size}) must be >= 1 and num_workers "
                             f"({num_workers}) >= 0.")
        if too_few_points not in ("resample", "error"):
            raise ValueError(f"too_few_points must be 'resample' or 'error', got {too_few_points!r}.")
        if subsample not in ("random", "fps"):
            raise ValueError(f"subsample must be 'random' or 'fps', got {subsample!r}.")
        if up_axis is not None and up_axis not in ("x", "y", "z"):
            raise ValueError(f"up_axis must be 'x', 'y', 'z' or null (the dataset's default), got {up_axis!r}.")
        if synthetic_samples_per_class < 1 or synthetic_noise < 0:
            raise ValueError("synthetic_samples_per_class must be >= 1 and synthetic_noise >= 0.")
        if name != "synthetic":
            if root is None:
                raise ValueError(f"dataset {name!r} needs `root` (the data folder); see the PointCloudDataModule "
                                 "docstring for the layout, or use dataset: synthetic.")
        if shapenet_categories is not None:
            from torch_geometric.datasets import ShapeNet

            unknown = [c for c in shapenet_categories if c not in ShapeNet.category_ids]
            if unknown:
                raise ValueError(f"Unknown ShapeNet categories {unknown}.{_suggest(unknown[0], list(ShapeNet.category_ids))} "
                                 f"Valid: {', '.join(ShapeNet.category_ids)}.")
        views = list(DEFAULT_POINT_VIEWS) if views is None else list(views)
        if not views:
            raise ValueError("views must list at least one PointView.")
        self.views = [v if isinstance(v, PointView) else PointView(**v) for v in views]
        self.dataset = self.dataset_name = name  # the lower-cased name from POINT_DATASETS
        self.root = root
        self._num_points, self._batch_size, self.num_workers = int(num_points), int(batch_size), int(num_workers)
        self.features = [f for f in FEATURES if f in features]  # canonical channel order
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed, self.sample_seed = int(split_seed), int(sample_seed)
        self.too_few_points, self.subsample, self._up_axis = too_few_points, subsample, up_axis
        self.cache_dir = cache_dir
        self.synthetic_samples_per_class, self.synthetic_noise = int(synthetic_samples_per_class), float(synthetic_noise)
        self.shapenet_categories = None if shapenet_categories is None else list(shapenet_categories)
        self.pin_memory = pin_memory
        self.points: Tensor | None = None
        self.labels: Tensor | None = None
        self.parts: Tensor | None = None
        self.splits: dict[str, Tensor] = {}
        self._class_names: list[str] = []
        self._num_parts: int | None = None
        self._default_up = "y"

    # ------------------------------------------------------------------ properties
    @property
    def num_points(self) -> int:
        return self._num_points

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def in_channels(self) -> int:
        """Extra input channels after xyz: 3 per requested feature."""
        return 3 * len(self.features)

    @property
    def up_axis(self) -> str:
        if self._up_axis is not None:
            return self._up_axis
        if self.dataset_name in ("modelnet10", "modelnet40"):
            return "z"
        if self.dataset_name == "folder":
            self.setup()
        return self._default_up

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self._class_names)

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return list(self._class_names)

    @property
    def num_part_classes(self) -> int | None:
        """Number of (global) part labels, or ``None`` when the dataset has none."""
        self.setup()
        return self._num_parts

    @property
    def category_parts(self) -> Tensor | None:
        """``[num_classes, num_part_classes]`` bool: the part labels each class owns (ShapeNet: PyG's
        ``ShapeNet.seg_classes``; synthetic: ``2c`` and ``2c + 1``), for the ShapeNet-part mIoU protocol.
        ``None`` without part labels, or for folders (the evaluation then uses the parts seen in training)."""
        if self.num_part_classes is None or self.dataset_name not in ("shapenet", "synthetic"):
            return None
        table = torch.zeros(self.num_classes, self.num_part_classes, dtype=torch.bool)
        if self.dataset_name == "synthetic":
            for c in range(self.num_classes):
                table[c, 2 * c: 2 * c + 2] = True
            return table
        from torch_geometric.datasets import ShapeNet

        for c, name in enumerate(self.class_names):
            table[c, ShapeNet.seg_classes[name]] = True
        return table

    # ------------------------------------------------------------------ preparation
    def setup(self, stage: str | None = None) -> None:
        if self.points is not None:
            return
        if self.dataset_name == "synthetic":
            self._setup_synthetic()
            return
        root = Path(self.root).expanduser()  # type: ignore[arg-type]
        if not root.is_dir():
            raise FileNotFoundError(f"Point dataset root {str(root)!r} does not exist. {self._where_to_get()}")
        if self.dataset_name == "shapenet":
            self._setup_shapenet(root)
        elif self.dataset_name == "folder":
            self._setup_folder(root)
        else:
            n = self.dataset_name[len("modelnet"):]
            base = self._modelnet_base(root, n)
            if base is not None:
                self._setup_modelnet(base, n)
                return
            if any(d.is_dir() and (d / "train").is_dir() for d in root.iterdir()):
                self._setup_folder(root)
                self._default_up = "z"
                return
            raise FileNotFoundError(f"No ModelNet{n} data under {root}: expected {root}/raw/<class>/{{train,test}}/*.off "
                                    f"or {root}/<class>/{{train,test}}/*.off. {self._where_to_get()}")

    @staticmethod
    def _modelnet_base(root: Path, n: str) -> Path | None:
        """The folder holding ModelNet's ``raw/`` (``root`` or ``root/ModelNet<n>``), if any."""
        return next((base for base in (root, root / f"ModelNet{n}") if (base / "raw").is_dir()), None)

    def prepare_data(self) -> None:
        """Lightning runs this once per node before ``setup``: PyG processes ModelNet / ShapeNet into the cache
        here, so that DDP ranks do not process (and write) the same files at the same time."""
        if self.dataset_name in ("synthetic", "folder") or self.root is None:
            return
        root = Path(self.root).expanduser()
        if not root.is_dir():
            return  # setup raises the error that says where to get the data
        if self.dataset_name == "shapenet":
            self._shapenet_datasets(root)
            return
        n = self.dataset_name[len("modelnet"):]
        base = self._modelnet_base(root, n)
        if base is not None:
            self._modelnet_datasets(base, n)

    def _where_to_get(self) -> str:
        if self.dataset_name.startswith("modelnet"):
            n = self.dataset_name[len("modelnet"):]
            return (f"Download {MODELNET_URLS[n]}, unzip it and point `root` at the folder holding 'raw' (the "
                    f"'ModelNet{n}' folder renamed 'raw') or at the unzipped 'ModelNet{n}' folder itself; nothing "
                    "is downloaded at run time.")
        if self.dataset_name == "shapenet":
            return (f"Download {SHAPENET_URL}, unzip it, rename the folder 'raw' and point `root` at its parent; nothing "
                    "is downloaded at run time.")
        return "A folder dataset is root/<class>/<file> or root/<class>/{train,test}/<file>."

    def _finish(self, clouds: list[dict[str, Tensor]], labels: Tensor, class_names: list[str],
                splits: dict[str, Tensor], parts_available: bool, num_parts: int | None) -> None:
        self.points = torch.stack([c["points"] for c in clouds]).float().contiguous()
        self.labels = labels.long()
        self.parts = torch.stack([c["parts"] for c in clouds]).long() if parts_available else None
        self._num_parts = num_parts if parts_available else None
        self._class_names = class_names
        self.splits = splits

    def _feature_tensor(self, pos: Tensor, normals: Tensor | None, colors: Tensor | None, where: str) -> Tensor:
        chans = [normalize_unit_sphere(pos)]
        for f, value in (("normals", normals), ("colors", colors)):
            if f in self.features:
                if value is None:
                    raise ValueError(f"features includes {f!r} but {where} has no {f}. Remove {f!r} from data.features "
                                     f"(or use files that carry {f}).")
                chans.append(_normal(value) if f == "normals" else value)
        return torch.cat(chans, -1)

    def _setup_synthetic(self) -> None:
        if "colors" in self.features:
            raise ValueError("features includes 'colors' but the synthetic dataset has no colors. Remove 'colors' "
                             "from data.features.")
        d = make_synthetic_shapes(self.synthetic_samples_per_class, self._num_points, self.synthetic_noise,
                                  self.sample_seed)
        pts = normalize_unit_sphere(d["points"])
        chans = [pts] + ([d["normals"]] if "normals" in self.features else [])
        self.points = torch.cat(chans, -1).contiguous()
        self.labels, self.parts = d["labels"], d["parts"]
        self._class_names, self._num_parts = list(SYNTHETIC_SHAPES), 2 * len(SYNTHETIC_SHAPES)
        train, val, test = stratified_split(self.labels, [self.val_fraction, self.test_fraction], self.split_seed)
        self.splits = {"train": train, "val": val, "test": test}
        self._default_up = "y"

    # -- sampling one record to num_points
    def _sample(self, rec: dict[str, Tensor | None], index: int, where: str, short: list[str]) -> dict[str, Tensor]:
        N = self._num_points
        seed = self.sample_seed + index
        faces = rec.get("faces")
        if faces is not None and faces.numel():
            if "colors" in self.features:
                raise ValueError(f"features includes 'colors' but {where} is a mesh: colours are only read from point "
                                 "clouds (.ply without faces). Remove 'colors' from data.features.")
            from torch_geometric.data import Data
            from torch_geometric.transforms import SamplePoints

            pos = rec["pos"].float()  # type: ignore[union-attr]
            corners = pos[faces.long()]  # [3, F, 3]
            if not bool(torch.linalg.cross(corners[1] - corners[0], corners[2] - corners[0]).norm(dim=-1).sum() > 0):
                raise ValueError(f"{where}: every face of the mesh has zero area, so no surface points can be sampled. "
                                 "Fix or remove the file (or store its vertices as a point file, e.g. .xyz).")

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = SamplePoints(N, include_normals="normals" in self.features)(
                    Data(pos=rec["pos"].float(), face=faces))  # type: ignore[union-attr]
            normals = getattr(out, "normal", None)
            return {"points": self._feature_tensor(out.pos, normals, None, where)}
        pos = rec["pos"]
        V = pos.shape[0]  # type: ignore[union-attr]
        g = torch.Generator().manual_seed(seed)
        if V >= N:
            if self.subsample == "fps" and V > N:
                from lightning_ssl.encoders.point_ops import farthest_point_sample

                idx = farthest_point_sample(pos[None].float(), N, deterministic=True)[0]  # type: ignore[index]
            else:
                idx = torch.randperm(V, generator=g)[:N]
        else:
            if self.too_few_points == "error":
                raise ValueError(f"{where} has {V} points, fewer than num_points={N}. Lower num_points, remove the file, "
                                 "or set too_few_points: resample (sample with replacement).")
            short.append(where)
            idx = torch.cat([torch.randperm(V, generator=g), torch.randint(V, (N - V,), generator=g)])
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        out = {"points": self._feature_tensor(pos[idx], pick(rec.get("normals")), pick(rec.get("colors")), where)}  # type: ignore[index]
        if rec.get("parts") is not None:
            out["parts"] = rec["parts"][idx]  # type: ignore[index]
        return out

    def _warn_short(self, short: list[str]) -> None:
        if short:
            names = ", ".join(short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
            warnings.warn(f"{len(short)} sample(s) have fewer than num_points={self._num_points} points and were "
                          f"resampled with replacement: {names}. Set too_few_points: error to refuse them.", stacklevel=3)

    def _setup_folder(self, root: Path) -> None:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"No class folders under {root}: a folder dataset is root/<class>/<file> or "
                                    f"root/<class>/{{train,test}}/<file> with extensions {', '.join(POINT_EXTENSIONS)}.")
        official = all((root / c / "train").is_dir() for c in classes)
        files: list[tuple[Path, int, str]] = []  # (path, label, split)
        for label, c in enumerate(classes):
            subsets = [("train", root / c / "train"), ("test", root / c / "test")] if official else [("all", root / c)]
            for split, folder in subsets:
                if not folder.is_dir():
                    continue
                for f in sorted(folder.iterdir()):
                    if f.is_file() and not f.name.startswith("."):
                        if f.suffix.lower() not in POINT_EXTENSIONS:
                            read_point_file(f)  # raises the unsupported-extension error naming the file
                        files.append((f, label, split))
        if not files:
            raise FileNotFoundError(f"No point-cloud files under {root} (extensions {', '.join(POINT_EXTENSIONS)}).")
        short: list[str] = []
        clouds = [self._sample(read_point_file(f), i, str(f), short) for i, (f, _, _) in enumerate(files)]
        self._warn_short(short)
        labels = torch.tensor([lab for _, lab, _ in files], dtype=torch.long)
        has_parts = all("parts" in c for c in clouds)
        num_parts = int(torch.stack([c["parts"] for c in clouds]).max()) + 1 if has_parts else None
        if official:
            train_all = torch.tensor([i for i, f in enumerate(files) if f[2] == "train"], dtype=torch.long)
            test = torch.tensor([i for i, f in enumerate(files) if f[2] == "test"], dtype=torch.long)
            tr, va = stratified_split(labels[train_all], [self.val_fraction], self.split_seed)
            splits = {"train": train_all[tr], "val": train_all[va], "test": test}
        else:
            train, val, test = stratified_split(labels, [self.val_fraction, self.test_fraction], self.split_seed)
            splits = {"train": train, "val": val, "test": test}
        self._finish(clouds, labels, classes, splits, has_parts, num_parts)
        self._default_up = "z" if all(f.suffix.lower() == ".off" for f, _, _ in files) else "y"

    def _cache(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def _modelnet_datasets(self, base: Path, n: str) -> tuple[list[Any], list[str]]:
        """PyG's ModelNet train and test sets over a cache mirror of ``base`` (PyG processes them on first use)."""
        from torch_geometric.datasets import ModelNet

        raw = base / "raw"
        classes = sorted(d.name for d in raw.iterdir() if d.is_dir())
        required = ModelNet.raw_file_names.fget(None)  # type: ignore[attr-defined]  # PyG checks these exist
        missing = [c for c in required if not (raw / c).is_dir()]
        if missing:
            raise FileNotFoundError(f"{raw} lacks the class folder(s) {missing} that torch_geometric's ModelNet expects. "
                                    f"{self._where_to_get()}")
        mirror = _mirror(base.parent, base.name, self._cache()) / base.name
        return [ModelNet(str(mirror), n, train=True), ModelNet(str(mirror), n, train=False)], classes

    def _setup_modelnet(self, base: Path, n: str) -> None:
        raw = base / "raw"
        parts, classes = self._modelnet_datasets(base, n)
        clouds, labels, split = self._sample_pyg({"train": parts[0], "test": parts[1]}, f"ModelNet{n}",
                                                 lambda d: {"pos": d.pos, "faces": d.face})
        if not clouds:
            raise FileNotFoundError(f"ModelNet{n} under {raw} has no meshes. {self._where_to_get()}")
        train_all, test = (split == 0).nonzero().flatten(), (split == 1).nonzero().flatten()
        tr, va = stratified_split(labels[train_all], [self.val_fraction], self.split_seed)
        self._finish(clouds, labels, classes, {"train": train_all[tr], "val": train_all[va], "test": test}, False, None)
        self._default_up = "z"

    def _sample_pyg(self, datasets: dict[str, Any], name: str, to_record: Any) -> tuple[list[dict[str, Tensor]], Tensor, Tensor]:
        """Sample every shape of PyG ``datasets`` (split name -> dataset, in split order): the prepared clouds,
        their labels ``[M]`` (``data.category`` for ShapeNet, else ``data.y``) and split ids ``[M]``."""
        short: list[str] = []
        clouds, labels, split_ids = [], [], []
        for s, (split, ds) in enumerate(datasets.items()):
            for j in range(len(ds)):
                data = ds[j]
                clouds.append(self._sample(to_record(data), len(clouds), f"{name} {split} sample {j}", short))
                labels.append(int(data.category) if "category" in data else int(data.y))
                split_ids.append(s)
        self._warn_short(short)
        return clouds, torch.tensor(labels, dtype=torch.long), torch.tensor(split_ids, dtype=torch.long)

    def _shapenet_datasets(self, root: Path) -> dict[str, Any]:
        """PyG's ShapeNet train/val/test sets over a cache mirror of ``root`` (processed on first use)."""
        from torch_geometric.datasets import ShapeNet

        if "colors" in self.features:
            raise ValueError("features includes 'colors' but ShapeNet has no colors. Remove 'colors' from data.features.")
        raw = root / "raw"
        missing = [] if raw.is_dir() else ["raw"]
        if raw.is_dir():
            missing = [c for c in ShapeNet.category_ids.values() if not (raw / c).is_dir()]
            if not (raw / "train_test_split").is_dir():
                missing.append("train_test_split")
        if missing:
            raise FileNotFoundError(f"ShapeNet under {root} lacks raw/{missing[0]} (torch_geometric's ShapeNet needs all 16 "
                                    f"category folders and train_test_split). {self._where_to_get()}")
        mirror = _mirror(root.parent, root.name, self._cache()) / root.name
        cats = self.shapenet_categories or list(ShapeNet.category_ids)
        return {split: ShapeNet(str(mirror), cats, include_normals=True, split=split) for split in ("train", "val", "test")}

    def _setup_shapenet(self, root: Path) -> None:
        from torch_geometric.datasets import ShapeNet

        datasets = self._shapenet_datasets(root)
        cats = self.shapenet_categories or list(ShapeNet.category_ids)
        clouds, labels, sid = self._sample_pyg(datasets, "ShapeNet", lambda d: {
            "pos": d.pos, "faces": None, "normals": d.x, "colors": None, "parts": d.y})
        if not clouds:
            raise FileNotFoundError(f"ShapeNet under {root} has no shapes for categories {cats}. {self._where_to_get()}")
        splits = {k: (sid == s).nonzero().flatten() for s, k in enumerate(("train", "val", "test"))}
        self._finish(clouds, labels, cats, splits, True, 50)
        self._default_up = "y"

    # ------------------------------------------------------------------ checks
    def check_encoder(self, encoder: Any, extra_hops: int = 0) -> None:
        """Called by the method's ``setup``: the encoder's ``in_channels`` (extra channels after xyz) and
        ``min_points`` must fit the data."""
        in_ch = getattr(encoder, "in_channels", None)
        if isinstance(in_ch, int) and not isinstance(in_ch, bool) and in_ch != self.in_channels:
            raise ValueError(
                f"Channel mismatch: the data has features {self.features} = {self.in_channels} extra channels after xyz "
                f"but the encoder was built with in_channels={in_ch}; set "
                f"model.init_args.encoder.init_args.in_channels: {self.in_channels} (or change data.features)."
            )
        min_points = getattr(encoder, "min_points", 0)
        if isinstance(min_points, int) and min_points > self._num_points:
            raise ValueError(f"The encoder needs at least min_points={min_points} points per cloud but the data has "
                             f"num_points={self._num_points}; raise data.num_points to {min_points} or shrink the encoder's "
                             "groups.")

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, train: bool = False) -> DataLoader:
        self.setup()
        ds = _Indexed(self.points, self.labels, self.splits[split])  # type: ignore[arg-type]
        return DataLoader(ds, batch_size=self._batch_size, shuffle=train, drop_last=train and len(ds) >= self._batch_size,
                          collate_fn=collate_views, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training samples (``drop_last`` unless the split is smaller than one batch)."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        ds = _Indexed(self.points, self.labels, torch.arange(self.labels.numel()))  # type: ignore[arg-type, union-attr]
        return DataLoader(ds, batch_size=self._batch_size, collate_fn=collate_views, num_workers=self.num_workers)

    def labelled_train_dataloader(self) -> DataLoader:
        """The clean training set with labels, in order (the kNN probe's bank)."""
        return self._loader("train")

    def segmentation_dataloader(self, split: str = "train", shuffle: bool = False) -> DataLoader:
        """Clean ``{"points" [B, N, 3 + C], "parts" [B, N], "labels" [B]}`` batches of ``split``
        (``"train"``, ``"val"`` or ``"test"``) for part segmentation."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}.")
        self.setup()
        if self.parts is None:
            raise ValueError(f"dataset {self.dataset_name!r} has no per-point part labels; use dataset shapenet or synthetic "
                             "(or a folder of 7-column .txt files).")
        ds = _Parts(self.points, self.parts, self.labels, self.splits[split])  # type: ignore[arg-type]
        return DataLoader(ds, batch_size=self._batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if not (isinstance(batch, SSLBatch) and trainer is not None and trainer.training and len(batch.views) == 1):
            return batch
        raw = batch.views[0]
        normals = "normals" in self.features
        batch.views = [apply_point_view(raw, v, self.up_axis, normals) for v in self.views]
        return batch


def _normal(n: Tensor) -> Tensor:
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


__all__ = ["POINT_DATASETS", "SYNTHETIC_SHAPES", "PointCloudDataModule", "make_synthetic_shapes", "normalize_unit_sphere",
           "stratified_split"]
