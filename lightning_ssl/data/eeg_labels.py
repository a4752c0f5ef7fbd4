"""Label maps per recording: when one annotation code means different things in different recordings.

On the PhysioNet EEG Motor Movement/Imagery Database (EEGMMIDB; Schalk et al. 2004) ``T0`` is rest
everywhere, but ``T1``/``T2`` are left/right fist in runs 3, 4, 7, 8, 11, 12 and both fists/both feet in runs
5, 6, 9, 10, 13, 14 (real movement in runs 3, 5, 7, 9, 11, 13; imagined in the others). One label space
for all runs keeps the tasks apart: :data:`EEGMMIDB_CLASSES`. Runs 1 and 2 (eyes-open / eyes-closed
baselines) carry only ``T0`` and are left unlabelled (-1): they are not the rest between trials.

``label_maps`` in :class:`~lightning_ssl.data.EEGDataModule` is a mapping from a glob pattern on the
recording name (the file stem, e.g. ``"S001R03"``) to a label map, or the name of a preset
(:data:`LABEL_MAP_PRESETS`, e.g. ``"eegmmidb"``). Every recording must match exactly one pattern.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

#: the EEGMMIDB label space: class id = position
EEGMMIDB_CLASSES: tuple[str, ...] = ("rest", "left_fist", "right_fist", "both_fists", "both_feet")

_FISTS_LR = {"T0": 0, "T1": 1, "T2": 2}
_FISTS_FEET = {"T0": 0, "T1": 3, "T2": 4}
#: recording-name pattern -> label map for EEGMMIDB runs 1-14 (file stems ``S<subject>R<run>``)
EEGMMIDB_LABEL_MAPS: dict[str, dict[str, int]] = {
    **{f"S*R{run:02d}": {"T0": -1} for run in (1, 2)},
    **{f"S*R{run:02d}": dict(_FISTS_LR) for run in (3, 4, 7, 8, 11, 12)},
    **{f"S*R{run:02d}": dict(_FISTS_FEET) for run in (5, 6, 9, 10, 13, 14)},
}
LABEL_MAP_PRESETS: dict[str, dict[str, dict[str, int]]] = {"eegmmidb": EEGMMIDB_LABEL_MAPS}


def resolve_label_maps(label_maps: str | Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """A preset name or a ``{pattern: label map}`` mapping -> a checked ``{pattern: label map}`` dict."""
    if isinstance(label_maps, str):
        if label_maps not in LABEL_MAP_PRESETS:
            raise ValueError(f"Unknown label_maps preset {label_maps!r}; presets: {', '.join(LABEL_MAP_PRESETS)} "
                             "(or give {recording pattern: {annotation: class id}}).")
        label_maps = LABEL_MAP_PRESETS[label_maps]
    if not isinstance(label_maps, Mapping) or not label_maps:
        raise ValueError(f"label_maps must map recording-name patterns to label maps, got {label_maps!r}; e.g. "
                         "label_maps: {'S*R03': {T0: 0, T1: 1, T2: 2}} or label_maps: eegmmidb.")
    out = {}
    for pattern, mapping in label_maps.items():
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError(f"label_maps[{pattern!r}] must be a non-empty {{annotation: class id}} mapping, got {mapping!r}.")
        bad = {k: v for k, v in mapping.items() if not isinstance(v, int) or isinstance(v, bool) or v < -1}
        if bad:
            raise ValueError(f"label_maps[{pattern!r}] maps annotations to class ids >= 0 (or -1: unlabelled); got {bad}.")
        out[str(pattern)] = dict(mapping)
    return out


def label_map_for(recording: str, label_maps: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """The label map of ``recording`` (its name, e.g. the file stem): the one pattern it matches."""
    hits = [p for p in label_maps if fnmatchcase(recording, p)]
    if len(hits) != 1:
        what = "no pattern" if not hits else f"several patterns {hits}"
        raise ValueError(f"Recording {recording!r} matches {what} of label_maps ({list(label_maps)}); every recording "
                         "must match exactly one. Add or narrow a pattern, or remove the file.")
    return dict(label_maps[hits[0]])


__all__ = ["EEGMMIDB_CLASSES", "EEGMMIDB_LABEL_MAPS", "LABEL_MAP_PRESETS", "label_map_for", "resolve_label_maps"]
