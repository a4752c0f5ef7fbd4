"""EEG reading, preprocessing and windowing on the real EEGMMIDB recordings of ../shared/data/eegmmidb (subject
S001, runs 3-6, 64 channels, 160 Hz, 125 s, 30 annotated events each), plus NumPy arrays and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_ssl.data.eeg_io import (
    EEGRecording,
    assert_disjoint_recordings,
    make_windows,
    normalize_channel_name,
    preprocess,
    read_eeg,
)

EEGMMIDB = Path(__file__).resolve().parents[3] / "shared" / "data" / "eegmmidb" / "S001"
RUN3 = EEGMMIDB / "S001R03.edf"


@pytest.fixture(scope="module")
def run3() -> EEGRecording:
    assert RUN3.is_file(), f"real data missing: {RUN3}"
    return read_eeg(RUN3)


def test_reads_real_eegmmidb_run(run3):
    assert run3.data.shape == (64, 20000) and run3.data.dtype == torch.float32 and run3.sfreq == 160.0
    assert run3.ch_names[:3] == ["FC5", "FC3", "FC1"]  # "Fc5." in the file
    assert len(run3.annotations) == 30 and {d for _, _, d in run3.annotations} == {"T0", "T1", "T2"}
    onset, duration, desc = run3.annotations[1]
    assert (onset, duration, desc) == (pytest.approx(4.2), pytest.approx(4.1), "T2")
    # microvolts: the README of the data says about +-600 uV
    assert 10 < float(run3.data.abs().max()) < 2000 and 5 < float(run3.data.std()) < 500


def test_channel_selection_orders_by_name_and_zero_fills(run3):
    rec = read_eeg(RUN3, channels=["cz", "C3.", "C4"])
    assert rec.ch_names == ["CZ", "C3", "C4"]
    assert torch.equal(rec.data[0], run3.data[run3.ch_names.index("CZ")])
    with pytest.raises(ValueError, match=r"unknown channel 'C33'.*Did you mean 'C3'.*missing_channels='zero'"):
        read_eeg(RUN3, channels=["C3", "C33"])
    rec = read_eeg(RUN3, channels=["C3", "A1"], missing_channels="zero")
    assert rec.channel_mask.tolist() == [True, False] and rec.data[1].abs().sum() == 0


def test_windows_and_labels_from_annotations(run3):
    windows, labels, starts = make_windows(run3, window_s=2.0, stride_s=1.0, label_map={"T0": 0, "T1": 1, "T2": 2})
    assert windows.shape[1:] == (64, 320) and windows.shape[0] == labels.shape[0] == starts.shape[0]
    assert set(labels.tolist()) <= {0, 1, 2}  # the whole run is annotated: no unlabelled windows
    # a kept window lies inside one event: its label is that event's, checked against the raw annotations
    for w, lab, s in zip(windows[:40], labels[:40], starts[:40]):
        t0, t1 = s / 160, (s + 320) / 160
        events = [(o, o + d, desc) for o, d, desc in run3.annotations if o < t1 and o + d > t0]
        assert len(events) == 1 and {"T0": 0, "T1": 1, "T2": 2}[events[0][2]] == lab
        assert torch.equal(w, run3.data[:, s: s + 320])
    drop = make_windows(run3, 2.0, 1.0, {"T0": 0, "T1": 1, "T2": 2}, straddle="drop")[0].shape[0]
    majority = make_windows(run3, 2.0, 1.0, {"T0": 0, "T1": 1, "T2": 2}, straddle="majority")[0].shape[0]
    assert majority == (20000 - 320) // 160 + 1 > drop


def test_unlabelled_signal_and_bad_windowing(run3):
    rec = EEGRecording(run3.data, run3.sfreq, run3.ch_names, [(10.0, 4.0, "T1")], "x.edf")
    _, labels, starts = make_windows(rec, 1.0, label_map={"T1": 1})
    assert labels.tolist().count(1) == 4 and (labels == -1).sum() == len(labels) - 4
    with pytest.raises(ValueError, match=r"label\(s\) \[.T2.\] are not in label_map"):
        make_windows(run3, 1.0, label_map={"T0": 0, "T1": 1})
    with pytest.raises(ValueError, match="longer than the recording"):
        make_windows(run3, 200.0)
    with pytest.raises(ValueError, match="straddle"):
        make_windows(run3, 1.0, straddle="mean")


def test_preprocess_filters_resamples_normalises(run3):
    rec = preprocess(run3, l_freq=1.0, h_freq=40.0, resample=80.0, normalize="zscore", clip=5.0)
    assert rec.sfreq == 80.0 and rec.data.shape == (64, 10000)
    assert rec.data.abs().max() <= 5.0 + 1e-6
    x = preprocess(run3, normalize="zscore").data
    assert torch.allclose(x.mean(1), torch.zeros(64), atol=1e-4) and torch.allclose(x.std(1), torch.ones(64), atol=1e-3)
    robust = preprocess(run3, normalize="robust").data
    assert torch.allclose(robust.median(1).values, torch.zeros(64), atol=1e-3)
    # the band-pass removes the slow drift: the power below 0.5 Hz drops by orders of magnitude
    def low_power(d, fs):
        spec = np.abs(np.fft.rfft(d.double().numpy(), axis=1)) ** 2
        return spec[:, 1: int(0.5 * d.shape[1] / fs)].sum()
    assert low_power(preprocess(run3, l_freq=1.0).data, 160) < 1e-2 * low_power(run3.data, 160)
    with pytest.raises(ValueError, match="Band-pass"):
        preprocess(run3, l_freq=40.0, h_freq=1.0)
    with pytest.raises(ValueError, match="normalize"):
        preprocess(run3, normalize="minmax")


def test_numpy_arrays_and_bad_input(tmp_path):
    data = np.random.default_rng(0).normal(size=(3, 500)).astype(np.float32)
    np.savez(tmp_path / "rec.npz", data=data, sfreq=100.0, ch_names=np.array(["Cz", "C3", "C4"]))
    rec = read_eeg(tmp_path / "rec.npz", channels=["C4", "CZ"])
    assert rec.sfreq == 100.0 and rec.ch_names == ["C4", "CZ"] and torch.allclose(rec.data[1], torch.from_numpy(data[0]))
    np.save(tmp_path / "rec.npy", data)
    with pytest.raises(ValueError, match="pass sfreq"):
        read_eeg(tmp_path / "rec.npy")
    assert read_eeg(tmp_path / "rec.npy", sfreq=250).data.shape == (3, 500)
    data[1, 42] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(ValueError, match=r"nan\.npy: channel 'CH1' has 1 NaN/Inf samples \(first at sample 42"):
        read_eeg(tmp_path / "nan.npy", sfreq=100)
    np.save(tmp_path / "flat.npy", data[0])
    with pytest.raises(ValueError, match=r"\[C, T\]"):
        read_eeg(tmp_path / "flat.npy", sfreq=100)
    (tmp_path / "rec.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unknown EEG file type '.csv'"):
        read_eeg(tmp_path / "rec.csv")
    with pytest.raises(FileNotFoundError):
        read_eeg(tmp_path / "missing.edf")


def test_recording_level_splits():
    assert_disjoint_recordings({"train": ["R03", "R04"], "test": ["R05"]})
    with pytest.raises(ValueError, match="'R04' is in both"):
        assert_disjoint_recordings({"train": ["R03", "R04"], "test": ["R04"]})
    assert normalize_channel_name(" Fc5. ") == "FC5"


def test_windowed_arrays_are_used_as_stored(tmp_path):
    """``[N, C, W]`` arrays: windows kept as stored, filtered/resampled one by one, labels as ids or strings."""
    from lightning_ssl.data import EEGDataModule
    from lightning_ssl.data.eeg_io import make_windows, preprocess

    g = np.random.default_rng(0)
    x = g.standard_normal((5, 3, 200)).astype(np.float32)
    names = np.array(["C3", "C4", "CZ"])
    np.savez(tmp_path / "ids.npz", data=x, sfreq=100.0, ch_names=names, labels=np.array([0, 1, -1, 1, 0]))
    rec = read_eeg(tmp_path / "ids.npz", channels=["CZ", "C3"])
    windows, labels, starts = make_windows(rec, 2.0)
    assert torch.equal(windows, torch.as_tensor(x[:, [2, 0]])) and labels.tolist() == [0, 1, -1, 1, 0]
    assert starts.tolist() == [0, 200, 400, 600, 800]
    half = make_windows(preprocess(rec, resample=50.0), 2.0)[0]
    assert half.shape == (5, 2, 100)
    # each window is resampled on its own: window 1 does not change when window 0 does
    y = x.copy()
    y[0] += 100.0
    np.savez(tmp_path / "other.npz", data=y, sfreq=100.0, ch_names=names)
    other = make_windows(preprocess(read_eeg(tmp_path / "other.npz", channels=["CZ", "C3"]), resample=50.0), 2.0)
    assert torch.allclose(other[0][1], half[1], atol=1e-5) and (other[1] == -1).all()
    with pytest.raises(ValueError, match=r"holds windows of 200 samples \(2 s at 100 Hz\), used as stored: set window_s: 2"):
        make_windows(rec, 4.0)
    with pytest.raises(ValueError, match="stride_s: null"):
        make_windows(rec, 2.0, 1.0)
    np.savez(tmp_path / "names.npz", data=x, sfreq=100.0, ch_names=names, labels=np.array(["rest", "move", "rest", "x", "move"]))
    with pytest.raises(ValueError, match=r"window label\(s\) \['x'\] are not in label_map"):
        make_windows(read_eeg(tmp_path / "names.npz"), 2.0, label_map={"rest": 0, "move": 1})
    with pytest.raises(ValueError, match="give a label_map"):
        make_windows(read_eeg(tmp_path / "names.npz"), 2.0)
    np.savez(tmp_path / "bad.npz", data=x, sfreq=100.0, labels=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"one label per window, shape \[5\]"):
        read_eeg(tmp_path / "bad.npz")
    np.save(tmp_path / "four.npy", x[None])
    with pytest.raises(ValueError, match=r"continuous \[C, T\] \(channels x samples\) or windowed \[N, C, W\]"):
        read_eeg(tmp_path / "four.npy", sfreq=100)
    # through the datamodule: split by file, labels from the array
    np.savez(tmp_path / "b.npz", data=x, sfreq=100.0, ch_names=names, labels=np.array([1, 1, 0, 0, -1]))
    dm = EEGDataModule(files=[str(tmp_path / "ids.npz"), str(tmp_path / "b.npz")], window_s=2.0, test_recordings=["b"])
    dm.setup()
    assert dm.windows.shape == (10, 3, 200) and dm.labels.tolist() == [0, 1, -1, 1, 0, 1, 1, 0, 0, -1]
    assert dm.splits["test"].tolist() == list(range(5, 10))
