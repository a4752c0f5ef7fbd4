"""EEG evaluation on frozen features, split by recording.

- :func:`band_power_features`: log band power per channel, the classic feature for motor imagery and
  rest-vs-task decoding (e.g. Pfurtscheller & Lopes da Silva 1999, event-related (de)synchronisation in the
  mu/alpha and beta bands); the non-learned reference next to SSL encoders.
- :func:`evaluate_eeg`: logistic-regression probes (standardised features, fixed ``C``) trained on the
  labelled windows of the training recordings and scored on those of the test recordings
  (:class:`~lightning_ssl.data.EEGDataModule` splits by recording, so train and test never share a run),
  one binary or multi-class task per entry of ``tasks`` (class-id remappings such as
  :data:`EEGMMIDB_TASKS`); features from an encoder (``features="encoder"``) or band power
  (``"band_power"``). Each task reports balanced accuracy, AUROC, window counts per class and chance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

#: theta, alpha (mu) and beta bands in Hz
DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((4.0, 8.0), (8.0, 13.0), (13.0, 30.0))


def band_power_features(windows: Tensor, sfreq: float, bands: Sequence[tuple[float, float]] = DEFAULT_BANDS) -> Tensor:
    """``log`` of the mean periodogram power in each band, per channel: ``[N, C, T] -> [N, C * len(bands)]``
    (channel-major: all bands of channel 0 first). Bands must lie in ``(0, sfreq / 2]`` and contain at
    least one frequency bin of the window."""
    if windows.dim() != 3:
        raise ValueError(f"windows must be [N, C, T], got shape {tuple(windows.shape)}.")
    n, c, t = windows.shape
    freqs = torch.fft.rfftfreq(t, d=1.0 / sfreq, device=windows.device)
    power = torch.fft.rfft(windows.double(), dim=-1).abs().square()
    feats = []
    for low, high in bands:
        if not 0 <= low < high <= sfreq / 2:
            raise ValueError(f"band ({low}, {high}) Hz must satisfy 0 <= low < high <= {sfreq / 2} (Nyquist).")
        sel = (freqs >= low) & (freqs < high)
        if not bool(sel.any()):
            raise ValueError(f"band ({low}, {high}) Hz holds no frequency bin of a {t}-sample window at {sfreq} Hz; "
                             "use longer windows or a wider band.")
        feats.append(power[..., sel].mean(-1).clamp_min(1e-12).log())
    return torch.stack(feats, dim=-1).reshape(n, c * len(bands)).float()


#: probe tasks on the :data:`~lightning_ssl.data.eeg_labels.EEGMMIDB_CLASSES` label space (``label_maps:
#: eegmmidb``): dataset class id -> task class id; windows of other classes are left out of the task
EEGMMIDB_TASKS: dict[str, dict[int, int]] = {
    "rest_vs_movement": {0: 0, 1: 1, 2: 1, 3: 1, 4: 1},
    "left_vs_right_fist": {1: 0, 2: 1},
    "both_fists_vs_feet": {3: 0, 4: 1},
}
FEATURES: tuple[str, ...] = ("encoder", "band_power")


def _task_rows(labels: Tensor, task: Mapping[int, int]) -> tuple[Tensor, Tensor]:
    """Rows of ``labels`` that belong to ``task`` and their task labels."""
    lookup = torch.full((int(max(labels.max().item(), max(task)) + 1),), -1, dtype=torch.long)
    for src, dst in task.items():
        lookup[int(src)] = int(dst)
    mapped = lookup[labels.clamp_min(0)].masked_fill(labels < 0, -1)
    rows = (mapped >= 0).nonzero().flatten()
    return rows, mapped[rows]


def probe_task(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, task: Mapping[int, int],
               C: float = 1.0) -> dict[str, Any]:
    """Logistic-regression probe on one task (``task`` remaps class ids; other windows are left out).

    Returns :func:`~lightning_ssl.evaluation.linear_probe`'s keys plus ``train_per_class`` /
    ``test_per_class`` window counts and ``chance`` (balanced accuracy of a constant guess: 1 / classes),
    or ``{"skipped": reason, ...counts}`` when a class is missing from the training or test windows."""
    from lightning_ssl.evaluation.linear import linear_probe

    if not task or any(not isinstance(k, int) or k < 0 for k in task) or any(int(v) < 0 for v in task.values()):
        raise ValueError(f"task must map class ids >= 0 to task ids >= 0, got {dict(task)}.")
    if train_y.numel() == 0 or test_y.numel() == 0:
        raise ValueError(f"probe_task needs labelled windows on both sides, got {train_y.numel()} training and "
                         f"{test_y.numel()} test labels.")
    tr, ytr = _task_rows(train_y, task)
    te, yte = _task_rows(test_y, task)
    n_cls = max(task.values()) + 1
    counts = {"train_per_class": torch.bincount(ytr, minlength=n_cls).tolist(),
              "test_per_class": torch.bincount(yte, minlength=n_cls).tolist()}
    if min(counts["train_per_class"]) == 0 or min(counts["test_per_class"]) == 0:
        return {"skipped": "a task class has no window in the training or test recordings", **counts}
    out = linear_probe(train_x[tr], ytr, test_x[te], yte, C=C)
    return {**out, **counts, "chance": 1.0 / n_cls, "C": float(C)}


def evaluate_eeg(
    model: nn.Module | None,
    datamodule: Any,
    tasks: Mapping[str, Mapping[int, int]] | None = None,
    features: str = "encoder",
    C: float = 1.0,
    device: torch.device | str | None = None,
) -> dict[str, dict[str, Any]]:
    """Probe frozen features of ``datamodule``'s labelled training windows against its test recordings.

    ``model``: a method (its ``encoder`` is used) or an encoder; ignored for ``features="band_power"``.
    ``tasks``: name -> class remapping (default: ``"all_classes"``, one task over the classes that have
    windows in both the training and the test recordings). The test split must be set (``test_recordings``
    or ``test_fraction``) and both splits must hold labelled windows."""
    from lightning_ssl.evaluation.features import extract_features

    if features not in FEATURES:
        raise ValueError(f"Unknown features {features!r}; valid: {', '.join(FEATURES)}.")
    datamodule.setup("fit")
    if datamodule.num_classes is None:
        raise ValueError("evaluate_eeg needs labelled windows: set the datamodule's label_map or label_maps.")
    if datamodule.splits["test"].numel() == 0:
        raise ValueError("evaluate_eeg scores held-out recordings: set test_recordings (e.g. [S001R06]) or test_fraction.")
    for split in ("train", "test"):
        labels = datamodule.labels[datamodule.splits[split]]
        if not bool((labels >= 0).any()):
            raise ValueError(f"The {split} recordings {datamodule.split_groups[split]} have no labelled window (every "
                             "window is unlabelled or straddles two events): choose recordings with annotated events, "
                             "check label_map / label_maps, or use shorter windows.")
    if tasks is not None:
        bad = {name: [k for k in t if not isinstance(k, int) or not 0 <= k < datamodule.num_classes] for name, t in tasks.items()}
        bad = {name: keys for name, keys in bad.items() if keys}
        if bad:
            raise ValueError(f"Task class ids must be dataset classes 0..{datamodule.num_classes - 1}; unknown: {bad}.")
    loaders = (datamodule.labelled_train_dataloader(), datamodule.test_dataloader())
    if features == "band_power":
        sets = [(band_power_features(torch.cat([b.views[0] for b in dl]), datamodule.sfreq), torch.cat([b.target for b in dl]))
                for dl in loaders]
    else:
        if model is None:
            raise ValueError("features='encoder' needs a model (a method or an encoder).")
        encoder = getattr(model, "encoder", model)
        sets = [extract_features(encoder, dl, device) for dl in loaders]
    (train_x, train_y), (test_x, test_y) = sets
    if tasks is None:
        shared = sorted(set(train_y.tolist()) & set(test_y.tolist()))
        tasks = {"all_classes": {c: i for i, c in enumerate(shared)}}
        if len(shared) < 2:
            return {"all_classes": {"skipped": f"fewer than two classes ({shared}) have windows in both the training "
                                               "and the test recordings"}}
    return {name: probe_task(train_x, train_y, test_x, test_y, task, C=C) for name, task in tasks.items()}


def main(argv: list[str] | None = None) -> int:
    """``lightning-ssl evaluate-eeg --config CFG [--ckpt CKPT] [--features encoder,band_power] [--tasks auto]``;
    further ``--key value`` arguments override the config as in ``lightning-ssl fit`` (e.g.
    ``--data.init_args.test_recordings '[S001R06]'``)."""
    from lightning_ssl.evaluation.cli_common import evaluation_parser, load_from_config, report

    parser = evaluation_parser("lightning-ssl evaluate-eeg", main.__doc__, "the training config (configs/eeg/...yaml)")
    parser.add_argument("--features", default="encoder,band_power", help=f"comma-separated, from {', '.join(FEATURES)}")
    parser.add_argument("--tasks", default="auto", help="'eegmmidb' (EEGMMIDB_TASKS: needs label_maps: eegmmidb), 'all' "
                        "(one task over the classes in both splits) or 'auto' (eegmmidb with that preset, else all)")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    args, overrides = parser.parse_known_args(argv)
    kinds = [f for f in args.features.split(",") if f]
    unknown = [f for f in kinds if f not in FEATURES]
    if unknown or args.tasks not in ("eegmmidb", "all", "auto"):
        parser.error(f"Unknown features {unknown} or tasks {args.tasks!r}; features: {', '.join(FEATURES)}; tasks: auto, "
                     "eegmmidb, all.")
    cli = load_from_config(parser, args, overrides)
    from lightning_ssl.data.eeg_labels import EEGMMIDB_LABEL_MAPS

    preset = getattr(cli.datamodule, "label_maps", None) == EEGMMIDB_LABEL_MAPS
    if args.tasks == "eegmmidb" and not preset:
        parser.error("--tasks eegmmidb needs the datamodule's label_maps: eegmmidb (its class ids); use --tasks all.")
    tasks = EEGMMIDB_TASKS if args.tasks == "eegmmidb" or (args.tasks == "auto" and preset) else None
    report({kind: evaluate_eeg(cli.model, cli.datamodule, tasks, features=kind, C=args.C) for kind in kinds}, args.out)
    return 0


__all__ = ["DEFAULT_BANDS", "EEGMMIDB_TASKS", "FEATURES", "band_power_features", "evaluate_eeg", "probe_task"]
