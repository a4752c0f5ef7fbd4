"""Per-run label maps (EEGMMIDB's T1/T2 mean different tasks in runs 3/4 and 5/6), the ``unlabel`` straddle rule,
and the EEG probe evaluation (``evaluate_eeg``, ``probe_task``) on the real recordings in ../shared/data/eegmmidb."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_ssl.data.eeg import EEGDataModule
from lightning_ssl.data.eeg_io import EEGRecording, make_windows
from lightning_ssl.data.eeg_labels import EEGMMIDB_CLASSES, EEGMMIDB_LABEL_MAPS, label_map_for, resolve_label_maps
from lightning_ssl.encoders.eeg import ShallowConvNetEncoder
from lightning_ssl.evaluation.eeg import EEGMMIDB_TASKS, evaluate_eeg, probe_task

EEGMMIDB = Path(__file__).resolve().parents[3] / "shared" / "data" / "eegmmidb"
RUNS = [EEGMMIDB / "S001" / f"S001R0{r}.edf" for r in (3, 4, 5, 6)]


@pytest.fixture(scope="module")
def dm() -> EEGDataModule:
    assert all(p.is_file() for p in RUNS), f"real data missing under {EEGMMIDB}"
    d = EEGDataModule(files=[str(p) for p in RUNS], label_maps="eegmmidb", straddle="unlabel", window_s=2.0,
                      stride_s=1.0, test_recordings=["S001R06"], batch_size=64)
    d.setup()
    return d


def test_eegmmidb_preset_maps_tasks_per_run() -> None:
    assert label_map_for("S001R03", EEGMMIDB_LABEL_MAPS) == {"T0": 0, "T1": 1, "T2": 2}
    assert label_map_for("S042R10", EEGMMIDB_LABEL_MAPS) == {"T0": 0, "T1": 3, "T2": 4}
    assert label_map_for("S001R01", EEGMMIDB_LABEL_MAPS) == {"T0": -1}  # eyes-open baseline: not trial rest
    assert EEGMMIDB_CLASSES[1:3] == ("left_fist", "right_fist") and len(EEGMMIDB_CLASSES) == 5
    assert resolve_label_maps("eegmmidb") == EEGMMIDB_LABEL_MAPS


def test_label_maps_on_real_runs(dm: EEGDataModule) -> None:
    assert dm.num_classes == 5
    for rec, present in (("S001R03", {0, 1, 2}), ("S001R05", {0, 3, 4}), ("S001R06", {0, 3, 4})):
        i = dm.recordings.index(rec)
        labels = set(dm.labels[dm.recording == i].tolist()) - {-1}
        assert labels == present, (rec, labels)
    # straddle="unlabel": every window of the 125 s runs is kept (2 s every 1 s: 124 per run), straddlers get -1
    assert dm.labels.numel() == 4 * 124
    assert 0 < int((dm.labels == -1).sum()) < dm.labels.numel() // 2


def test_unlabel_rule_keeps_straddling_windows_unlabelled() -> None:
    rec = EEGRecording(torch.zeros(1, 100), 10.0, ["C3"], [(0.0, 5.0, "A"), (5.0, 5.0, "B")], "toy")
    _, labels, starts = make_windows(rec, 2.0, 1.0, {"A": 0, "B": 1}, straddle="unlabel")
    assert starts.tolist() == list(range(0, 81, 10))
    assert labels.tolist() == [0, 0, 0, 0, -1, 1, 1, 1, 1]
    _, dropped, _ = make_windows(rec, 2.0, 1.0, {"A": 0, "B": 1}, straddle="drop")
    assert dropped.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_label_maps_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        EEGDataModule(files=[str(RUNS[0])], label_map={"T0": 0}, label_maps="eegmmidb")
    with pytest.raises(ValueError, match="Unknown label_maps preset 'physionet'"):
        EEGDataModule(files=[str(RUNS[0])], label_maps="physionet")
    with pytest.raises(ValueError, match=r"class ids >= 0 \(or -1"):
        resolve_label_maps({"S*": {"T0": -2}})
    with pytest.raises(ValueError, match="matches no pattern"):
        EEGDataModule(files=[str(RUNS[0])], label_maps={"S*R05": {"T0": 0, "T1": 1, "T2": 2}}).setup()
    with pytest.raises(ValueError, match="several patterns"):
        label_map_for("S001R03", {"S001*": {"T0": 0}, "*R03": {"T0": 0}})


def test_probe_task_counts_chance_and_skips() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 2, 3, 4] * 20)
    x = torch.randn(100, 3, generator=g) + torch.nn.functional.one_hot(y, 5)[:, :3].float() * 3
    r = probe_task(x, y, x, y, {1: 0, 2: 1})
    assert r["train_per_class"] == [20, 20] and r["chance"] == 0.5 and r["balanced_acc"] > 0.9
    skipped = probe_task(x, y, x[y != 2], y[y != 2], {1: 0, 2: 1})
    assert "skipped" in skipped and skipped["test_per_class"] == [20, 0]
    with pytest.raises(ValueError, match="task ids >= 0"):
        probe_task(x, y, x, y, {1: -1})
    with pytest.raises(ValueError, match="class ids >= 0"):
        probe_task(x, y, x, y, {-1: 0, 1: 1})  # -1 would index the last class


def test_evaluate_eeg_band_power_and_encoder(dm: EEGDataModule) -> None:
    bp = evaluate_eeg(None, dm, EEGMMIDB_TASKS, features="band_power")
    assert "skipped" in bp["left_vs_right_fist"]  # run 6 (held out) is fists vs feet
    rest = bp["rest_vs_movement"]
    assert rest["test_per_class"][0] > 0 and rest["n_test"] == sum(rest["test_per_class"]) and rest["chance"] == 0.5
    assert 0.0 <= rest["balanced_acc"] <= 1.0 and 0.0 <= rest["auroc"] <= 1.0
    torch.manual_seed(0)
    enc = ShallowConvNetEncoder(64, 320, pooling="mean")
    feats = evaluate_eeg(enc, dm, EEGMMIDB_TASKS)
    assert feats["rest_vs_movement"]["n_test"] == rest["n_test"]
    assert feats["both_fists_vs_feet"]["train_per_class"] == bp["both_fists_vs_feet"]["train_per_class"]
    all_classes = evaluate_eeg(enc, dm)["all_classes"]  # the classes of both sides: rest, both fists, both feet
    assert len(all_classes["train_per_class"]) == 3 and all_classes["chance"] == pytest.approx(1 / 3)
    assert all_classes["n_test"] == sum(dm.labels[dm.splits["test"]] >= 0)
    with pytest.raises(ValueError, match="Unknown features"):
        evaluate_eeg(enc, dm, features="wavelets")
    with pytest.raises(ValueError, match="needs a model"):
        evaluate_eeg(None, dm)
    with pytest.raises(ValueError, match=r"dataset classes 0..4; unknown: \{'bad': \[7\]\}"):
        evaluate_eeg(None, dm, {"bad": {7: 0, 0: 1}}, features="band_power")


def test_evaluate_eeg_needs_labels_and_a_test_split() -> None:
    no_test = EEGDataModule(files=[str(p) for p in RUNS[:2]], label_maps="eegmmidb", window_s=2.0)
    with pytest.raises(ValueError, match="set test_recordings"):
        evaluate_eeg(None, no_test, features="band_power")
    unlabelled = EEGDataModule(files=[str(p) for p in RUNS[:2]], window_s=2.0, test_recordings=["S001R04"])
    with pytest.raises(ValueError, match="label_map or label_maps"):
        evaluate_eeg(None, unlabelled, features="band_power")
    silent = {"S001R03": {"T0": 0, "T1": 1, "T2": 2}, "S001R04": {"T0": -1, "T1": -1, "T2": -1}}
    no_test_labels = EEGDataModule(files=[str(p) for p in RUNS[:2]], label_maps=silent, window_s=2.0,
                                   test_recordings=["S001R04"])
    with pytest.raises(ValueError, match=r"The test recordings \['S001R04'\] have no labelled window"):
        evaluate_eeg(None, no_test_labels, features="band_power")
