"""EEG SSL data: windows of continuous recordings (EDF/BDF/GDF/FIF/BrainVision through MNE, NumPy arrays),
split by recording or subject, with augmented views made on the device.

Files: ``files`` (a list of paths) or ``root`` + ``pattern`` (a glob, default ``"**/*.edf"``, sorted).
Each file is read by :func:`lightning_ssl.data.eeg_io.read_eeg` (EEG channels only, in **microvolts**;
``.npy``/``.npz`` arrays, continuous ``[C, T]`` or windowed ``[N, C, W]`` (used as stored: ``window_s`` must be
``W / sfreq`` and ``stride_s`` unset; a ``.npz`` may carry ``labels [N]``, class ids or strings mapped through
``label_map``), are taken to be microvolts already, at ``array_sfreq`` Hz unless a
``.npz`` stores its own ``sfreq``). ``channels`` selects and orders channels by name (``"Fc5."`` matches
``"FC5"``); a missing channel is an error (``missing_channels="error"``) or zero-filled (``"zero"``).
Without ``channels`` every recording must have the same channel names in the same order.

Preprocessing (:func:`~lightning_ssl.data.eeg_io.preprocess`, per recording): band-pass ``l_freq``-
``h_freq`` Hz (zero-phase Butterworth), resampling to ``sfreq`` Hz (polyphase), normalisation per
recording and channel over the whole recording (``normalize``: ``"zscore"`` (default), ``"robust"``:
median/IQR, or ``"none"``: microvolts), then clipping to ``[-clip, clip]`` in the normalised unit.
Sampling rates: with ``sfreq`` set every recording is resampled to it; with ``sfreq=None`` all
recordings must share one rate, else a ValueError lists the files per rate and asks for ``sfreq``.

Windows (:func:`~lightning_ssl.data.eeg_io.make_windows`): ``window_s`` seconds (``num_samples =
round(window_s * sfreq)``) every ``stride_s`` seconds (default ``window_s``: no overlap), from sample 0
of each recording; the tail shorter than a window is not used. Labels come from the annotations
through ``label_map`` (e.g. ``{"T0": 0, "T1": 1, "T2": 1}``: rest vs movement on EEGMMIDB; a value of
-1 makes an annotation count as unlabelled). A window inside one event takes its label; a window that
covers no event is unlabelled (-1); **straddle rule**: a window that covers two different labels (or
an event and unlabelled signal) is dropped (``straddle="drop"``, default) or takes the label of most of
its samples (``"majority"``, unlabelled time counting as the label -1). Without ``label_map`` every
window is unlabelled. When annotation codes mean different things in different recordings (EEGMMIDB: T1/T2
are left/right fist in runs 3/4 and fists/feet in runs 5/6), give ``label_maps`` instead: a glob pattern on
the recording name -> label map, or a preset name (``"eegmmidb"``: :data:`~lightning_ssl.data.eeg_labels.
EEGMMIDB_LABEL_MAPS`, classes :data:`~lightning_ssl.data.eeg_labels.EEGMMIDB_CLASSES`); every recording must
match exactly one pattern. ``straddle="unlabel"`` keeps straddling windows as unlabelled (-1): pretraining
sees every window, probes only the clean ones. A window longer than a recording, an annotation missing from ``label_map`` and
NaN/Inf samples raise ValueErrors from :mod:`~lightning_ssl.data.eeg_io` that name the file.
A single ``label_map`` on EEGMMIDB is only meaningful when it maps T1/T2 the same way in every run (rest vs
movement); use ``label_maps: eegmmidb`` otherwise.

**Split rule**: whole recordings (``split_by="recording"``: the group is the file stem, or, where stems
repeat across folders, the path relative to the files' common folder without suffix, e.g.
``"SA/run1"``) or whole
subjects (``split_by="subject"``: the group is the name of the file's parent folder) go to one split,
never single windows, so no window (nor an overlapping neighbour) of a validation or test recording is
seen in training. ``val_recordings`` / ``test_recordings`` name the groups (stems or subject names)
explicitly; a split without a list takes ``round(n * fraction)`` (at least 1 when the fraction is > 0) of
the remaining groups, drawn with ``split_seed`` (test first, then validation). Every other group is
training; no training group left is an error. ``setup`` asserts that no file and no window's recording
id is in two splits.

Batches: ``SSLBatch(views=[x [B, C, T]], target=labels [B], index=window ids [B])`` (``x`` float32).
Training batches carry every training window (also unlabelled ones, -1) when
``train_on_unlabelled=True`` (pretraining), else only labelled ones, and get one augmented view per
entry of ``views`` in ``on_after_batch_transfer`` on the device (:func:`apply_eeg_view`; default
:data:`~lightning_ssl.data.eeg_views.DEFAULT_EEG_VIEWS`). Validation, test and
:meth:`EEGDataModule.labelled_train_dataloader` batches carry one clean view of the **labelled**
windows (label >= 0) only: without ``label_map`` they are empty.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.data.eeg_io import (
    NORMALIZATIONS,
    STRADDLE_RULES,
    EEGRecording,
    assert_disjoint_recordings,
    make_windows,
    preprocess,
    read_eeg,
)
from lightning_ssl.data.eeg_labels import label_map_for, resolve_label_maps
from lightning_ssl.data.eeg_views import DEFAULT_EEG_VIEWS, EEGView, apply_eeg_view
from lightning_ssl.data.image import collate_views

SPLIT_BY: tuple[str, ...] = ("recording", "subject")


def _recording_names(paths: list[Path]) -> list[str]:
    """File stems; where stems repeat (``SA/run1.edf``, ``SB/run1.edf``), every name is the path relative
    to the files' common folder, without suffix (``"SA/run1"``)."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    base = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    return [p.resolve().relative_to(base).with_suffix("").as_posix() for p in paths]


class _Windows(Dataset):
    """``(windows[j], labels[j], j)`` for the window ids ``indices`` (for :func:`collate_views`)."""

    def __init__(self, windows: Tensor, labels: Tensor, indices: Tensor) -> None:
        self.windows, self.labels, self.indices = windows, labels, indices

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        j = int(self.indices[i])
        return self.windows[j], self.labels[j], j


class EEGDataModule(L.LightningDataModule):
    """Windows of EEG recordings for SSL pretraining and evaluation (rules: module docstring).

    Args:
        files: recording paths; or ``root`` + ``pattern`` (glob below ``root``, sorted).
        channels: channel names to keep, in this order (default: all, identical in every file).
        missing_channels: ``"error"`` or ``"zero"`` (zero-filled).
        sfreq: resampling target in Hz (default: the common rate of the files).
        l_freq, h_freq: band-pass edges in Hz (``None``: no filter on that side).
        normalize: ``"zscore"``, ``"robust"`` or ``"none"`` (per recording and channel).
        clip: clip normalised values to ``[-clip, clip]``.
        window_s, stride_s: window length and hop in seconds (hop default: ``window_s``).
        label_map: annotation description -> class id (``-1``: unlabelled); ``None``: no labels.
        label_maps: per-recording label maps (``{glob on the recording name: label map}``) or a preset name
            (``"eegmmidb"``); exclusive with ``label_map``.
        straddle: ``"drop"``, ``"majority"`` or ``"unlabel"`` for windows covering several labels.
        split_by: ``"recording"`` (file stem) or ``"subject"`` (parent folder name).
        val_recordings, test_recordings: the stems / subjects of those splits.
        val_fraction, test_fraction: fractions of the groups for splits without an explicit list.
        split_seed: seed of the fraction split.
        batch_size, num_workers, pin_memory: DataLoader settings.
        views: training views, one :class:`EEGView` each (default :data:`DEFAULT_EEG_VIEWS`).
        train_on_unlabelled: train on every window (True) or only on labelled ones.
        array_sfreq, array_ch_names: sampling rate and channel names of ``.npy`` arrays (a ``.npz`` may
            carry ``sfreq`` and ``ch_names``).
    """

    def __init__(
        self,
        files: list[str] | None = None,
        root: str | None = None,
        pattern: str = "**/*.edf",
        channels: list[str] | None = None,
        missing_channels: str = "error",
        sfreq: float | None = None,
        l_freq: float | None = None,
        h_freq: float | None = None,
        normalize: str = "zscore",
        clip: float | None = None,
        window_s: float = 4.0,
        stride_s: float | None = None,
        label_map: dict[str, int] | None = None,
        label_maps: dict[str, dict[str, int]] | str | None = None,
        straddle: str = "drop",
        split_by: str = "recording",
        val_recordings: list[str] | None = None,
        test_recordings: list[str] | None = None,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        views: list[EEGView] | None = None,
        train_on_unlabelled: bool = True,
        array_sfreq: float | None = None,
        array_ch_names: list[str] | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if (files is None) == (root is None):
            raise ValueError("EEGDataModule needs exactly one of `files` (a list of recordings) or `root` (a folder, "
                             f"with pattern={pattern!r}); got files={files!r}, root={root!r}.")
        if files is not None and not files:
            raise ValueError("`files` is empty: list at least one recording.")
        if missing_channels not in ("error", "zero"):
            raise ValueError(f"missing_channels must be 'error' or 'zero', got {missing_channels!r}.")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"Unknown normalize {normalize!r}; valid: {', '.join(NORMALIZATIONS)}.")
        if straddle not in STRADDLE_RULES:
            raise ValueError(f"Unknown straddle rule {straddle!r}; valid: {', '.join(STRADDLE_RULES)}.")
        if split_by not in SPLIT_BY:
            raise ValueError(f"split_by must be one of {SPLIT_BY} (whole recordings or whole subjects), got {split_by!r}.")
        if not window_s > 0 or (stride_s is not None and not stride_s > 0):
            raise ValueError(f"window_s ({window_s}) and stride_s ({stride_s}) must be > 0 seconds.")
        if sfreq is not None and not sfreq > 0:
            raise ValueError(f"sfreq must be > 0 Hz (the resampling target) or null, got {sfreq}.")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) and sum "
                             "to less than 1 (the rest is the training split); e.g. val_fraction: 0.2.")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size ({batch_size}) must be >= 1 and num_workers ({num_workers}) >= 0.")
        if label_map is not None:
            bad = {k: v for k, v in label_map.items() if not isinstance(v, int) or isinstance(v, bool) or v < -1}
            if bad or not label_map:
                raise ValueError(f"label_map maps annotation descriptions to class ids >= 0 (or -1: unlabelled); "
                                 f"got {label_map!r}. E.g. label_map: {{T0: 0, T1: 1, T2: 1}}.")
        if label_map is not None and label_maps is not None:
            raise ValueError("Give label_map (one map for every recording) or label_maps (per recording), not both.")
        self.label_maps = None if label_maps is None else resolve_label_maps(label_maps)
        for name, names in (("val_recordings", val_recordings), ("test_recordings", test_recordings)):
            if names is not None and (isinstance(names, str) or len(set(names)) != len(names)):
                raise ValueError(f"{name} must be a list of distinct recording stems / subject names, got {names!r}.")
        views = list(DEFAULT_EEG_VIEWS) if views is None else list(views)
        if not views:
            raise ValueError("views must list at least one EEGView.")
        self.views = [v if isinstance(v, EEGView) else EEGView(**v) for v in views]
        self.files = None if files is None else [str(f) for f in files]
        self.root, self.pattern = root, pattern
        self.channels = None if channels is None else list(channels)
        self.missing_channels = missing_channels
        self._sfreq = None if sfreq is None else float(sfreq)
        self.l_freq, self.h_freq, self.normalize, self.clip = l_freq, h_freq, normalize, clip
        self.window_s, self.stride_s = float(window_s), None if stride_s is None else float(stride_s)
        self.label_map = None if label_map is None else dict(label_map)
        self.straddle, self.split_by = straddle, split_by
        self.val_recordings = None if val_recordings is None else list(val_recordings)
        self.test_recordings = None if test_recordings is None else list(test_recordings)
        self.val_fraction, self.test_fraction, self.split_seed = float(val_fraction), float(test_fraction), int(split_seed)
        self._batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), pin_memory
        self.train_on_unlabelled = bool(train_on_unlabelled)
        self.array_sfreq = array_sfreq
        self.array_ch_names = None if array_ch_names is None else list(array_ch_names)
        # filled by setup
        self.paths: list[Path] = []
        self.recordings: list[str] = []  #: one name (file stem) per file; window ``recording`` ids index it
        self.groups: list[str] = []  #: the split group of each file (stem or subject)
        self.ch_names: list[str] = []
        self.windows: Tensor | None = None  #: [N, C, W] float32
        self.labels: Tensor | None = None  #: [N] long, -1 = unlabelled
        self.recording: Tensor | None = None  #: [N] file index of every window
        self.starts: Tensor | None = None  #: [N] first sample of every window in its (resampled) recording
        self.split_groups: dict[str, list[str]] = {}
        self.splits: dict[str, Tensor] = {}  #: split -> window ids

    # ------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def sfreq(self) -> float:
        """Sampling rate of the windows in Hz (reads the files when ``sfreq`` was not given)."""
        if self._sfreq is None:
            self.setup()
        return float(self._sfreq)  # type: ignore[arg-type]

    @property
    def num_channels(self) -> int:
        if self.channels is not None:
            return len(self.channels)
        self.setup()
        return len(self.ch_names)

    @property
    def num_samples(self) -> int:
        """Window length in samples: ``round(window_s * sfreq)``."""
        return int(round(self.window_s * self.sfreq))

    @property
    def num_classes(self) -> int | None:
        """``max(class id) + 1`` over ``label_map`` / ``label_maps``, or ``None`` without labels."""
        maps = [self.label_map] if self.label_map is not None else list((self.label_maps or {}).values())
        ids = [v for m in maps for v in m.values()]
        return max(ids) + 1 if ids and max(ids) >= 0 else None

    # ------------------------------------------------------------------ preparation
    def _find_files(self) -> list[Path]:
        if self.files is not None:
            paths = [Path(f).expanduser() for f in self.files]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"EEG file(s) not found: {missing}.")
            if len(set(p.resolve() for p in paths)) != len(paths):
                raise ValueError(f"`files` lists a recording twice: {self.files}.")
            return paths
        root = Path(self.root).expanduser()  # type: ignore[arg-type]
        if not root.is_dir():
            raise FileNotFoundError(f"EEG root {str(root)!r} does not exist (or is not a folder).")
        paths = sorted(p for p in root.glob(self.pattern) if p.is_file())
        if not paths:
            raise FileNotFoundError(f"No files match pattern {self.pattern!r} under {root}; e.g. pattern: '**/*.edf' or "
                                    "'**/*.npz'.")
        return paths

    def _read(self, paths: list[Path]) -> list[EEGRecording]:
        recs = [read_eeg(p, channels=self.channels, missing_channels=self.missing_channels, sfreq=self.array_sfreq,
                         ch_names=self.array_ch_names) for p in paths]
        if self.channels is None:
            first = recs[0].ch_names
            for r in recs[1:]:
                if r.ch_names != first:
                    raise ValueError(f"{r.source} has channels {r.ch_names} but {recs[0].source} has {first}: recordings "
                                     "differ in their channels. Set channels=[...] to select and order a common set.")
        rates = sorted({r.sfreq for r in recs})
        if self._sfreq is None and len(rates) > 1:
            by_rate = {rate: [r.source for r in recs if r.sfreq == rate] for rate in rates}
            listing = "; ".join(f"{rate:g} Hz: {files}" for rate, files in by_rate.items())
            raise ValueError(f"Recordings have different sampling rates ({listing}). Set sfreq (e.g. sfreq: {rates[0]:g}) "
                             "to resample them all to one rate.")
        return recs

    def _assign_splits(self) -> dict[str, list[str]]:
        names = sorted(set(self.groups))
        explicit = {"test": self.test_recordings, "val": self.val_recordings}
        kind = "recording stems" if self.split_by == "recording" else "subject names (parent folders)"
        for split, wanted in explicit.items():
            unknown = [w for w in (wanted or []) if w not in names]
            if unknown:
                close = difflib.get_close_matches(unknown[0], names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{split}_recordings names unknown {kind} {unknown}.{hint} split_by={self.split_by!r} "
                                 f"knows: {names}.")
        assert_disjoint_recordings({s: v for s, v in explicit.items() if v})
        taken = {w for v in explicit.values() for w in (v or [])}
        rest = [n for n in names if n not in taken]
        g = torch.Generator().manual_seed(self.split_seed)
        rest = [rest[i] for i in torch.randperm(len(rest), generator=g).tolist()]
        out: dict[str, list[str]] = {}
        for split, fraction in (("test", self.test_fraction), ("val", self.val_fraction)):
            if explicit[split] is not None:
                out[split] = list(explicit[split])  # type: ignore[arg-type]
                continue
            k = 0 if fraction == 0 else max(1, int(math.floor(len(names) * fraction + 0.5)))
            out[split], rest = rest[:k], rest[k:]
        out["train"] = rest
        if not rest:
            raise ValueError(f"No {self.split_by} is left for training: {len(names)} group(s) {names}, validation "
                             f"{sorted(out['val'])}, test {sorted(out['test'])}. Lower val_fraction/test_fraction "
                             "(or shorten val_recordings/test_recordings), or add recordings.")
        return {s: sorted(out[s]) for s in ("train", "val", "test")}

    def setup(self, stage: str | None = None) -> None:
        if self.windows is not None:
            return
        paths = self._find_files()
        names = _recording_names(paths)
        label_maps = [self.label_map if self.label_maps is None else label_map_for(n, self.label_maps) for n in names]
        recs = self._read(paths)
        self._sfreq = self._sfreq if self._sfreq is not None else recs[0].sfreq
        self.paths = paths
        self.recordings = names
        self.groups = list(self.recordings) if self.split_by == "recording" else [p.parent.name for p in paths]
        self.ch_names = list(recs[0].ch_names)
        windows, labels, rec_ids, starts = [], [], [], []
        for i, rec in enumerate(recs):
            rec = preprocess(rec, l_freq=self.l_freq, h_freq=self.h_freq, resample=self._sfreq, normalize=self.normalize,
                             clip=self.clip)
            w, lab, st = make_windows(rec, self.window_s, self.stride_s, label_maps[i], self.straddle)
            windows.append(w)
            labels.append(lab)
            starts.append(st)
            rec_ids.append(torch.full((lab.numel(),), i, dtype=torch.long))
            recs[i] = None  # type: ignore[call-overload]  # free the raw signal early
        self.split_groups = self._assign_splits()
        self.windows, self.labels = torch.cat(windows), torch.cat(labels)
        self.recording, self.starts = torch.cat(rec_ids), torch.cat(starts)
        split_id = {g: k for k, s in enumerate(("train", "val", "test")) for g in self.split_groups[s]}
        group_of = torch.tensor([split_id[g] for g in self.groups], dtype=torch.long)  # split of every file
        split_of_window = group_of[self.recording]
        self.splits = {s: (split_of_window == k).nonzero().flatten() for k, s in enumerate(("train", "val", "test"))}
        # leakage guards: files, groups and the recording id of every window are in exactly one split
        files_per_split = {s: [str(p.resolve()) for p, g in zip(paths, self.groups) if g in self.split_groups[s]]
                           for s in self.splits}
        assert_disjoint_recordings(self.split_groups)
        assert_disjoint_recordings(files_per_split)
        seen: dict[int, str] = {}
        for s, idx in self.splits.items():
            for r in torch.unique(self.recording[idx]).tolist():
                if r in seen:
                    raise AssertionError(f"Recording {self.recordings[r]!r} has windows in both the {seen[r]!r} and {s!r} "
                                         "splits (internal error: splits must be by recording).")
                seen[r] = s
        if self.splits["train"].numel() == 0:
            raise ValueError(f"The training recordings {self.split_groups['train']} yield no windows (window_s="
                             f"{self.window_s}, straddle={self.straddle!r}); use shorter windows or straddle='majority' / 'unlabel'.")

    # ------------------------------------------------------------------ checks
    def check_encoder(self, encoder: Any, extra_hops: int = 0) -> None:
        """Called by the method's ``setup``: the encoder's ``in_channels`` and (if it has one)
        ``num_samples`` must match the windows."""
        in_ch = getattr(encoder, "in_channels", None)
        if isinstance(in_ch, int) and not isinstance(in_ch, bool) and in_ch != self.num_channels:
            raise ValueError(f"Channel mismatch: the EEG windows have {self.num_channels} channel(s) but the encoder "
                             f"{type(encoder).__name__} was built with in_channels={in_ch}; set "
                             f"model.init_args.encoder.init_args.in_channels: {self.num_channels} (or change data.channels).")
        n = getattr(encoder, "num_samples", None)
        if isinstance(n, int) and not isinstance(n, bool) and n != self.num_samples:
            raise ValueError(f"Window length mismatch: the EEG windows have {self.num_samples} samples (window_s="
                             f"{self.window_s} s at {self.sfreq:g} Hz) but the encoder {type(encoder).__name__} expects "
                             f"num_samples={n}; set model.init_args.encoder.init_args.num_samples: {self.num_samples} "
                             "(or change data.window_s / data.sfreq).")

    # ------------------------------------------------------------------ loaders
    def _indices(self, split: str, labelled_only: bool) -> Tensor:
        self.setup()
        idx = self.splits[split]
        return idx[self.labels[idx] >= 0] if labelled_only else idx  # type: ignore[index]

    def _loader(self, idx: Tensor, train: bool = False) -> DataLoader:
        ds = _Windows(self.windows, self.labels, idx)  # type: ignore[arg-type]
        return DataLoader(ds, batch_size=self._batch_size, shuffle=train, drop_last=train and len(ds) >= self._batch_size,
                          collate_fn=collate_views, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training windows (all, or the labelled ones with ``train_on_unlabelled=False``)."""
        return self._loader(self._indices("train", not self.train_on_unlabelled), train=True)

    def val_dataloader(self) -> DataLoader:
        """Clean labelled windows of the validation recordings."""
        return self._loader(self._indices("val", True))

    def test_dataloader(self) -> DataLoader:
        """Clean labelled windows of the test recordings."""
        return self._loader(self._indices("test", True))

    def labelled_train_dataloader(self) -> DataLoader:
        """Clean labelled training windows, in order (the probes' training set)."""
        return self._loader(self._indices("train", True))

    def predict_dataloader(self) -> DataLoader:
        """Every window (all splits, labelled or not), clean, in order."""
        self.setup()
        return self._loader(torch.arange(self.labels.numel()))  # type: ignore[union-attr]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if not (isinstance(batch, SSLBatch) and trainer is not None and trainer.training and len(batch.views) == 1):
            return batch
        raw = batch.views[0]
        batch.views = [apply_eeg_view(raw, v, self.sfreq) for v in self.views]
        return batch


__all__ = ["EEGDataModule", "SPLIT_BY"]
