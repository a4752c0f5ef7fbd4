"""Point-cloud encoders: PointNet, PointNet++ (SSG), DGCNN and the Point-MAE patch transformer.

Input contract: a dense tensor ``x`` of shape ``[B, N, 3 + in_channels]``, xyz first, then optional
per-point features (normals, colours). Every encoder has ``in_channels``, ``out_dim`` and ``min_points``
(smallest ``N`` it accepts), ``forward(x) -> [B, out_dim]`` (a global feature) and
``forward_levels(x) -> list[PointLevel]`` (per-point or per-patch features for dense tasks, turned into
per-input-point features by :func:`dense_point_features`). Neighbour searches use the pure-torch ops of
:mod:`lightning_ssl.encoders.point_ops` (compiled PyG ops when installed); ``forward`` validates shapes
only and makes no host syncs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightning_ssl.encoders.weight_init import trunc_normal_init

from lightning_ssl.encoders.point_ops import (
    _ball_query_indices,
    _fps_auto,
    _gather,
    _knn_auto,
    _knn_indices,
    knn_interpolate,
)

__all__ = [
    "DGCNN",
    "POINT_ENCODERS",
    "PatchTokens",
    "PointLevel",
    "PointNet",
    "PointNetPlusPlus",
    "PointPatchEmbed",
    "PointPatchTransformer",
    "dense_point_features",
    "split_points",
]


class PointLevel(NamedTuple):
    """Features at a set of points: ``xyz [B, M, 3]`` and ``features [B, M, C]``."""

    xyz: Tensor
    features: Tensor


class PatchTokens(NamedTuple):
    """Point-MAE patches: ``centers [B, G, 3]``, ``neighborhoods [B, G, K, 3 + C]`` (xyz relative to the
    centre, extra channels raw) and their embeddings ``tokens [B, G, D]``."""

    centers: Tensor
    neighborhoods: Tensor
    tokens: Tensor


def split_points(x: Tensor, in_channels: int, name: str = "points", min_points: int = 1) -> tuple[Tensor, Tensor | None]:
    """Validate ``x [B, N, 3 + in_channels]`` and return ``(xyz [B, N, 3], features [B, N, C] or None)``.

    Shape checks only (no host syncs). Errors name the problem and the fix: a ``[B, 3 + C, N]`` input,
    a channel count that does not match the encoder's ``in_channels``, or fewer than ``min_points`` points."""
    want = 3 + in_channels
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B, N, {want}], got {type(x).__name__}")
    if x.dim() != 3:
        hint = " (a single cloud [N, C]? add a batch dimension with x.unsqueeze(0))" if x.dim() == 2 else ""
        raise ValueError(f"{name} must have shape [B, N, 3 + in_channels] = [B, N, {want}]; got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}; convert with x.float()")
    if x.shape[-1] != want:
        if x.shape[1] == want:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, which looks like [B, 3 + C, N]; point encoders take "
                f"[B, N, {want}]: transpose with x.transpose(1, 2)"
            )
        raise ValueError(
            f"{name} has {x.shape[-1]} channels per point but the encoder was built with in_channels={in_channels} "
            f"(expects 3 xyz + {in_channels} = {want}); set the encoder's in_channels to {x.shape[-1] - 3} or make the "
            "datamodule's `features` match"
        )
    if x.shape[1] < min_points:
        raise ValueError(
            f"{name} has N={x.shape[1]} points per cloud but this encoder needs at least min_points={min_points}; "
            "use more points per cloud (datamodule num_points) or fewer groups"
        )
    return x[..., :3], (x[..., 3:] if in_channels > 0 else None)


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def _mlp(dims: Sequence[int], conv: type[nn.Module], norm: type[nn.Module], act: Callable[[], nn.Module] = _relu) -> nn.Sequential:
    """1x1 conv (no bias) + BN + ``act()`` for each consecutive pair of ``dims``."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [conv(a, b, 1, bias=False), norm(b), act()]
    return nn.Sequential(*layers)


def _positive(name: str, values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if not values or min(values) < 1:
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values}")
    return values


class PointNet(nn.Module):
    """PointNet (Qi, Su, Mo, Guibas, CVPR 2017, https://arxiv.org/abs/1612.00593) without T-Nets.

    A shared per-point MLP (Conv1d 1x1 + BN + ReLU with ``widths``) over xyz and the extra channels, then
    max pooling. The input and feature transform networks (T-Nets) are omitted: they add little with
    rotation augmentation and are not used by the SSL literature built on PointNet.
    ``forward_levels``: per-point features after layers 1, 3 and the last, at the input xyz.
    """

    def __init__(self, in_channels: int = 0, widths: Sequence[int] = (64, 64, 64, 128, 1024)) -> None:
        super().__init__()
        self.in_channels, self.widths = int(in_channels), _positive("widths", widths)
        self.out_dim, self.min_points = self.widths[-1], 1
        dims = (3 + self.in_channels, *self.widths)
        self.layers = nn.ModuleList(_mlp(dims[i : i + 2], nn.Conv1d, nn.BatchNorm1d) for i in range(len(self.widths)))
        n = len(self.widths)
        self.level_layers = tuple(sorted({0, min(2, n - 1), n - 1}))

    def _run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        xyz, _ = split_points(x, self.in_channels, min_points=self.min_points)
        h, feats = x.transpose(1, 2), []
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return xyz, feats

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x)[1][-1].amax(dim=2)

    def forward_levels(self, x: Tensor) -> list[PointLevel]:
        xyz, feats = self._run(x)
        return [PointLevel(xyz, feats[i].transpose(1, 2)) for i in self.level_layers]


class PointNetPlusPlus(nn.Module):
    """PointNet++ single-scale-grouping classification backbone (Qi, Yi, Su, Guibas, NeurIPS 2017,
    https://arxiv.org/abs/1706.02413).

    Each set-abstraction level picks ``npoints[i]`` centres by farthest point sampling (deterministic
    start), groups up to ``nsamples[i]`` points within ``radii[i]`` (ball query), concatenates their xyz
    relative to the centre with their features, applies Conv2d 1x1 + BN + ReLU (``mlps[i]``) and max-pools
    over the neighbourhood. A global level then runs ``global_mlp`` over all remaining points (absolute
    xyz + features) and max-pools. ``forward_levels``: one level per SA (its centres) plus the global
    feature as one point at the cloud centroid.
    """

    def __init__(
        self,
        in_channels: int = 0,
        npoints: Sequence[int] = (512, 128),
        radii: Sequence[float] = (0.2, 0.4),
        nsamples: Sequence[int] = (32, 64),
        mlps: Sequence[Sequence[int]] = ((64, 64, 128), (128, 128, 256)),
        global_mlp: Sequence[int] = (256, 512, 1024),
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.npoints, self.nsamples = _positive("npoints", npoints), _positive("nsamples", nsamples)
        self.radii = tuple(float(r) for r in radii)
        self.mlps = tuple(_positive("mlps[i]", m) for m in mlps)
        self.global_mlp = _positive("global_mlp", global_mlp)
        if not len(self.npoints) == len(self.radii) == len(self.nsamples) == len(self.mlps):
            raise ValueError(
                f"npoints, radii, nsamples and mlps need one entry per set-abstraction level; got lengths "
                f"{len(self.npoints)}, {len(self.radii)}, {len(self.nsamples)}, {len(self.mlps)}"
            )
        if any(b > a for a, b in zip(self.npoints[:-1], self.npoints[1:])) or min(self.radii, default=1.0) <= 0:
            raise ValueError(f"npoints must be non-increasing and radii > 0; got npoints={self.npoints}, radii={self.radii}")
        self.out_dim, self.min_points = self.global_mlp[-1], self.npoints[0]
        c, sa = self.in_channels, []
        for mlp in self.mlps:
            sa.append(_mlp((3 + c, *mlp), nn.Conv2d, nn.BatchNorm2d))
            c = mlp[-1]
        self.sa = nn.ModuleList(sa)
        self.global_sa = _mlp((3 + c, *self.global_mlp), nn.Conv1d, nn.BatchNorm1d)

    def forward_levels(self, x: Tensor) -> list[PointLevel]:
        xyz, feats = split_points(x, self.in_channels, min_points=self.min_points)
        levels = []
        for npoint, radius, nsample, mlp in zip(self.npoints, self.radii, self.nsamples, self.sa):
            centres = _gather(xyz, _fps_auto(xyz, npoint).unsqueeze(-1)).squeeze(2)  # [B, M, 3]
            idx = _ball_query_indices(centres, xyz, radius, nsample)  # [B, M, K]
            grouped = _gather(xyz, idx) - centres.unsqueeze(2)
            if feats is not None:
                grouped = torch.cat([grouped, _gather(feats, idx)], dim=-1)
            feats = mlp(grouped.permute(0, 3, 1, 2)).amax(dim=-1).transpose(1, 2)  # [B, M, C]
            xyz = centres
            levels.append(PointLevel(xyz, feats))
        h = self.global_sa(torch.cat([xyz, feats], dim=-1).transpose(1, 2)).amax(dim=-1)  # [B, C]
        levels.append(PointLevel(x[..., :3].mean(dim=1, keepdim=True), h.unsqueeze(1)))
        return levels

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_levels(x)[-1].features.squeeze(1)


class DenseEdgeConv(nn.Module):
    """One EdgeConv layer on dense clouds: ``max_j act(BN(W [x_j - x_i, x_i]))`` over the graph ``idx``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = _mlp((2 * in_dim, out_dim), nn.Conv2d, nn.BatchNorm2d, _leaky_relu)

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        """``x [B, N, C]``, ``idx [B, N, k]`` neighbour indices -> ``[B, N, out_dim]``."""
        x_j = _gather(x, idx)  # [B, N, k, C]
        x_i = x.unsqueeze(2).expand_as(x_j)
        edge = torch.cat([x_j - x_i, x_i], dim=-1).permute(0, 3, 1, 2)  # [B, 2C, N, k]
        return self.mlp(edge).amax(dim=-1).transpose(1, 2)


class DGCNN(nn.Module):
    """DGCNN (Wang, Sun, Liu, Sarma, Bronstein, Solomon, ACM TOG 2019, https://arxiv.org/abs/1801.07829).

    EdgeConv layers (``widths``) on a dynamic kNN graph with ``k`` neighbours (the point itself
    included), recomputed in feature space before every layer (the first on xyz); edge features
    ``[x_j - x_i, x_i]`` through Conv2d + BN + LeakyReLU(0.2), max over neighbours. The outputs of all
    layers are concatenated and embedded to ``emb_dim`` (Conv1d + BN + LeakyReLU); the global feature is
    ``[max, mean]`` over points, so ``out_dim = 2 * emb_dim``. ``forward_levels``: each EdgeConv layer's
    per-point features at the input xyz.
    """

    def __init__(self, in_channels: int = 0, k: int = 20, widths: Sequence[int] = (64, 64, 128, 256), emb_dim: int = 1024) -> None:
        super().__init__()
        self.in_channels, self.k, self.emb_dim = int(in_channels), int(k), int(emb_dim)
        self.widths = _positive("widths", widths)
        if self.k < 1 or self.emb_dim < 1:
            raise ValueError(f"k and emb_dim must be >= 1, got k={k}, emb_dim={emb_dim}")
        self.out_dim, self.min_points = 2 * self.emb_dim, self.k
        dims = (3 + self.in_channels, *self.widths)
        self.convs = nn.ModuleList(DenseEdgeConv(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.embed = _mlp((sum(self.widths), self.emb_dim), nn.Conv1d, nn.BatchNorm1d, _leaky_relu)

    def _run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        xyz, _ = split_points(x, self.in_channels, min_points=self.min_points)
        h, feats = x, []
        for i, conv in enumerate(self.convs):
            h = conv(h, _knn_indices(xyz if i == 0 else h, xyz if i == 0 else h, self.k))
            feats.append(h)
        return xyz, feats

    def forward(self, x: Tensor) -> Tensor:
        e = self.embed(torch.cat(self._run(x)[1], dim=-1).transpose(1, 2))  # [B, emb_dim, N]
        return torch.cat([e.amax(dim=-1), e.mean(dim=-1)], dim=-1)

    def forward_levels(self, x: Tensor) -> list[PointLevel]:
        xyz, feats = self._run(x)
        return [PointLevel(xyz, f) for f in feats]


class PointPatchEmbed(nn.Module):
    """Point-MAE's mini-PointNet patch ``Encoder`` (Pang et al., ECCV 2022): ``[B, G, K, 3 + C] -> [B, G, D]``.

    Conv1d(3+C, 128) + BN + ReLU + Conv1d(128, 256), max over the K points, concat(global, per-point),
    Conv1d(512, 512) + BN + ReLU + Conv1d(512, D), max over the K points."""

    def __init__(self, in_channels: int = 0, embed_dim: int = 384) -> None:
        super().__init__()
        self.in_channels, self.embed_dim = int(in_channels), int(embed_dim)
        self.first_conv = nn.Sequential(
            nn.Conv1d(3 + self.in_channels, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, self.embed_dim, 1)
        )

    def forward(self, neighborhoods: Tensor) -> Tensor:
        if neighborhoods.dim() != 4 or neighborhoods.shape[-1] != 3 + self.in_channels:
            raise ValueError(
                f"neighborhoods must have shape [B, G, K, 3 + in_channels] = [B, G, K, {3 + self.in_channels}], "
                f"got {tuple(neighborhoods.shape)}"
            )
        B, G, K, C = neighborhoods.shape
        h = self.first_conv(neighborhoods.reshape(B * G, K, C).transpose(1, 2))  # [BG, 256, K]
        h = torch.cat([h.amax(dim=2, keepdim=True).expand_as(h), h], dim=1)
        return self.second_conv(h).amax(dim=2).reshape(B, G, self.embed_dim)


class PointPatchTransformer(nn.Module):
    """Point-MAE's patch transformer encoder (Pang, Wang, Tay, Liu, Tian, Yuan, "Masked Autoencoders for
    Point Cloud Self-supervised Learning", ECCV 2022, https://arxiv.org/abs/2203.06604).

    ``num_groups`` centres by FPS, each with its ``group_size`` nearest points (xyz relative to the
    centre) embedded by :class:`PointPatchEmbed`; a learned positional embedding of the centres is added
    before every transformer block. ``forward`` returns ``[mean, max]`` of the normed tokens
    (``out_dim = 2 * embed_dim``, Point-MAE's frozen-feature evaluation); ``forward_levels`` the tokens
    after ``level_layers`` (default: 4th, 8th and 12th of 12 blocks, as Point-MAE's segmentation head).
    """

    def __init__(
        self,
        in_channels: int = 0,
        num_groups: int = 64,
        group_size: int = 32,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        level_layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_groups, self.group_size = int(in_channels), int(num_groups), int(group_size)
        self.embed_dim, self.depth, self.num_heads = int(embed_dim), int(depth), int(num_heads)
        self.mlp_ratio, self.drop_path_rate = float(mlp_ratio), float(drop_path_rate)
        if min(self.num_groups, self.group_size, self.depth, self.num_heads) < 1 or self.embed_dim % self.num_heads:
            raise ValueError(
                "num_groups, group_size, depth and num_heads must be >= 1 and embed_dim divisible by num_heads; got "
                f"num_groups={num_groups}, group_size={group_size}, depth={depth}, embed_dim={embed_dim}, num_heads={num_heads}"
            )
        if level_layers is None:
            level_layers = (max(self.depth // 3 - 1, 0), max(2 * self.depth // 3 - 1, 0), self.depth - 1)
        self.level_layers = tuple(sorted({int(i) for i in level_layers}))
        if not self.level_layers or self.level_layers[0] < 0 or self.level_layers[-1] >= self.depth:
            raise ValueError(
                f"level_layers must be block indices in [0, depth={self.depth}), got {tuple(level_layers)}; "
                "count blocks from 0 (the last block is depth - 1)"
            )
        self.out_dim, self.min_points = 2 * self.embed_dim, max(self.num_groups, self.group_size)
        self.patch_embed = PointPatchEmbed(self.in_channels, self.embed_dim)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, self.embed_dim))
        dpr = torch.linspace(0, self.drop_path_rate, self.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(self.embed_dim, self.num_heads, self.mlp_ratio, qkv_bias=False, drop_path=dpr[i]) for i in range(self.depth)
        )
        self.norm = nn.LayerNorm(self.embed_dim)
        self.apply(lambda m: trunc_normal_init(m, (nn.Linear, nn.Conv1d)))  # Point-MAE: Linear and Conv1d alike

    def group(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, N, 3 + C]`` -> ``(centers [B, G, 3], neighborhoods [B, G, K, 3 + C])``."""
        xyz, feats = split_points(x, self.in_channels, min_points=self.min_points)
        centers = _gather(xyz, _fps_auto(xyz, self.num_groups).unsqueeze(-1)).squeeze(2)
        idx = _knn_auto(centers, xyz, self.group_size)  # [B, G, K]
        neighborhoods = _gather(xyz, idx) - centers.unsqueeze(2)
        if feats is not None:
            neighborhoods = torch.cat([neighborhoods, _gather(feats, idx)], dim=-1)
        return centers, neighborhoods

    def tokenize(self, x: Tensor) -> PatchTokens:
        centers, neighborhoods = self.group(x)
        return PatchTokens(centers, neighborhoods, self.patch_embed(neighborhoods))

    def encode_tokens(self, tokens: Tensor, centers: Tensor, return_layers: Sequence[int] = ()) -> tuple[Tensor, list[Tensor]]:
        """Run the blocks on any subset of tokens ``[B, M, D]`` at ``centers [B, M, 3]``.

        Returns the normed output ``[B, M, D]`` and the normed tokens after each block in ``return_layers``."""
        if tokens.dim() != 3 or centers.dim() != 3 or tokens.shape[:2] != centers.shape[:2] or centers.shape[-1] != 3:
            raise ValueError(
                f"tokens must be [B, M, D] and centers [B, M, 3] with the same B and M; got {tuple(tokens.shape)} "
                f"and {tuple(centers.shape)}"
            )
        pos, x, collected = self.pos_embed(centers), tokens, []
        for i, blk in enumerate(self.blocks):
            x = blk(x + pos)
            if i in return_layers:
                collected.append(x)
        return self.norm(x), [self.norm(f) for f in collected]

    def forward(self, x: Tensor) -> Tensor:
        t = self.tokenize(x)
        h, _ = self.encode_tokens(t.tokens, t.centers)
        return torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=-1)

    def forward_levels(self, x: Tensor) -> list[PointLevel]:
        t = self.tokenize(x)
        _, feats = self.encode_tokens(t.tokens, t.centers, self.level_layers)
        return [PointLevel(t.centers, f) for f in feats]


def _same_points(a: Tensor, b: Tensor) -> bool:
    """True when ``a`` and ``b`` view the same memory the same way (no host sync)."""
    return (
        a.shape == b.shape
        and a.stride() == b.stride()
        and a.storage_offset() == b.storage_offset()
        and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    )


def dense_point_features(encoder: nn.Module, x: Tensor, k: int = 3) -> Tensor:
    """Per-input-point features ``[B, N, sum C]`` from every level of ``encoder.forward_levels(x)``.

    Levels at other points (SA centres, patch centres) are interpolated back to the input xyz with
    :func:`knn_interpolate` (``k`` neighbours, inverse squared distance); levels already at the input
    points are used as they are. Concatenating several levels is the multi-level readout of Masked Scene
    Modeling (Hermosilla, Stippel, Sick, "Masked Scene Modeling", CVPR 2025)."""
    xyz = x[..., :3]
    out = []
    for level in encoder.forward_levels(x):
        same = _same_points(level.xyz, xyz)
        out.append(level.features if same else knn_interpolate(level.xyz, level.features, xyz, k=k))
    return torch.cat(out, dim=-1)


POINT_ENCODERS: dict[str, type[nn.Module]] = {
    "pointnet": PointNet,
    "pointnet++": PointNetPlusPlus,
    "dgcnn": DGCNN,
    "patch_transformer": PointPatchTransformer,
}
