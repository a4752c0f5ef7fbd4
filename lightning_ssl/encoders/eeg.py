"""EEG encoders: EEGNet, ShallowConvNet and a channel x time patch transformer (EEGFormer / BIOT style).

Input contract: a float tensor ``x`` of shape ``[B, C, T]`` (EEG channels x time samples of one window),
``C = in_channels`` and ``T = num_samples`` as set in the config (window seconds x sampling rate). Every
encoder has ``in_channels``, ``num_samples``, ``min_samples`` (shortest window it accepts) and ``out_dim``;
``forward(x) -> [B, out_dim]``. ``forward`` validates shapes with :func:`check_eeg_window` (static shape
checks only, no host syncs).

With ``pooling="mean"`` the convolutional encoders average their last feature map over time instead of
flattening it, so ``out_dim`` no longer depends on the window length and any window of at least
``min_samples`` samples works (``num_samples`` is then only the default window the model was sized for).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightning_ssl.encoders.weight_init import trunc_normal_init

__all__ = [
    "EEGNetEncoder",
    "EEGPatchTransformer",
    "EEG_ENCODERS",
    "ShallowConvNetEncoder",
    "check_eeg_window",
]

_POOLINGS = ("flatten", "mean")


def check_eeg_window(
    x: Tensor,
    in_channels: int,
    num_samples: int,
    name: str = "EEG window",
    exact_samples: bool = True,
    min_samples: int = 1,
    hint: str = "",
) -> None:
    """Validate ``x [B, C, T]`` against an encoder's ``in_channels`` and ``num_samples``.

    Shape and dtype checks only (no host syncs). With ``exact_samples`` ``T`` must equal ``num_samples``,
    otherwise ``T >= min_samples``. Errors name the problem and the fix: a ``[B, T, C]`` input (transpose),
    a missing batch dimension, a channel count or window length that does not match the config. ``hint``
    is appended to the window-length error (e.g. "or use pooling='mean'")."""
    want = f"[B, C={in_channels}, T={num_samples}]"
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {want}, got {type(x).__name__}")
    if x.dim() != 3:
        extra = ""
        if x.dim() == 2:
            extra = " (a single window [C, T]? add a batch dimension with x.unsqueeze(0))"
        elif x.dim() == 4 and x.shape[1] == 1:
            extra = " (an image-style [B, 1, C, T]? drop the singleton dimension with x.squeeze(1))"
        raise ValueError(f"{name} must have shape [B, C, T] = {want}; got {tuple(x.shape)}{extra}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}; convert with x.float()")
    B, C, T = x.shape
    if C != in_channels:
        if T == in_channels and (C == num_samples or not exact_samples):
            raise ValueError(
                f"expected {want}, got [B, {C}, {T}]: {name} looks like [B, T, C] (time before channels); "
                "transpose with x.transpose(1, 2)"
            )
        raise ValueError(
            f"{name} has C={C} channels but the encoder was built with in_channels={in_channels} (expected {want}, "
            f"got [B, {C}, {T}]); set the encoder's in_channels to {C} or select {in_channels} channels in the datamodule"
        )
    if exact_samples and T != num_samples:
        raise ValueError(
            f"the datamodule's window has T={T} samples but the encoder was built with num_samples={num_samples} "
            f"(expected {want}, got [B, {C}, {T}]); set the encoder's num_samples to {T} (window seconds x sampling "
            f"rate){hint}"
        )
    if T < min_samples:
        raise ValueError(
            f"the datamodule's window has T={T} samples but this encoder needs at least {min_samples} "
            f"(expected [B, C={in_channels}, T>={min_samples}], got [B, {C}, {T}]); use longer windows or smaller pools"
        )


def _check_pooling(pooling: str) -> str:
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")
    return pooling


def _check_positive(**values: float) -> None:
    bad = {k: v for k, v in values.items() if v < 1}
    if bad:
        raise ValueError(f"these settings must be >= 1: {bad}")


def _same_pad(kernel: int) -> nn.ZeroPad2d:
    """Keras 'same' padding along time for a ``(1, kernel)`` conv: the extra sample of an even kernel goes
    right. (Equal to ``padding="same"`` without PyTorch's extra copy for even kernels.)"""
    return nn.ZeroPad2d(((kernel - 1) // 2, kernel // 2, 0, 0))


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return float(dropout)


class EEGNetEncoder(nn.Module):
    """EEGNet (Lawhern, Solon, Waytowich, Gordon, Hung, Lance, "EEGNet: a compact convolutional neural network
    for EEG-based brain-computer interfaces", J. Neural Eng. 2018, https://arxiv.org/abs/1611.08024).

    Block 1: temporal conv ``F1 x (1, kernel_length)`` ('same' padding, no bias) + BN; depthwise spatial conv
    ``(C, 1)`` with ``groups=F1`` and depth multiplier ``D`` (no bias; the paper's max-norm constraint is
    omitted) + BN + ELU + AvgPool ``(1, pool1)`` + dropout. Block 2: separable conv (depthwise ``(1, 16)``,
    'same' padding, then pointwise to ``F2``) + BN + ELU + AvgPool ``(1, pool2)`` + dropout. The default is
    EEGNet-8,2 (``F1=8, D=2, F2=16``) with the paper's 128 Hz settings (``kernel_length=64``, i.e. half the
    sampling rate; scale it with your rate). The classifier is dropped.

    ``pooling="flatten"`` (the paper): ``out_dim = F2 * (num_samples // pool1 // pool2)`` and the window must
    have exactly ``num_samples`` samples. ``pooling="mean"``: the last feature map is averaged over time,
    ``out_dim = F2`` and any window of at least ``pool1 * pool2`` samples works.
    """

    def __init__(
        self,
        in_channels: int,
        num_samples: int,
        F1: int = 8,
        D: int = 2,
        F2: int = 16,
        kernel_length: int = 64,
        dropout: float = 0.25,
        pool1: int = 4,
        pool2: int = 8,
        pooling: str = "flatten",
    ) -> None:
        super().__init__()
        self.in_channels, self.num_samples = int(in_channels), int(num_samples)
        self.F1, self.D, self.F2, self.kernel_length = int(F1), int(D), int(F2), int(kernel_length)
        self.pool1, self.pool2, self.dropout = int(pool1), int(pool2), _check_dropout(dropout)
        self.pooling = _check_pooling(pooling)
        _check_positive(
            in_channels=self.in_channels, num_samples=self.num_samples, F1=self.F1, D=self.D, F2=self.F2,
            kernel_length=self.kernel_length, pool1=self.pool1, pool2=self.pool2,
        )  # fmt: skip
        self.min_samples = self.pool1 * self.pool2
        if self.num_samples < self.min_samples:
            raise ValueError(
                f"num_samples={self.num_samples} is too short for EEGNet's pools: the window is average-pooled by "
                f"pool1 * pool2 = {self.pool1} * {self.pool2} = {self.min_samples}, so it needs at least "
                f"{self.min_samples} samples; use longer windows or smaller pool1 / pool2"
            )
        self.time_out = self.num_samples // self.pool1 // self.pool2
        self.out_dim = self.F2 * self.time_out if self.pooling == "flatten" else self.F2
        FD = self.F1 * self.D
        self.block1 = nn.Sequential(
            _same_pad(self.kernel_length),
            nn.Conv2d(1, self.F1, (1, self.kernel_length), bias=False),
            nn.BatchNorm2d(self.F1),
            nn.Conv2d(self.F1, FD, (self.in_channels, 1), groups=self.F1, bias=False),
            nn.BatchNorm2d(FD),
            nn.ELU(inplace=True),
            nn.AvgPool2d((1, self.pool1)),
            nn.Dropout(self.dropout),
        )
        self.block2 = nn.Sequential(
            _same_pad(16),
            nn.Conv2d(FD, FD, (1, 16), groups=FD, bias=False),
            nn.Conv2d(FD, self.F2, 1, bias=False),
            nn.BatchNorm2d(self.F2),
            nn.ELU(inplace=True),
            nn.AvgPool2d((1, self.pool2)),
            nn.Dropout(self.dropout),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """``x [B, C, T]`` -> feature map ``[B, F2, T // pool1 // pool2]``."""
        flatten = self.pooling == "flatten"
        check_eeg_window(
            x, self.in_channels, self.num_samples, exact_samples=flatten, min_samples=self.min_samples,
            hint=" or use pooling='mean' for other window lengths" if flatten else "",
        )  # fmt: skip
        return self.block2(self.block1(x.unsqueeze(1))).squeeze(2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.forward_features(x)
        return h.flatten(1) if self.pooling == "flatten" else h.mean(dim=-1)


class ShallowConvNetEncoder(nn.Module):
    """Shallow ConvNet (Schirrmeister, Springenberg, Fiederer, Glasstetter, Eggensperger, Tangermann, Hutter,
    Burgard, Ball, "Deep learning with convolutional neural networks for EEG decoding and visualization",
    Human Brain Mapping 2017, https://arxiv.org/abs/1703.05051).

    An FBCSP-like pipeline: temporal conv ``n_filters x (1, filter_time_length)`` (with bias), spatial conv
    ``n_filters x (C, 1)`` (no bias, BN follows), BN, square, AvgPool ``(1, pool_time_length)`` with stride
    ``(1, pool_time_stride)``, ``log(clamp(., min=1e-6))``, dropout. Defaults are the paper's (40 filters,
    25 / 75 / 15 samples at 250 Hz). The classifier is dropped.

    ``pooling="flatten"``: ``out_dim = n_filters * T'`` with
    ``T' = (num_samples - filter_time_length + 1 - pool_time_length) // pool_time_stride + 1`` and the window
    must have exactly ``num_samples`` samples. ``pooling="mean"``: mean over time, ``out_dim = n_filters``,
    any window of at least ``filter_time_length + pool_time_length - 1`` samples works.
    """

    def __init__(
        self,
        in_channels: int,
        num_samples: int,
        n_filters: int = 40,
        filter_time_length: int = 25,
        pool_time_length: int = 75,
        pool_time_stride: int = 15,
        dropout: float = 0.5,
        pooling: str = "flatten",
    ) -> None:
        super().__init__()
        self.in_channels, self.num_samples, self.n_filters = int(in_channels), int(num_samples), int(n_filters)
        self.filter_time_length, self.pool_time_length = int(filter_time_length), int(pool_time_length)
        self.pool_time_stride, self.dropout = int(pool_time_stride), _check_dropout(dropout)
        self.pooling = _check_pooling(pooling)
        _check_positive(
            in_channels=self.in_channels, num_samples=self.num_samples, n_filters=self.n_filters,
            filter_time_length=self.filter_time_length, pool_time_length=self.pool_time_length,
            pool_time_stride=self.pool_time_stride,
        )  # fmt: skip
        self.min_samples = self.filter_time_length + self.pool_time_length - 1
        if self.num_samples < self.min_samples:
            raise ValueError(
                f"num_samples={self.num_samples} is too short for ShallowConvNet: the temporal conv "
                f"({self.filter_time_length}) and the pool ({self.pool_time_length}) need at least "
                f"{self.min_samples} samples; use longer windows or a smaller filter_time_length / pool_time_length"
            )
        self.time_out = (self.num_samples - self.min_samples) // self.pool_time_stride + 1
        self.out_dim = self.n_filters * self.time_out if self.pooling == "flatten" else self.n_filters
        self.temporal = nn.Conv2d(1, self.n_filters, (1, self.filter_time_length))
        self.spatial = nn.Conv2d(self.n_filters, self.n_filters, (self.in_channels, 1), bias=False)
        self.bn = nn.BatchNorm2d(self.n_filters)
        self.pool = nn.AvgPool2d((1, self.pool_time_length), stride=(1, self.pool_time_stride))
        self.drop = nn.Dropout(self.dropout)

    def forward_features(self, x: Tensor) -> Tensor:
        """``x [B, C, T]`` -> log band power feature map ``[B, n_filters, T']``."""
        flatten = self.pooling == "flatten"
        check_eeg_window(
            x, self.in_channels, self.num_samples, exact_samples=flatten, min_samples=self.min_samples,
            hint=" or use pooling='mean' for other window lengths" if flatten else "",
        )  # fmt: skip
        h = self.bn(self.spatial(self.temporal(x.unsqueeze(1))))  # [B, F, 1, T - k + 1]
        h = torch.log(torch.clamp(self.pool(h * h), min=1e-6))
        return self.drop(h).squeeze(2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.forward_features(x)
        return h.flatten(1) if self.pooling == "flatten" else h.mean(dim=-1)


class EEGPatchTransformer(nn.Module):
    """Channel x time patch transformer in the style of BIOT (Yang, Westover, Sun, "BIOT: Biosignal Transformer
    for Cross-data Learning in the Wild", NeurIPS 2023, https://arxiv.org/abs/2305.10351) and EEGFormer (Chen
    et al., "EEGFormer: Towards Transferable and Interpretable Large-Scale EEG Foundation Model", 2024,
    https://arxiv.org/abs/2401.10278).

    Each channel's signal is cut into ``num_patches = num_samples // patch_size`` non-overlapping patches of
    ``patch_size`` samples; every patch is embedded by one linear layer shared across channels (raw samples,
    not BIOT's STFT), and a learned channel embedding (per channel index) and a learned temporal position
    embedding (per patch index) are added. The ``C * P`` tokens (channel-major: token ``c * P + p`` is
    channel ``c``, patch ``p``) go through timm ViT ``Block``s and a final LayerNorm. ``pooling="mean"``: ``forward``
    returns the mean over all tokens, ``out_dim = embed_dim``; ``pooling="channel"``: the mean over each channel's
    patches, concatenated in channel order, ``out_dim = in_channels * embed_dim`` (keeps where on the scalp a
    pattern is, as band power per channel does).

    ``max_channels`` sizes the channel-embedding table (default ``in_channels``); channel ``c`` of the input
    uses row ``c``. A larger table lets checkpoints move between montages with different ``in_channels`` but
    the same ``max_channels`` (rows follow channel order, so keep a consistent channel ordering).

    Tokenizer API for masked modelling: :meth:`patchify` (``[B, C, T] -> [B, C, P, patch_size]``, a pure
    reshape), :meth:`embed_patches` (``-> [B, C * P, D]``) and :meth:`encode_tokens` (any subset of tokens).
    """

    def __init__(
        self,
        in_channels: int,
        num_samples: int,
        patch_size: int = 64,
        embed_dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        max_channels: int | None = None,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        if pooling not in TOKEN_POOLINGS:
            raise ValueError(f"pooling must be one of {TOKEN_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.in_channels, self.num_samples, self.patch_size = int(in_channels), int(num_samples), int(patch_size)
        self.embed_dim, self.depth, self.num_heads = int(embed_dim), int(depth), int(num_heads)
        self.mlp_ratio, self.drop_path_rate = float(mlp_ratio), float(drop_path_rate)
        self.max_channels = self.in_channels if max_channels is None else int(max_channels)
        _check_positive(
            in_channels=self.in_channels, num_samples=self.num_samples, patch_size=self.patch_size,
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
        )  # fmt: skip
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim must be divisible by num_heads; got embed_dim={embed_dim}, num_heads={num_heads}")
        if self.num_samples % self.patch_size:
            lo = self.num_samples // self.patch_size * self.patch_size
            raise ValueError(
                f"num_samples={self.num_samples} is not divisible by patch_size={self.patch_size}; the window must "
                f"split into whole patches: use num_samples={lo or self.patch_size} or {lo + self.patch_size}, or a "
                "patch_size that divides num_samples"
            )
        if self.max_channels < self.in_channels:
            raise ValueError(
                f"max_channels={self.max_channels} is smaller than in_channels={self.in_channels}; the channel "
                "embedding table needs a row per channel: set max_channels >= in_channels (or leave it None)"
            )
        self.num_patches = self.num_samples // self.patch_size
        self.min_samples = self.num_samples
        self.out_dim = self.embed_dim if pooling == "mean" else self.in_channels * self.embed_dim
        self.patch_embed = nn.Linear(self.patch_size, self.embed_dim)
        self.channel_embed = nn.Parameter(torch.zeros(self.max_channels, self.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(self.num_patches, self.embed_dim))
        dpr = [self.drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]  # linear, as timm
        self.blocks = nn.ModuleList(
            Block(self.embed_dim, self.num_heads, self.mlp_ratio, qkv_bias=True, drop_path=dpr[i]) for i in range(self.depth)
        )
        self.norm = nn.LayerNorm(self.embed_dim)
        nn.init.trunc_normal_(self.channel_embed, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(trunc_normal_init)

    def patchify(self, x: Tensor) -> Tensor:
        """``x [B, C, T]`` -> ``patches [B, C, P, patch_size]``: a pure reshape, ``patches.flatten(2) == x``."""
        check_eeg_window(x, self.in_channels, self.num_samples)
        return x.reshape(x.shape[0], self.in_channels, self.num_patches, self.patch_size)

    def embed_patches(self, patches: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None) -> Tensor:
        """``patches [B, C, P, patch_size]`` -> ``tokens [B, C * P, D]`` (channel-major).

        Linear patch embedding plus the channel embedding (row ``c``) and the position embedding (row ``p``).
        With ``mask [B, C * P]`` (True: masked) and ``mask_token [D]``, the patch embedding of masked tokens is
        replaced by ``mask_token`` before the channel and position embeddings are added, so a masked token
        still says where it is (BERT/EEGFormer-style masking)."""
        want = (self.in_channels, self.num_patches, self.patch_size)
        if patches.dim() != 4 or tuple(patches.shape[1:]) != want:
            raise ValueError(
                f"patches must have shape [B, C, P, patch_size] = [B, {', '.join(map(str, want))}], got "
                f"{tuple(patches.shape)}; make them with encoder.patchify(x)"
            )
        C, P = self.in_channels, self.num_patches
        content = self.patch_embed(patches)
        if mask is not None:
            if mask_token is None or tuple(mask.shape) != (patches.shape[0], C * P) or mask.dtype != torch.bool:
                raise ValueError(f"embed_patches: mask must be a bool tensor [B, C * P] = [{patches.shape[0]}, {C * P}] and "
                                 f"come with a mask_token [D]; got mask {tuple(mask.shape)} {mask.dtype}, mask_token "
                                 f"{mask_token is not None}")
            m = mask.reshape(patches.shape[0], C, P, 1)
            content = torch.where(m, mask_token.reshape(-1).to(content.dtype), content)
        tokens = content + self.channel_embed[:C, None, :] + self.pos_embed[None, :P, :]
        return tokens.reshape(patches.shape[0], C * P, self.embed_dim)

    def encode_tokens(self, tokens: Tensor, return_layers: Sequence[int] = ()) -> tuple[Tensor, list[Tensor]]:
        """Run the blocks on any subset of embedded tokens ``[B, M, D]`` (e.g. the visible ones of a mask).

        Returns the normed output ``[B, M, D]`` and the normed tokens after each block index (from 0) in
        ``return_layers``, in block order."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(
                f"tokens must have shape [B, M, D] with D = embed_dim = {self.embed_dim}, got {tuple(tokens.shape)}; "
                "make them with encoder.embed_patches(encoder.patchify(x))"
            )
        bad = [i for i in return_layers if not 0 <= int(i) < self.depth]
        if bad:
            raise ValueError(f"return_layers must be block indices in [0, depth={self.depth}), got {bad}")
        wanted = {int(i) for i in return_layers}
        h, collected = tokens, []
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            if i in wanted:
                collected.append(self.norm(h))
        return self.norm(h), collected

    def pool(self, tokens: Tensor, keep: Tensor | None = None) -> Tensor:
        """All ``C * P`` tokens ``[B, C * P, D]`` -> ``[B, out_dim]`` (see ``pooling``); with ``keep [B, C * P]``
        only those tokens count (the visible ones of a mask; a channel with none pools to zeros)."""
        B, C = tokens.shape[0], self.in_channels
        if tokens.dim() != 3 or tokens.shape[1] != C * self.num_patches or (keep is not None and keep.shape != tokens.shape[:2]):
            raise ValueError(f"pool needs all C * P = {C * self.num_patches} tokens [B, C * P, D] (mark the ones to use with "
                             f"keep [B, C * P]); got tokens {tuple(tokens.shape)}, keep "
                             f"{None if keep is None else tuple(keep.shape)}")
        w = torch.ones(tokens.shape[:2], device=tokens.device, dtype=tokens.dtype) if keep is None else keep.to(tokens.dtype)
        if self.pooling == "mean":
            return (tokens * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1)
        t, w = tokens.reshape(B, C, -1, self.embed_dim), w.reshape(B, C, -1, 1)
        return ((t * w).sum(2) / w.sum(2).clamp_min(1)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.encode_tokens(self.embed_patches(self.patchify(x)))
        return self.pool(h)


TOKEN_POOLINGS: tuple[str, ...] = ("mean", "channel")

EEG_ENCODERS: dict[str, type[nn.Module]] = {
    "eegnet": EEGNetEncoder,
    "shallow_convnet": ShallowConvNetEncoder,
    "patch_transformer": EEGPatchTransformer,
}
