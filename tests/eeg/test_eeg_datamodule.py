"""EEGDataModule on the real EEGMMIDB recordings of ../shared/data/eegmmidb (S001, runs 3-6, 64 channels,
160 Hz, 125 s): shapes, split sizes, no leakage of the test recording, labels, channels, resampling,
mixed sampling rates, a Lightning smoke run and bad input."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.data.eeg import EEGDataModule
from lightning_ssl.data.eeg_io import EEGRecording, make_windows, preprocess, read_eeg

EEGMMIDB = Path(__file__).resolve().parents[3] / "shared" / "data" / "eegmmidb"
RUNS = [EEGMMIDB / "S001" / f"S001R0{r}.edf" for r in (3, 4, 5, 6)]
REST_VS_MOVE = {"T0": 0, "T1": 1, "T2": 1}
PER_RUN = (20000 - 640) // 640 + 1  # 31 non-overlapping 4 s windows in 125 s at 160 Hz


@pytest.fixture(scope="module")
def dm() -> EEGDataModule:
    """Raw microvolts (normalize='none') so window content can be compared with the files."""
    assert all(p.is_file() for p in RUNS), f"real data missing under {EEGMMIDB}"
    d = EEGDataModule(root=str(EEGMMIDB), label_map=REST_VS_MOVE, straddle="majority", normalize="none",
                      val_recordings=["S001R05"], test_recordings=["S001R06"], batch_size=16)
    d.setup()
    return d


def test_shapes_properties_and_split_sizes(dm: EEGDataModule) -> None:
    assert (dm.num_channels, dm.num_samples, dm.sfreq, dm.num_classes, dm.batch_size) == (64, 640, 160.0, 2, 16)
    assert dm.recordings == ["S001R03", "S001R04", "S001R05", "S001R06"]
    assert {s: int(i.numel()) for s, i in dm.splits.items()} == {"train": 2 * PER_RUN, "val": PER_RUN, "test": PER_RUN}
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, SSLBatch) and len(batch.views) == 1
    assert batch.views[0].shape == (16, 64, 640) and batch.views[0].dtype == torch.float32
    assert batch.target.shape == (16,) and batch.index.shape == (16,)
    assert dm.split_groups == {"train": ["S001R03", "S001R04"], "val": ["S001R05"], "test": ["S001R06"]}


def test_no_window_of_the_test_recording_is_in_train(dm: EEGDataModule) -> None:
    test_id = dm.recordings.index("S001R06")
    train_ids = set()
    train_windows = []
    for batch in dm.train_dataloader():
        train_ids |= set(dm.recording[batch.index].tolist())
        train_windows.append(batch.views[0])
    assert train_ids == {0, 1} and test_id not in train_ids
    assert set(dm.recording[dm.splits["test"]].tolist()) == {test_id}
    train = torch.cat(train_windows)
    assert train.shape[0] == 2 * PER_RUN - (2 * PER_RUN) % 16  # drop_last
    # content: every train window is a slice of its own file, and none equals a window of the test file
    test_windows, _, _ = make_windows(read_eeg(RUNS[3]), 4.0)
    raw = {i: read_eeg(RUNS[i]).data for i in (0, 1)}
    for batch in dm.train_dataloader():
        for w, j in zip(batch.views[0], batch.index.tolist()):
            r, s = int(dm.recording[j]), int(dm.starts[j])
            assert torch.equal(w, raw[r][:, s:s + 640])
    flat_train, flat_test = train.flatten(1).double(), test_windows.flatten(1).double()
    assert torch.cdist(flat_train, flat_test).min() > 1.0


def test_eval_batches_are_clean_and_labelled() -> None:
    d = EEGDataModule(files=[str(p) for p in RUNS[:2]], label_map={"T0": 0, "T1": 1, "T2": -1}, straddle="majority",
                      test_recordings=["S001R04"], batch_size=8)
    train_labels = torch.cat([b.target for b in d.train_dataloader()])
    assert (train_labels == -1).any() and (train_labels >= 0).any()  # pretraining sees unlabelled windows too
    test_batches = list(d.test_dataloader())
    labels = torch.cat([b.target for b in test_batches])
    assert all(len(b.views) == 1 for b in test_batches) and (labels >= 0).all()
    assert labels.numel() == int((d.labels[d.splits["test"]] >= 0).sum()) < PER_RUN
    probe = torch.cat([b.target for b in d.labelled_train_dataloader()])
    assert (probe >= 0).all() and probe.numel() == int((d.labels[d.splits["train"]] >= 0).sum())
    assert len(list(d.val_dataloader())) == 0  # no validation recording given
    only = EEGDataModule(files=[str(p) for p in RUNS[:2]], label_map={"T0": 0, "T1": 1, "T2": -1}, straddle="majority",
                         test_recordings=["S001R04"], batch_size=8, train_on_unlabelled=False)
    assert (torch.cat([b.target for b in only.train_dataloader()]) >= 0).all()


def test_channel_selection_order_and_resampling() -> None:
    full = read_eeg(RUNS[0])
    picks = ["Cz..", "c3", "C4", "Fp1"]
    d = EEGDataModule(files=[str(RUNS[0])], channels=picks, normalize="none", sfreq=128.0)
    assert (d.num_channels, d.num_samples, d.sfreq) == (4, 512, 128.0)
    d.setup()
    assert d.ch_names == ["CZ", "C3", "C4", "FP1"]
    rows = [full.ch_names.index(c) for c in ["CZ", "C3", "C4", "FP1"]]
    expected = preprocess(EEGRecording(full.data[rows], 160.0, [full.ch_names[r] for r in rows]),
                          resample=128.0)
    x = d.windows
    assert x.shape == (125 * 128 // 512, 4, 512)
    assert torch.allclose(x[1], expected.data[:, 512:1024], atol=1e-3)


def test_mixed_sampling_rates_are_resampled_or_refused(tmp_path: Path) -> None:
    rec = preprocess(read_eeg(RUNS[0]), resample=128.0)
    npz = tmp_path / "S001R03_128hz.npz"
    np.savez(npz, data=rec.data.numpy(), sfreq=128.0, ch_names=np.array(rec.ch_names))
    files = [str(RUNS[1]), str(npz)]
    with pytest.raises(ValueError, match=r"different sampling rates.*sfreq") as err:
        EEGDataModule(files=files).setup()
    assert "160 Hz: ['" + str(RUNS[1]) in str(err.value) and "128 Hz: ['" + str(npz) in str(err.value)
    d = EEGDataModule(files=files, sfreq=160.0, test_recordings=["S001R03_128hz"])
    d.setup()
    assert d.windows.shape == (2 * PER_RUN, 64, 640)
    assert int(d.splits["test"].numel()) == PER_RUN and set(d.recording[d.splits["test"]].tolist()) == {1}


def test_subject_split_and_seeded_fraction_split(tmp_path: Path) -> None:
    g = np.random.default_rng(0)
    files = []
    for subject in ("SA", "SB", "SC"):
        (tmp_path / subject).mkdir()
        for run in ("r1", "r2"):
            path = tmp_path / subject / f"{run}.npy"
            np.save(path, g.standard_normal((3, 1000)).astype(np.float32))
            files.append(path)
    d = EEGDataModule(root=str(tmp_path), pattern="**/*.npy", array_sfreq=100.0, window_s=2.0, split_by="subject",
                      test_recordings=["SC"], val_fraction=0.3, views=[{"noise_std": 0.1}, {"sign_flip": 0.5}])
    d.setup()
    assert d.split_groups["test"] == ["SC"] and len(d.split_groups["val"]) == 1 and len(d.split_groups["train"]) == 1
    for split, groups in d.split_groups.items():
        assert {d.groups[r] for r in d.recording[d.splits[split]].tolist()} == set(groups)
    assert {s: int(i.numel()) for s, i in d.splits.items()} == {"train": 10, "val": 10, "test": 10}
    assert isinstance(d.views[0].noise_std, float)
    same = EEGDataModule(root=str(tmp_path), pattern="**/*.npy", array_sfreq=100.0, window_s=2.0, val_fraction=0.34,
                         test_fraction=0.34, split_seed=3)
    again = EEGDataModule(root=str(tmp_path), pattern="**/*.npy", array_sfreq=100.0, window_s=2.0, val_fraction=0.34,
                          test_fraction=0.34, split_seed=3)
    same.setup(), again.setup()
    assert same.recordings == ["SA/r1", "SA/r2", "SB/r1", "SB/r2", "SC/r1", "SC/r2"]  # stems repeat
    assert same.split_groups == again.split_groups and [len(v) for v in same.split_groups.values()] == [2, 2, 2]


class TinyEEGEncoder(nn.Module):
    def __init__(self, in_channels: int, out_dim: int = 8, num_samples: int | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_dim = in_channels, out_dim
        if num_samples is not None:
            self.num_samples = num_samples
        self.conv = nn.Conv1d(in_channels, out_dim, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(-1)


class _Spy(L.Callback):
    def __init__(self) -> None:
        self.train: list[SSLBatch] = []
        self.val: list[SSLBatch] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.train.append(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self.val.append(batch)


def test_simclr_fast_dev_run(dm: EEGDataModule) -> None:
    from lightning_ssl.methods import SimCLR

    L.seed_everything(0)
    d = EEGDataModule(files=[str(p) for p in RUNS[:2]], label_map=REST_VS_MOVE, straddle="majority",
                      val_recordings=["S001R04"], batch_size=8)
    model = SimCLR(encoder=TinyEEGEncoder(d.num_channels), proj_hidden_dim=16, proj_out_dim=8, warmup_epochs=0)
    spy = _Spy()
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[spy])
    trainer.fit(model, datamodule=d)
    assert len(spy.train) == 2 and len(spy.val) == 2
    for b in spy.train:
        assert len(b.views) == 2 and b.views[0].shape == (8, 64, 640)
        assert not torch.allclose(b.views[0], b.views[1])
        assert not torch.allclose(b.views[0], d.windows[b.index])  # augmented on the way to the device
    for b in spy.val:
        assert len(b.views) == 1 and torch.equal(b.views[0], d.windows[b.index]) and (b.target >= 0).all()


def test_bad_input_is_refused_with_the_fix(tmp_path: Path) -> None:
    one = [str(RUNS[0])]
    with pytest.raises(ValueError, match=r"S001R03\.edf: unknown channel 'CZZ'"):
        EEGDataModule(files=one, channels=["C3", "CZZ"]).setup()
    with pytest.raises(ValueError, match=r"S001R03\.edf: window of 200.0 s .* longer than the recording"):
        EEGDataModule(files=one, window_s=200.0).setup()
    with pytest.raises(ValueError, match=r"S001R03\.edf: annotation label\(s\) \['T2'\] are not in label_map"):
        EEGDataModule(files=one, label_map={"T0": 0, "T1": 1}).setup()
    with pytest.raises(ValueError, match="No recording is left for training"):
        EEGDataModule(files=[str(p) for p in RUNS[:2]], val_fraction=0.3, test_fraction=0.3).setup()
    with pytest.raises(ValueError, match="Did you mean 'S001R06'"):
        EEGDataModule(files=[str(p) for p in RUNS[2:]], test_recordings=["S001R6"]).setup()
    with pytest.raises(ValueError, match="in both"):
        EEGDataModule(files=[str(p) for p in RUNS], val_recordings=["S001R05"], test_recordings=["S001R05"]).setup()
    with pytest.raises(ValueError, match="exactly one of `files`"):
        EEGDataModule()
    with pytest.raises(ValueError, match="split_by"):
        EEGDataModule(files=one, split_by="window")
    bad = np.ones((2, 500), dtype=np.float32)
    bad[1, 7] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan\.npy: channel 'CH1' has 1 NaN"):
        EEGDataModule(files=[str(tmp_path / "nan.npy")], array_sfreq=100.0, window_s=1.0).setup()


def test_check_encoder_mismatch(dm: EEGDataModule) -> None:
    dm.check_encoder(TinyEEGEncoder(64, num_samples=640))
    with pytest.raises(ValueError, match="in_channels=32.*in_channels: 64"):
        dm.check_encoder(TinyEEGEncoder(32))
    with pytest.raises(ValueError, match="num_samples=512.*num_samples: 640"):
        dm.check_encoder(TinyEEGEncoder(64, num_samples=512))
