"""EEG recordings: reading (EDF/BDF/GDF/FIF/BrainVision through MNE, NumPy arrays), preprocessing and
leakage-free windowing with labels from annotations.

- :func:`read_eeg` returns an :class:`EEGRecording` in microvolts with channels selected and ordered by
  name (names are matched after :func:`normalize_channel_name`: ``"Fc5."`` and ``"FC5"`` are the same).
  MNE is the optional extra ``eeg`` (``pip install 'lightning-ssl[eeg]'``); NumPy arrays need no extra.
  EDF annotations are decoded with ``encoding="latin1"`` (the EEGMMIDB files need it).
- :func:`preprocess` band-passes (zero-phase Butterworth, SciPy), resamples (polyphase, SciPy),
  normalises per recording and channel (``zscore`` or ``robust``: median / IQR) and clips.
- :func:`make_windows` cuts windows of ``window_s`` seconds every ``stride_s`` seconds and labels them
  from the annotations through ``label_map``. A window inside one event takes its label; a window that
  covers no event is unlabelled (-1, still usable for pretraining); a window that straddles two
  different labels (or an event and unlabelled signal) is dropped (``straddle="drop"``), takes the
  label covering most of its samples (``"majority"``; unlabelled time counts as a label, -1), or is kept
  unlabelled (``"unlabel"``: -1, so pretraining sees every window and probes only the clean ones).
  :func:`make_event_windows` cuts one window per annotated event instead (MNE-style epochs).

Splits are made by recording (:func:`assert_disjoint_recordings`), never by window, so no window of a
test recording is seen in training.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MNE_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif", ".vhdr")
ARRAY_SUFFIXES = (".npy", ".npz")
NORMALIZATIONS = ("zscore", "robust", "none")
STRADDLE_RULES = ("drop", "majority", "unlabel")


@dataclass
class EEGRecording:
    """One continuous recording: ``data`` ``[C, T]`` float32 in microvolts at ``sfreq`` Hz.

    ``annotations`` are ``(onset_s, duration_s, description)``; ``channel_mask`` ``[C]`` is False for
    channels that were missing and zero-filled (``missing_channels="zero"``). A recording read from a windowed
    array ``[N, C, W]`` keeps its windows side by side (``data[:, i * W:(i + 1) * W]`` is window ``i``,
    ``window_samples = W``) with one label per window in ``window_labels`` (class ids, -1: unlabelled, or
    descriptions mapped through ``label_map``); :func:`preprocess` filters and resamples every window on its
    own and :func:`make_windows` returns the stored windows."""

    data: Tensor
    sfreq: float
    ch_names: list[str]
    annotations: list[tuple[float, float, str]] = field(default_factory=list)
    source: str = ""
    channel_mask: Tensor | None = None
    window_samples: int | None = None
    window_labels: list | None = None

    @property
    def duration_s(self) -> float:
        return self.data.shape[1] / self.sfreq


def normalize_channel_name(name: str) -> str:
    """``"Fc5."`` -> ``"FC5"``: strip dots and spaces (EDF padding), upper-case."""
    return name.strip().strip(".").strip().upper()


def _import_mne():  # noqa: ANN202
    try:
        import mne
    except ImportError as err:  # pragma: no cover - exercised where MNE is absent
        raise ImportError(
            "Reading EDF/BDF/GDF/FIF/BrainVision files needs MNE: pip install 'lightning-ssl[eeg]' (or pip install mne). "
            "NumPy arrays (.npy/.npz) need no extra."
        ) from err
    return mne


def _read_mne(path: Path, encoding: str) -> tuple[np.ndarray, float, list[str], list[tuple[float, float, str]]]:
    mne = _import_mne()
    suffix = path.suffix.lower()
    kwargs = {"preload": True, "verbose": "error"}
    if suffix in (".edf", ".bdf", ".gdf"):
        reader = {".edf": mne.io.read_raw_edf, ".bdf": mne.io.read_raw_bdf, ".gdf": mne.io.read_raw_gdf}[suffix]
        raw = reader(str(path), encoding=encoding, **kwargs) if suffix != ".gdf" else reader(str(path), **kwargs)
    elif suffix == ".fif":
        raw = mne.io.read_raw_fif(str(path), **kwargs)
    else:
        raw = mne.io.read_raw_brainvision(str(path), **kwargs)
    raw.pick("eeg")
    ann = [(float(o), float(d), str(s)) for o, d, s in zip(raw.annotations.onset, raw.annotations.duration,
                                                           raw.annotations.description)]
    return raw.get_data(units="uV"), float(raw.info["sfreq"]), list(raw.ch_names), ann


def _read_array(path: Path, sfreq: float | None, ch_names: Sequence[str] | None) -> tuple[np.ndarray, float, list[str], list, dict]:
    labels = None
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "data" not in z:
                raise ValueError(f"{path}: an EEG .npz needs a 'data' array [C, T] or [N, C, W] (and optionally 'sfreq', "
                                 f"'ch_names', 'labels' for windows); found keys {sorted(z.files)}.")
            data = z["data"]
            sfreq = float(z["sfreq"]) if "sfreq" in z else sfreq
            ch_names = [str(c) for c in z["ch_names"]] if "ch_names" in z else ch_names
            labels = z["labels"] if "labels" in z else None
    else:
        data = np.load(path, allow_pickle=False)
    windowed: dict = {}
    if data.ndim == 3:  # [N, C, W] windows, kept side by side: [C, N * W]
        n, _, width = data.shape
        if labels is not None and (labels.ndim != 1 or len(labels) != n):
            raise ValueError(f"{path}: 'labels' must hold one label per window, shape [{n}], got {labels.shape}.")
        kinds = "iu" if labels is None or labels.dtype.kind in "iu" else labels.dtype.kind
        if kinds not in ("iu", "U", "S"):
            raise ValueError(f"{path}: window 'labels' must be integers (class ids, -1: unlabelled) or strings "
                             f"(mapped through label_map), got dtype {labels.dtype}.")
        windowed = {"window_samples": int(width),
                    "window_labels": None if labels is None else [v if isinstance(v, str) else int(v) for v in labels.tolist()]}
        data = np.ascontiguousarray(data.transpose(1, 0, 2).reshape(data.shape[1], n * width))
    elif data.ndim != 2:
        raise ValueError(f"{path}: an EEG array must be continuous [C, T] (channels x samples) or windowed [N, C, W], "
                         f"got shape {data.shape}.")
    if sfreq is None:
        raise ValueError(f"{path}: a NumPy recording has no sampling rate; pass sfreq= (or store 'sfreq' in the .npz).")
    names = list(ch_names) if ch_names is not None else [f"CH{i}" for i in range(data.shape[0])]
    if len(names) != data.shape[0]:
        raise ValueError(f"{path}: {len(names)} channel names for {data.shape[0]} channels.")
    return data, float(sfreq), names, [], windowed


def read_eeg(
    path: str | Path,
    channels: Sequence[str] | None = None,
    missing_channels: str = "error",
    sfreq: float | None = None,
    ch_names: Sequence[str] | None = None,
    encoding: str = "latin1",
) -> EEGRecording:
    """Read one recording as an :class:`EEGRecording` (microvolts, float32).

    Args:
        path: ``.edf``/``.bdf``/``.gdf``/``.fif``/``.vhdr`` (MNE, EEG channels only) or ``.npy``/``.npz``
            (continuous ``[C, T]`` or windowed ``[N, C, W]`` with optional ``labels [N]`` in a ``.npz``; already in
            microvolts).
        channels: names to keep, in this order (matched after :func:`normalize_channel_name`); default all.
        missing_channels: ``"error"`` (default) or ``"zero"`` (zero-filled rows, ``channel_mask`` False).
        sfreq, ch_names: sampling rate and names for NumPy arrays (a ``.npz`` may carry its own).
        encoding: EDF annotation encoding (EEGMMIDB needs ``"latin1"``).

    Raises ``ValueError`` for unknown suffixes, unknown channel names (with the closest valid name),
    and NaN/Inf samples (naming the file and channel)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EEG file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in MNE_SUFFIXES:
        data, rate, names, ann = _read_mne(path, encoding)
        windowed = {}
    elif suffix in ARRAY_SUFFIXES:
        data, rate, names, ann, windowed = _read_array(path, sfreq, ch_names)
    else:
        raise ValueError(f"{path}: unknown EEG file type {suffix!r}; supported: {', '.join(MNE_SUFFIXES + ARRAY_SUFFIXES)}.")
    if missing_channels not in ("error", "zero"):
        raise ValueError(f"missing_channels must be 'error' or 'zero', got {missing_channels!r}.")
    bad = ~np.isfinite(data)
    if bad.any():
        ch, t = np.argwhere(bad)[0]
        raise ValueError(f"{path}: channel {names[ch]!r} has {int(bad[ch].sum())} NaN/Inf samples (first at sample {t}, "
                         f"{t / rate:.2f} s). Repair or drop the channel (channels=[...]) before training.")
    data = torch.as_tensor(np.ascontiguousarray(data), dtype=torch.float32)
    mask = None
    if channels is not None:
        index = {normalize_channel_name(n): i for i, n in enumerate(names)}
        rows, keep = [], []
        for want in channels:
            i = index.get(normalize_channel_name(want))
            if i is None and missing_channels == "error":
                close = difflib.get_close_matches(normalize_channel_name(want), list(index), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{path}: unknown channel {want!r}.{hint} The recording has {', '.join(index)}. "
                                 "Fix the name or set missing_channels='zero' to zero-fill it.")
            rows.append(data[i] if i is not None else torch.zeros(data.shape[1]))
            keep.append(i is not None)
        data, names = torch.stack(rows), [normalize_channel_name(c) for c in channels]
        mask = torch.tensor(keep)
    else:
        names = [normalize_channel_name(n) for n in names]
    return EEGRecording(data, rate, names, ann, str(path), mask, **windowed)


def preprocess(
    rec: EEGRecording,
    l_freq: float | None = None,
    h_freq: float | None = None,
    resample: float | None = None,
    normalize: str = "none",
    clip: float | None = None,
) -> EEGRecording:
    """Band-pass (``l_freq``-``h_freq`` Hz, 4th-order zero-phase Butterworth), resample to ``resample`` Hz
    (polyphase), normalise every channel over the recording (``zscore``: mean/std; ``robust``:
    median/IQR), then clip to ``[-clip, clip]`` (in the normalised unit). Returns a new recording."""
    from scipy import signal

    if normalize not in NORMALIZATIONS:
        raise ValueError(f"Unknown normalize {normalize!r}; valid: {', '.join(NORMALIZATIONS)}.")
    x = rec.data.double().numpy()
    rate = rec.sfreq
    width = rec.window_samples
    if width is not None:  # windowed arrays: filter and resample every window on its own (no leakage across windows)
        x = x.reshape(x.shape[0], -1, width)
    if l_freq is not None or h_freq is not None:
        nyq = rate / 2
        if (l_freq is not None and l_freq <= 0) or (h_freq is not None and not h_freq < nyq) or (
                l_freq is not None and h_freq is not None and l_freq >= h_freq):
            raise ValueError(f"Band-pass {l_freq}-{h_freq} Hz is invalid at {rate} Hz: need 0 < l_freq < h_freq < {nyq}.")
        if l_freq is not None and h_freq is not None:
            sos = signal.butter(4, [l_freq, h_freq], btype="bandpass", fs=rate, output="sos")
        elif l_freq is not None:
            sos = signal.butter(4, l_freq, btype="highpass", fs=rate, output="sos")
        else:
            sos = signal.butter(4, h_freq, btype="lowpass", fs=rate, output="sos")
        x = signal.sosfiltfilt(sos, x, axis=-1)
    if resample is not None and resample != rate:
        if resample <= 0:
            raise ValueError(f"resample must be > 0 Hz, got {resample}.")
        up, down = _ratio(resample / rate)
        x = signal.resample_poly(x, up, down, axis=-1)
        rate = float(resample)
    if width is not None:
        width = x.shape[-1]
        x = x.reshape(x.shape[0], -1)
    if normalize == "zscore":
        x = (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-8)
    elif normalize == "robust":
        q25, med, q75 = np.percentile(x, [25, 50, 75], axis=1, keepdims=True)
        x = (x - med) / np.maximum(q75 - q25, 1e-8)
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}.")
        x = np.clip(x, -clip, clip)
    return EEGRecording(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32), rate, list(rec.ch_names), list(rec.annotations),
                        rec.source, rec.channel_mask, width, rec.window_labels)


def _ratio(frac: float) -> tuple[int, int]:
    from fractions import Fraction

    f = Fraction(frac).limit_denominator(1000)
    return f.numerator, f.denominator


def make_windows(
    rec: EEGRecording,
    window_s: float,
    stride_s: float | None = None,
    label_map: Mapping[str, int] | None = None,
    straddle: str = "drop",
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut ``rec`` into windows: ``(windows [N, C, W], labels [N] long, starts [N] sample index)``.

    Labels come from the annotations through ``label_map`` (e.g. ``{"T0": 0, "T1": 1, "T2": 2}``); -1 is
    unlabelled. Every annotation description must be in ``label_map`` (when given), else a ValueError
    lists the missing ones. See the module docstring for the straddle rule."""
    if straddle not in STRADDLE_RULES:
        raise ValueError(f"Unknown straddle rule {straddle!r}; valid: {', '.join(STRADDLE_RULES)}.")
    stride_s = window_s if stride_s is None else stride_s
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"window_s and stride_s must be > 0, got {window_s} and {stride_s}.")
    width, step = int(round(window_s * rec.sfreq)), int(round(stride_s * rec.sfreq))
    if rec.window_samples is not None:
        return _stored_windows(rec, width, step, label_map)
    total = rec.data.shape[1]
    if width > total:
        raise ValueError(f"{rec.source}: window of {window_s} s ({width} samples) is longer than the recording "
                         f"({total} samples, {rec.duration_s:.1f} s). Use shorter windows.")
    per_sample = torch.full((total,), -1, dtype=torch.long)
    if label_map is not None:
        unknown = sorted({d for _, _, d in rec.annotations} - set(label_map))
        if unknown:
            raise ValueError(f"{rec.source}: annotation label(s) {unknown} are not in label_map {dict(label_map)}. "
                             "Add them to the mapping.")
        for onset, duration, desc in rec.annotations:
            a = int(round(onset * rec.sfreq))
            b = min(total, int(round((onset + duration) * rec.sfreq)))
            per_sample[a:b] = int(label_map[desc])
    starts = torch.arange(0, total - width + 1, step)
    idx = starts[:, None] + torch.arange(width)
    windows = rec.data[:, idx].permute(1, 0, 2).contiguous()  # [N, C, W]
    lab = per_sample[idx]  # [N, W]
    first = lab[:, 0]
    pure = (lab == first[:, None]).all(1)
    if straddle == "drop":
        keep = pure
        labels = first
    elif straddle == "unlabel":
        keep = torch.ones_like(pure)
        labels = torch.where(pure, first, torch.full_like(first, -1))
    else:
        keep = torch.ones_like(pure)
        values = lab + 1  # shift -1 -> 0 for bincount
        counts = torch.stack([torch.bincount(v, minlength=int(values.max()) + 1) for v in values])
        labels = counts.argmax(1) - 1
    return windows[keep], labels[keep], starts[keep]


def _stored_windows(rec: EEGRecording, width: int, step: int, label_map: Mapping[str, int] | None) -> tuple[Tensor, Tensor, Tensor]:
    """The windows of a windowed array, as stored (labels: class ids, or strings through ``label_map``)."""
    stored = int(rec.window_samples)  # type: ignore[arg-type]
    if width != stored or step != stored:
        raise ValueError(f"{rec.source} holds windows of {stored} samples ({stored / rec.sfreq:g} s at {rec.sfreq:g} Hz), "
                         f"used as stored: set window_s: {stored / rec.sfreq:g} and stride_s: null (got {width} and {step} samples).")
    n = rec.data.shape[1] // stored
    windows = rec.data.reshape(rec.data.shape[0], n, stored).permute(1, 0, 2).contiguous()
    raw = rec.window_labels if rec.window_labels is not None else [-1] * n
    if any(isinstance(v, str) for v in raw):
        if label_map is None:
            raise ValueError(f"{rec.source}: window labels are strings {sorted(set(map(str, raw)))[:5]}; give a label_map "
                             "from them to class ids.")
        unknown = sorted({str(v) for v in raw} - set(label_map))
        if unknown:
            raise ValueError(f"{rec.source}: window label(s) {unknown} are not in label_map {dict(label_map)}. Add them to "
                             "the mapping.")
        raw = [label_map[str(v)] for v in raw]
    labels = torch.tensor(raw, dtype=torch.long)
    if bool((labels < -1).any()):
        raise ValueError(f"{rec.source}: window labels must be class ids >= 0 or -1 (unlabelled), got {sorted(set(raw))[:5]}.")
    return windows, labels, torch.arange(n) * stored


def make_event_windows(
    rec: EEGRecording,
    window_s: float,
    label_map: Mapping[str, int],
    offset_s: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """One window per annotated event (MNE-style epochs): ``window_s`` seconds from ``onset + offset_s``.

    Returns ``(windows [N, C, W], labels [N], starts [N])``. Events whose window would run past the end of
    the recording (or start before it) are skipped; every description must be in ``label_map``."""
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}.")
    unknown = sorted({d for _, _, d in rec.annotations} - set(label_map))
    if unknown:
        raise ValueError(f"{rec.source}: annotation label(s) {unknown} are not in label_map {dict(label_map)}. "
                         "Add them to the mapping.")
    width, total = int(round(window_s * rec.sfreq)), rec.data.shape[1]
    if width > total:
        raise ValueError(f"{rec.source}: window of {window_s} s ({width} samples) is longer than the recording "
                         f"({total} samples, {rec.duration_s:.1f} s). Use shorter windows.")
    starts = [int(round((o + offset_s) * rec.sfreq)) for o, _, _ in rec.annotations]
    keep = [i for i, a in enumerate(starts) if 0 <= a and a + width <= total]
    start_t = torch.tensor([starts[i] for i in keep], dtype=torch.long)
    labels = torch.tensor([int(label_map[rec.annotations[i][2]]) for i in keep], dtype=torch.long)
    idx = start_t[:, None] + torch.arange(width)
    return rec.data[:, idx].permute(1, 0, 2).contiguous(), labels, start_t


def assert_disjoint_recordings(splits: Mapping[str, Sequence[str]]) -> None:
    """Raise if any recording appears in two splits (window-level splits leak neighbouring windows)."""
    seen: dict[str, str] = {}
    for split, recordings in splits.items():
        for r in recordings:
            if r in seen and seen[r] != split:
                raise ValueError(f"Recording {r!r} is in both the {seen[r]!r} and {split!r} splits: split by recording "
                                 "or subject, never by window.")
            seen[r] = split


__all__ = ["EEGRecording", "assert_disjoint_recordings", "make_event_windows", "make_windows", "normalize_channel_name", "preprocess", "read_eeg"]
