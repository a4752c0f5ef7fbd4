"""Interpretable codebook patterns of a vector-quantised EEG tokenizer (EEGFormer: Chen et al., "EEGFormer:
Towards Transferable and Interpretable Large-Scale EEG Foundation Model", 2024, https://arxiv.org/abs/2401.10278).

EEGFormer's discrete codes make the model inspectable: which codes fire on the windows of each class, and what
the raw signal behind each code looks like. :class:`CodebookAccumulator` counts, over labelled windows, how often
every code fires per class and sums the raw patches assigned to every code (memory ``O(K * S + classes * K)``,
DDP-ready through :meth:`CodebookAccumulator.all_reduce`); :class:`CodebookReport` turns the sums into
``P(code | class)``, the lift ``P(code | class) / P(code)``, the code perplexity and the mean patch of every code;
:func:`codebook_report` runs a method with a codebook (:class:`~lightning_ssl.methods.EEGFormer`) over a loader
or a windows tensor, and :func:`codebook_figure` draws the patterns as an image in pure torch (for TensorBoard:
:class:`~lightning_ssl.callbacks.LogCodebookPatterns`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl import distributed as dist

__all__ = ["CodebookAccumulator", "CodebookReport", "check_codebook_method", "codebook_figure", "codebook_report", "figure_layout"]


def _default_names(n: int) -> list[str]:
    return [f"class {i}" for i in range(n)]


@dataclass
class CodebookReport:
    """Code statistics over labelled windows.

    Attributes:
        counts: ``[num_classes, K]``: how often each code fired on the windows of each class (summed over
            channels and patches).
        patch_sums: ``[K, S]``: sum of the raw patches assigned to each code.
        code_counts: ``[K]``: assignments of each code (over all classes).
        class_names: one name per row of ``counts``.
    """

    counts: Tensor
    patch_sums: Tensor
    code_counts: Tensor
    class_names: list[str]

    @property
    def num_codes(self) -> int:
        return int(self.code_counts.numel())

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def used_codes(self) -> int:
        """Number of codes assigned at least once."""
        return int((self.code_counts > 0).sum())

    @property
    def mean_patch(self) -> Tensor:
        """``[K, S]``: mean raw patch of every code (zeros for unused codes)."""
        n = self.code_counts.to(self.patch_sums.dtype)[:, None]
        return torch.where(n > 0, self.patch_sums / n.clamp_min(1), torch.zeros_like(self.patch_sums))

    @property
    def code_given_class(self) -> Tensor:
        """``[num_classes, K]``: ``P(code | class)``; rows of classes without windows stay 0."""
        total = self.counts.sum(1, keepdim=True)
        return torch.where(total > 0, self.counts / total.clamp_min(1e-12), torch.zeros_like(self.counts))

    @property
    def perplexity(self) -> float:
        """``exp`` of the entropy of the overall code distribution (``K`` when uniform, 1 when one code takes
        everything; 0 without data)."""
        total = float(self.code_counts.sum())
        if total <= 0:
            return 0.0
        p = self.code_counts.double() / total
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))

    def top_codes(self, k: int = 5, min_count: int = 10) -> dict[str, list[tuple[int, float]]]:
        """The ``k`` codes most typical of every class: ``{class name: [(code, lift), ...]}`` ranked by lift
        ``P(code | class) / P(code)``, among codes used at least ``min_count`` times that fire on the class
        (EEGFormer's class-specific codes). Classes without windows get an empty list."""
        if k < 1 or min_count < 0:
            raise ValueError(f"top_codes needs k >= 1 and min_count >= 0, got k={k}, min_count={min_count}.")
        per_code = self.counts.sum(0)
        total = float(per_code.sum())
        out: dict[str, list[tuple[int, float]]] = {}
        if total <= 0:
            return {name: [] for name in self.class_names}
        p_code = per_code.double() / total
        cgc = self.code_given_class.double()
        for c, name in enumerate(self.class_names):
            ok = (per_code >= max(min_count, 1)) & (self.counts[c] > 0)
            lift = torch.where(ok, cgc[c] / p_code.clamp_min(1e-300), torch.full_like(cgc[c], -1.0))
            n = min(k, int(ok.sum()))
            values, codes = lift.topk(n) if n else (lift[:0], lift[:0].long())
            out[name] = [(int(j), float(v)) for j, v in zip(codes.tolist(), values.tolist())]
        return out

    def to_dict(self, k: int = 5, min_count: int = 10) -> dict[str, Any]:
        """JSON-able summary: per-class top codes (code, lift, ``P(code | class)``), perplexity, used codes."""
        cgc = self.code_given_class
        top = self.top_codes(k, min_count)
        return {
            "num_codes": self.num_codes,
            "used_codes": self.used_codes,
            "perplexity": self.perplexity,
            "assignments": int(self.code_counts.sum()),
            "assignments_per_class": {n: int(self.counts[i].sum()) for i, n in enumerate(self.class_names)},
            "top_codes": {
                n: [{"code": j, "lift": v, "p_code_given_class": float(cgc[i, j])} for j, v in top[n]]
                for i, n in enumerate(self.class_names)
            },
        }


class CodebookAccumulator:
    """Streaming code statistics for :class:`CodebookReport` (float64 sums on the inputs' device).

    Args:
        num_codes: codebook size ``K``.
        patch_size: samples per patch ``S``.
        num_classes: number of classes; ``None`` grows the table to the largest label seen.
        class_names: one name per class (default ``"class 0"``, ...).

    Windows with a negative label (unlabelled) are ignored. Under DDP every rank calls :meth:`all_reduce`
    once (a collective), after which :meth:`report` gives the global statistics on every rank.
    """

    def __init__(self, num_codes: int, patch_size: int, num_classes: int | None,
                 class_names: Sequence[str] | None = None) -> None:
        if num_codes < 1 or patch_size < 1 or (num_classes is not None and num_classes < 1):
            raise ValueError(f"CodebookAccumulator needs num_codes, patch_size and num_classes >= 1, got {num_codes}, "
                             f"{patch_size} and {num_classes}.")
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"CodebookAccumulator: {len(class_names)} class names for num_classes={num_classes}.")
        self.num_codes, self.patch_size = int(num_codes), int(patch_size)
        self.grow = num_classes is None
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self._initial_classes = 1 if num_classes is None else int(num_classes)
        self.reset()

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    def reset(self) -> None:
        """Forget everything accumulated (the tables go back to the CPU)."""
        self.counts = torch.zeros(self._initial_classes, self.num_codes, dtype=torch.float64)
        self.patch_sums = torch.zeros(self.num_codes, self.patch_size, dtype=torch.float64)
        self.code_counts = torch.zeros(self.num_codes, dtype=torch.float64)

    def _to(self, device: torch.device) -> None:
        if self.counts.device != device:
            self.counts, self.patch_sums, self.code_counts = (
                t.to(device) for t in (self.counts, self.patch_sums, self.code_counts))

    def _resize(self, n: int) -> None:
        if n > self.num_classes:
            self.counts = torch.cat([self.counts, self.counts.new_zeros(n - self.num_classes, self.num_codes)])

    @torch.no_grad()
    def update(self, codes: Tensor, patches: Tensor, labels: Tensor) -> None:
        """Add windows: ``codes [B, C, P]`` (integer code of every patch), ``patches [B, C, P, S]`` (the raw
        patches, ``patches[:, c, p]`` got ``codes[:, c, p]``) and ``labels [B]`` (negative: ignored)."""
        if not isinstance(codes, Tensor) or codes.ndim != 3 or codes.is_floating_point():
            got = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"CodebookAccumulator.update: codes must be an integer tensor [B, C, P] (batch, channels, "
                             f"patches), got {got}" + (f" {codes.dtype}" if isinstance(codes, Tensor) else "") + ".")
        b, c, p = codes.shape
        want = (b, c, p, self.patch_size)
        if not isinstance(patches, Tensor) or tuple(patches.shape) != want:
            got = tuple(patches.shape) if isinstance(patches, Tensor) else type(patches).__name__
            raise ValueError(f"CodebookAccumulator.update: patches must be [B, C, P, S] = {want} (codes are {(b, c, p)}, "
                             f"patch_size={self.patch_size}), got {got}.")
        if not isinstance(labels, Tensor) or tuple(labels.shape) != (b,) or labels.is_floating_point():
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"CodebookAccumulator.update: labels must be an integer tensor [B] = ({b},) (one class id "
                             f"per window, -1: unlabelled), got {got}.")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise ValueError(f"CodebookAccumulator.update: codes must lie in [0, {self.num_codes}) (num_codes), got "
                             f"values in [{int(codes.min())}, {int(codes.max())}].")
        device = codes.device if codes.device.type != "mps" else torch.device("cpu")  # MPS has no float64
        labels = labels.to(device).long()
        keep = labels >= 0
        if not bool(keep.any()):
            return
        self._to(device)
        codes, patches, labels = codes.to(device)[keep], patches.to(device)[keep], labels[keep]
        top = int(labels.max())
        if top >= self.num_classes:
            if not self.grow:
                raise ValueError(f"CodebookAccumulator.update: label {top} does not fit num_classes={self.num_classes}.")
            self._resize(top + 1)
        flat = codes.reshape(-1).long()
        self.code_counts += torch.bincount(flat, minlength=self.num_codes).double()
        self.patch_sums.index_add_(0, flat, patches.reshape(-1, self.patch_size).double())
        cls = labels[:, None].expand(-1, c * p).reshape(-1)
        joint = torch.bincount(cls * self.num_codes + flat, minlength=self.num_classes * self.num_codes)
        self.counts += joint.double().view(self.num_classes, self.num_codes)

    @torch.no_grad()
    def all_reduce(self, device: torch.device | str | None = None) -> None:
        """Sum the tables over DDP ranks (a collective: call it once on every rank; no-op without DDP).

        ``device``: where the collective runs (NCCL needs the CUDA device, e.g. ``pl_module.device``)."""
        if not dist.is_distributed():
            return
        self._to(torch.device(device) if device is not None else self.counts.device)
        if self.grow:
            n = dist.all_reduce_max(torch.tensor(float(self.num_classes), device=self.counts.device))
            self._resize(int(n.item()))
        self.counts = dist.all_reduce_sum(self.counts)
        self.patch_sums = dist.all_reduce_sum(self.patch_sums)
        self.code_counts = dist.all_reduce_sum(self.code_counts)

    def report(self) -> CodebookReport:
        """The statistics so far as a :class:`CodebookReport` (CPU copies)."""
        names = list(self.class_names) if self.class_names is not None else []
        if len(names) < self.num_classes:
            names += [f"class {i}" for i in range(len(names), self.num_classes)]
        return CodebookReport(self.counts.cpu().clone(), self.patch_sums.cpu().clone(), self.code_counts.cpu().clone(),
                              names[: self.num_classes])


def check_codebook_method(method: Any, caller: str) -> None:
    """Raise a TypeError unless ``method`` has ``tokenize`` and an encoder with ``patchify`` (EEGFormer)."""
    if not callable(getattr(method, "tokenize", None)) or not callable(getattr(getattr(method, "encoder", None),
                                                                               "patchify", None)):
        raise TypeError(f"{caller} needs a method with a codebook, e.g. lightning_ssl.methods.EEGFormer (a `tokenize` "
                        f"method and an encoder with `patchify`); {type(method).__name__} has none.")


def _batches(data: Any, labels: Tensor | None, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, Tensor):
        for i in range(0, data.shape[0], batch_size):
            y = labels[i:i + batch_size] if labels is not None else torch.zeros(min(batch_size, data.shape[0] - i),
                                                                                 dtype=torch.long)
            yield data[i:i + batch_size], y
        return
    for batch in data:
        if hasattr(batch, "views"):
            x, y = batch.views[0], batch.target
        elif isinstance(batch, (tuple, list)) and len(batch) >= 1:
            x, y = batch[0], batch[1] if len(batch) > 1 else None
        else:
            raise TypeError(f"codebook_report: cannot read windows from a batch of type {type(batch).__name__}; give "
                            "a DataLoader of SSLBatch (views=[x [B, C, T]], target [B]) or a windows tensor [N, C, T].")
        yield x, (torch.zeros(x.shape[0], dtype=torch.long) if y is None else y)


@torch.no_grad()
def codebook_report(
    method: nn.Module,
    loader_or_windows: Iterable[Any] | Tensor,
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 256,
) -> CodebookReport:
    """Code statistics of ``method`` (e.g. :class:`~lightning_ssl.methods.EEGFormer`) on clean windows.

    Args:
        method: a method with ``tokenize`` (``[B, C, T] -> [B, C, P]`` codes) and ``encoder.patchify``.
        loader_or_windows: a DataLoader of :class:`~lightning_ssl.data.batch.SSLBatch` (``views[0]``,
            ``target``) or a windows tensor ``[N, C, T]``.
        labels: ``[N]`` class ids of a windows tensor (negative: ignored); ``None``: one class for all.
        class_names: one name per class (also fixes the number of classes).
        batch_size: windows per forward pass for a windows tensor.

    The method runs in eval mode; every module's train/eval flag is restored afterwards.
    """
    check_codebook_method(method, "codebook_report")
    if batch_size < 1:
        raise ValueError(f"codebook_report: batch_size must be >= 1, got {batch_size}.")
    num_classes: int | None = None if class_names is None else len(class_names)
    if isinstance(loader_or_windows, Tensor):
        if loader_or_windows.ndim != 3:
            raise ValueError(f"codebook_report: windows must be [N, C, T], got {tuple(loader_or_windows.shape)}.")
        if labels is not None:
            labels = torch.as_tensor(labels).long()
            if tuple(labels.shape) != (loader_or_windows.shape[0],):
                raise ValueError(f"codebook_report: labels must be [N] = ({loader_or_windows.shape[0]},), got "
                                 f"{tuple(labels.shape)}.")
            if num_classes is None:
                num_classes = max(1, int(labels.max()) + 1) if labels.numel() else 1
        elif num_classes is None:
            num_classes, class_names = 1, ["all"]
    elif labels is not None:
        raise ValueError("codebook_report: labels are only for a windows tensor; a loader's batches carry `target`.")
    quantizer = getattr(method, "quantizer", None)
    num_codes = int(getattr(quantizer, "num_codes", 0))
    if num_codes < 1:
        raise TypeError(f"codebook_report needs a method with a codebook, e.g. lightning_ssl.methods.EEGFormer "
                        f"(`quantizer.num_codes`); {type(method).__name__} has none.")
    acc = CodebookAccumulator(num_codes, int(method.encoder.patch_size), num_classes, class_names)
    device = next((p.device for p in method.parameters()), torch.device("cpu"))
    flags = {m: m.training for m in method.modules()}
    method.eval()
    try:
        for x, y in _batches(loader_or_windows, labels, batch_size):
            x = x.to(device)
            acc.update(method.tokenize(x), method.encoder.patchify(x), y.to(device).long())
    finally:
        for module, flag in flags.items():
            module.train(flag)
    return acc.report()


# ---------------------------------------------------------------------- drawing (pure torch, no matplotlib)
_DIGITS = ("111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001",
           "111100111001111", "111100111101111", "111001001001001", "111101111101111", "111101111001111")
_BACKGROUND, _INK = 0.85, 0.1
_GAP, _LABEL_H = 2, 7  # pixels between blocks; height of the code-id strip
_BLUE = torch.tensor([0.03, 0.19, 0.42])


def _draw_number(img: Tensor, value: int, top: int, left: int, width: int) -> None:
    """Write ``value`` with a 3x5 pixel font, centred in ``[left, left + width)`` (clipped to the width)."""
    text = str(value)
    w = 4 * len(text) - 1
    x0 = left + max(0, (width - w) // 2)
    for i, ch in enumerate(text):
        glyph = torch.tensor([float(b) for b in _DIGITS[int(ch)]]).view(5, 3)
        x = x0 + 4 * i
        if x + 3 > left + width:
            break
        region = img[:, top:top + 5, x:x + 3]
        img[:, top:top + 5, x:x + 3] = torch.where(glyph.bool(), torch.full_like(region, _INK), region)


def _resample(signal: Tensor, width: int) -> Tensor:
    """``[S]`` -> ``[width]``: averaging when shrinking, linear interpolation when stretching."""
    s = signal.double().view(1, 1, -1)
    if s.shape[-1] == 1:
        return s.view(1).expand(width).clone()
    if s.shape[-1] >= width:
        return F.adaptive_avg_pool1d(s, width).view(width)
    return F.interpolate(s, size=width, mode="linear", align_corners=True).view(width)


def _polyline(signal: Tensor, height: int, width: int, margin: int = 2) -> Tensor:
    """``[height, width]`` mask of ``signal`` drawn min-max scaled, consecutive samples joined vertically."""
    y = _resample(signal, width)
    lo, hi = float(y.min()), float(y.max())
    scaled = (y - lo) / (hi - lo) if hi - lo > 1e-12 * max(1.0, abs(hi), abs(lo)) else torch.full_like(y, 0.5)
    rows = ((1 - scaled) * (height - 1 - 2 * margin)).round().long() + margin
    prev = torch.cat([rows[:1], rows[:-1]])
    top, bottom = torch.minimum(rows, prev), torch.maximum(rows, prev)
    r = torch.arange(height)[:, None]
    return (r >= top[None]) & (r <= bottom[None])


def _shown_codes(report: CodebookReport, max_codes: int) -> Tensor:
    """The codes :func:`codebook_figure` shows: the ``max_codes`` most used (at least one), most used first."""
    n = max(1, min(max_codes, report.used_codes, report.num_codes))
    return torch.sort(report.code_counts.double(), descending=True, stable=True).indices[:n]


def codebook_figure(report: CodebookReport, max_codes: int = 16, cell_height: int = 8, panel_width: int = 32,
                    panel_height: int = 32) -> Tensor:
    """A ``[3, H, W]`` image in [0, 1] of the ``max_codes`` most used codes, one column each (most used first):

    - top: heatmap of ``P(code | class)`` (rows = classes, white -> blue, scaled by the block's maximum);
    - middle: the code id (3x5 pixel digits);
    - bottom: the code's mean raw patch as a dark polyline on white (min-max scaled per panel).
    """
    if max_codes < 1 or cell_height < 1 or panel_width < 2 or panel_height < 8:
        raise ValueError(f"codebook_figure needs max_codes >= 1, cell_height >= 1, panel_width >= 2 and panel_height "
                         f">= 8, got {max_codes}, {cell_height}, {panel_width}, {panel_height}.")
    usage = report.code_counts.double()
    order = _shown_codes(report, max_codes)
    n, gap, label_h = int(order.numel()), _GAP, _LABEL_H
    heat_h = report.num_classes * cell_height
    height = gap + heat_h + gap + label_h + panel_height + gap
    width = gap + n * (panel_width + gap)
    img = torch.full((3, height, width), _BACKGROUND, dtype=torch.float32)
    block = report.code_given_class.double()[:, order]
    peak = float(block.max()) if block.numel() else 0.0
    level = (block / peak if peak > 0 else block).float()  # [classes, n] in [0, 1]
    colour = 1 - level[None] * (1 - _BLUE.view(3, 1, 1))  # white -> blue
    means = report.mean_patch[order]
    for j in range(n):
        x = gap + j * (panel_width + gap)
        cells = colour[:, :, j:j + 1].repeat_interleave(cell_height, 1).expand(-1, -1, panel_width)
        img[:, gap:gap + heat_h, x:x + panel_width] = cells
        _draw_number(img, int(order[j]), gap + heat_h + gap + 1, x, panel_width)
        top = gap + heat_h + gap + label_h
        panel = torch.ones(panel_height, panel_width)
        if usage[order[j]] > 0:
            panel[_polyline(means[j], panel_height, panel_width)] = _INK
        img[:, top:top + panel_height, x:x + panel_width] = panel
    return img.clamp(0, 1)


def figure_layout(report: CodebookReport, max_codes: int = 16, cell_height: int = 8, panel_width: int = 32,
                  panel_height: int = 32) -> dict[int, tuple[int, int, int, int]]:
    """Where :func:`codebook_figure` draws each code's mean-patch panel: ``{code: (top, left, height, width)}``."""
    order = _shown_codes(report, max_codes).tolist()
    top = _GAP + report.num_classes * cell_height + _GAP + _LABEL_H
    return {int(code): (top, _GAP + j * (panel_width + _GAP), panel_height, panel_width) for j, code in enumerate(order)}

