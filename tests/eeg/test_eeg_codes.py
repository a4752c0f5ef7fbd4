"""EEGFormer codebook interpretability: exact accumulator counts and mean patches on a hand-made example, lift
ranking, shape errors, the pure-torch figure, codebook_report on a tiny EEGFormer and the TensorBoard callback
in a Lightning run on labelled FIF recordings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lightning_ssl.callbacks import LogCodebookPatterns
from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.encoders.eeg import EEGPatchTransformer
from lightning_ssl.evaluation.eeg_codes import (
    CodebookAccumulator,
    CodebookReport,
    codebook_figure,
    codebook_report,
    figure_layout,
)
from lightning_ssl.methods import EEGFormer


def tiny_eegformer() -> EEGFormer:
    torch.manual_seed(0)
    enc = EEGPatchTransformer(in_channels=4, num_samples=64, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    return EEGFormer(enc, num_codes=16, code_dim=8, warmup_epochs=0, decoder_num_heads=2)


def test_accumulator_exact_counts_and_mean_patches() -> None:
    acc = CodebookAccumulator(num_codes=5, patch_size=3, num_classes=2, class_names=["rest", "move"])
    codes = torch.tensor([[[0, 1]], [[1, 1]], [[4, 4]]])  # [B=3, C=1, P=2]
    patches = torch.arange(3 * 2 * 3, dtype=torch.float32).view(3, 1, 2, 3)
    labels = torch.tensor([0, 1, -1])  # the third window is unlabelled: ignored entirely
    acc.update(codes, patches, labels)
    acc.update(torch.tensor([[[0, 2]]]), torch.full((1, 1, 2, 3), 6.0), torch.tensor([1]))
    r = acc.report()
    assert torch.equal(r.counts, torch.tensor([[1.0, 1, 0, 0, 0], [1, 2, 1, 0, 0]], dtype=torch.float64))
    assert torch.equal(r.code_counts, torch.tensor([2.0, 3, 1, 0, 0], dtype=torch.float64))
    p = patches.double()
    expected = torch.zeros(5, 3, dtype=torch.float64)
    expected[0] = (p[0, 0, 0] + 6.0) / 2
    expected[1] = (p[0, 0, 1] + p[1, 0, 0] + p[1, 0, 1]) / 3
    expected[2] = 6.0
    assert torch.allclose(r.mean_patch, expected) and torch.equal(r.mean_patch[3:], torch.zeros(2, 3, dtype=torch.float64))
    assert torch.allclose(r.code_given_class, torch.tensor([[0.5, 0.5, 0, 0, 0], [0.25, 0.5, 0.25, 0, 0]],
                                                           dtype=torch.float64))
    q = torch.tensor([2.0, 3, 1]) / 6
    assert r.perplexity == pytest.approx(math.exp(float(-(q * q.log()).sum())))
    assert r.used_codes == 3 and r.class_names == ["rest", "move"]
    acc.reset()
    assert acc.report().code_counts.sum() == 0


def test_rows_without_windows_stay_zero_and_class_table_grows() -> None:
    acc = CodebookAccumulator(4, 2, num_classes=3)
    acc.update(torch.tensor([[[3]]]), torch.ones(1, 1, 1, 2), torch.tensor([2]))
    r = acc.report()
    assert torch.equal(r.code_given_class[:2], torch.zeros(2, 4, dtype=torch.float64))
    assert r.class_names == ["class 0", "class 1", "class 2"] and r.top_codes(min_count=0)["class 0"] == []
    grow = CodebookAccumulator(4, 2, num_classes=None)
    grow.update(torch.tensor([[[1]], [[2]]]), torch.ones(2, 1, 1, 2), torch.tensor([0, 3]))
    assert grow.num_classes == 4 and grow.report().counts[3, 2] == 1


def test_top_codes_finds_the_planted_code() -> None:
    g = torch.Generator().manual_seed(0)
    n, c, p, k = 60, 2, 4, 8
    labels = torch.arange(n) % 3
    codes = torch.randint(0, 6, (n, c, p), generator=g)
    codes[labels == 2, 0, 0] = 7  # code 7 only ever fires on class 2
    acc = CodebookAccumulator(k, 4, 3, ["a", "b", "c"])
    acc.update(codes, torch.randn(n, c, p, 4, generator=g), labels)
    report = acc.report()
    top = report.top_codes(k=3)
    assert top["c"][0][0] == 7 and top["c"][0][1] == pytest.approx(3.0)  # P(7|c) / P(7) = (1/8) / (1/24)
    assert all(code != 7 for code, _ in top["a"] + top["b"])
    assert report.top_codes(k=3, min_count=100)["c"] == []  # rare codes are left out
    summary = json.loads(json.dumps(report.to_dict(k=2)))
    assert summary["top_codes"]["c"][0]["code"] == 7 and summary["used_codes"] == 7
    assert summary["perplexity"] == pytest.approx(report.perplexity)


def test_shape_and_value_errors_name_the_expected_shape() -> None:
    acc = CodebookAccumulator(4, 3, 2)
    with pytest.raises(ValueError, match=r"codes must be an integer tensor \[B, C, P\]"):
        acc.update(torch.zeros(2, 3), torch.zeros(2, 3, 1, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"patches must be \[B, C, P, S\] = \(2, 1, 1, 3\)"):
        acc.update(torch.zeros(2, 1, 1, dtype=torch.long), torch.zeros(2, 1, 1, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be an integer tensor \[B\] = \(2,\)"):
        acc.update(torch.zeros(2, 1, 1, dtype=torch.long), torch.zeros(2, 1, 1, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        acc.update(torch.full((2, 1, 1), 4), torch.zeros(2, 1, 1, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="label 2 does not fit num_classes=2"):
        acc.update(torch.zeros(2, 1, 1, dtype=torch.long), torch.zeros(2, 1, 1, 3), torch.tensor([0, 2]))


def _planted_report() -> tuple[CodebookReport, Tensor]:
    s = 32
    sine = torch.sin(torch.linspace(0, 2 * math.pi, s))
    acc = CodebookAccumulator(num_codes=40, patch_size=s, num_classes=2)
    codes = torch.tensor([[[5, 5, 9]], [[5, 9, 9]]])
    patches = torch.stack([sine, sine, torch.zeros(s)]).expand(2, 1, 3, s).clone()
    patches[1, 0, 1] = 0.0  # code 9 always sees zeros: a flat mean patch
    acc.update(codes, patches, torch.tensor([0, 1]))
    return acc.report(), sine


def test_figure_shape_range_and_the_planted_sine_is_drawn() -> None:
    report, sine = _planted_report()
    img = codebook_figure(report, max_codes=16)  # only 2 codes used, K=40 > max_codes
    assert img.ndim == 3 and img.shape[0] == 3 and img.dtype == torch.float32
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    layout = figure_layout(report, max_codes=16)
    assert list(layout) == [5, 9]  # most used first, unused codes not shown
    assert img.shape[2] == 2 + 2 * (32 + 2)
    top, left, h, w = layout[5]
    panel = img[0, top:top + h, left:left + w]
    ink = panel < 0.5
    assert ink.any(0).all(), "the polyline must cover every column of the panel"
    # the line is continuous (no vertical gaps between neighbouring columns) and follows the sine:
    spans = [torch.nonzero(ink[:, x]).flatten() for x in range(w)]
    for a, b in zip(spans, spans[1:]):
        assert int(b.min()) <= int(a.max()) + 1 and int(b.max()) >= int(a.min()) - 1
    rows = torch.stack([span.float().mean() for span in spans])
    assert rows[w // 4] < rows[0] < rows[3 * w // 4]  # peak near the top, trough near the bottom (row 0 is the top)
    flat = img[0, top:top + h, layout[9][1]:layout[9][1] + w] < 0.5
    assert int(flat.any(1).sum()) == 1  # the flat code is one horizontal line
    # heatmap: class 0 uses code 5 more than class 1 does -> darker (less red) cell in row 0, column 0
    assert img[0, 2 + 4, 2 + 4] < img[0, 2 + 8 + 4, 2 + 4]
    small = codebook_figure(report, max_codes=1)
    assert small.shape[2] == 2 + 32 + 2
    empty = CodebookAccumulator(4, 8, 1).report()
    blank = codebook_figure(empty)  # no data at all: a figure, not a crash
    assert blank.shape[0] == 3 and float(blank.max()) <= 1


def test_codebook_report_on_tiny_eegformer_restores_modes() -> None:
    method = tiny_eegformer()
    method.train()
    method.decoder.eval()  # a mixed state must come back as it was
    x = torch.randn(10, 4, 64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, -1])
    report = codebook_report(method, x, labels, class_names=["a", "b", "c"], batch_size=4)
    assert method.training and method.encoder.training and not method.decoder.training
    assert report.counts.shape == (3, 16) and report.patch_sums.shape == (16, 16)
    assert int(report.code_counts.sum()) == 9 * 4 * 4  # labelled windows x channels x patches
    codes = method.tokenize(x[:9])
    assert torch.equal(report.code_counts, torch.bincount(codes.flatten(), minlength=16).double())
    everything = codebook_report(method, x)  # no labels: one class for all windows
    assert int(everything.counts.sum()) == 10 * 4 * 4 and everything.class_names == ["all"]
    loader = [SSLBatch(views=[x[:6]], target=labels[:6]), SSLBatch(views=[x[6:9]], target=labels[6:9])]
    from_loader = codebook_report(method, loader)
    assert torch.equal(from_loader.counts, report.counts) and from_loader.num_classes == 3
    with pytest.raises(TypeError, match="needs a method with a codebook, e.g. lightning_ssl.methods.EEGFormer"):
        codebook_report(nn.Linear(2, 2), x)


def _write_fif(path: Path, seconds: int, sfreq: float, seed: int) -> None:
    import mne  # the dev extra installs it: the EEG tests need it
    g = np.random.default_rng(seed)
    info = mne.create_info(["C3", "C4", "CZ", "FZ"], sfreq, ch_types="eeg")
    raw = mne.io.RawArray(g.standard_normal((4, int(seconds * sfreq))) * 1e-5, info, verbose="error")
    onsets = np.arange(0, seconds, 4.0)
    raw.set_annotations(mne.Annotations(onsets, [4.0] * len(onsets), ["T0" if i % 2 else "T1" for i in range(len(onsets))]))
    raw.save(path, overwrite=True, verbose="error")


def test_callback_logs_patterns_to_tensorboard(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_ssl.data.eeg import EEGDataModule

    for name, seed in (("a_raw", 0), ("b_raw", 1)):
        _write_fif(tmp_path / f"{name}.fif", 24, 64.0, seed)
    dm = EEGDataModule(root=str(tmp_path), pattern="*.fif", window_s=1.0, label_map={"T0": 0, "T1": 1},
                       val_recordings=["b_raw"], batch_size=8)
    callback = LogCodebookPatterns(max_codes=8, class_names=["rest", "fist"])
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=TensorBoardLogger(tmp_path),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", callbacks=[callback])
    trainer.fit(tiny_eegformer(), datamodule=dm)
    assert 1.0 <= float(trainer.callback_metrics["codebook/val_perplexity"]) <= 16.0
    assert 1 <= float(trainer.callback_metrics["codebook/val_used_codes"]) <= 16
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "codebook/patterns" in events.Tags()["images"]
    image = events.Images("codebook/patterns")[-1]
    assert image.step == trainer.global_step and image.height > 32 and image.width > 32
    # while fitting, every_n_epochs=5 skips epoch 0; a plain trainer.validate always reports
    rare = LogCodebookPatterns(every_n_epochs=5, class_names=["rest", "fist"])
    again = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", callbacks=[rare])
    model = tiny_eegformer()
    again.fit(model, datamodule=dm)
    assert "codebook/val_perplexity" not in again.callback_metrics
    again.validate(model, datamodule=dm, verbose=False)
    assert "codebook/val_perplexity" in again.callback_metrics


def test_callback_refuses_methods_without_codebook_and_unlabelled_data(tmp_path: Path) -> None:
    from lightning_ssl.methods import SimCLR

    simclr = SimCLR(encoder=EEGPatchTransformer(in_channels=4, num_samples=64, patch_size=16, embed_dim=32, depth=1,
                                                num_heads=2), proj_hidden_dim=16, proj_out_dim=8, warmup_epochs=0)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, accelerator="cpu")
    with pytest.raises(TypeError, match="LogCodebookPatterns needs a method with a codebook, e.g. lightning_ssl"):
        LogCodebookPatterns().setup(trainer, simclr, "fit")

    class _Unlabelled(L.LightningDataModule):
        num_classes = None

    fake = SimpleNamespace(datamodule=_Unlabelled())
    with pytest.raises(ValueError, match=r"needs labelled validation windows \(set data label_map/label_maps\)"):
        LogCodebookPatterns().setup(fake, tiny_eegformer(), "fit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every_n_epochs >= 1"):
        LogCodebookPatterns(every_n_epochs=0)
