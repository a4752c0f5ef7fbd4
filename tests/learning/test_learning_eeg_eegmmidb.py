"""EEGFormer-style pretraining on the real EEGMMIDB recordings (subject S001, runs 3-6, 64 channels, 160 Hz).

Pretrain on every 2 s window (one every 1 s) of runs 3, 4 and 5 without labels; run 6 (imagined both fists / both
feet, never seen in pretraining) is held out. Checked:

- the model learned to model EEG it has not seen: on the held-out run, with the same random masks, the masked-patch
  reconstruction error falls at least 5% below the same model's error at initialisation and below the error of
  predicting zero (the per-recording mean of the z-scored signal);
- the codebook is in use on the held-out run (perplexity and used codes over the 64 x 5 patch tokens per window);
- the probe protocol runs on the real windows (rest vs movement: 201 training windows, 105 rest / 96 movement,
  from runs 3-5; 67 test windows, 35 / 32, from run 6; chance 0.5) and its numbers are printed.

Measured here (seed 0, 8 epochs, 48 steps): held-out masked MSE 1.034 at init -> 0.918 pretrained (predicting zero:
1.019); codebook perplexity 4.3 with 25 of 128 codes used on run 6. Rest vs movement, balanced accuracy / AUROC:
random init 0.627 / 0.682, pretrained 0.585 / 0.637, band power 0.626 / 0.688. So this short run learns to predict
masked EEG on an unseen run but does not improve the probe; the study over every held-out run and more epochs is
``bench/eeg.py`` (table in README, "EEG"), where the pretrained features score at or above random init on AUROC.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_ssl.data import EEGDataModule, EEGView
from lightning_ssl.data.eeg_labels import EEGMMIDB_CLASSES
from lightning_ssl.encoders import EEGPatchTransformer
from lightning_ssl.evaluation.eeg import EEGMMIDB_TASKS, evaluate_eeg
from lightning_ssl.evaluation.eeg_codes import codebook_report
from lightning_ssl.methods import EEGFormer, ViewOutputs

pytestmark = pytest.mark.slow
EEGMMIDB = Path(__file__).resolve().parents[3] / "shared" / "data" / "eegmmidb" / "S001"
RUNS = [EEGMMIDB / f"S001R0{r}.edf" for r in (3, 4, 5, 6)]


@torch.no_grad()
def _heldout_reconstruction(model: EEGFormer, windows: torch.Tensor) -> tuple[float, float]:
    """(masked-patch MSE of ``model``, MSE of predicting zero) on ``windows`` with masks drawn from seed 0."""
    model.eval()
    torch.manual_seed(0)
    extra: dict = {}
    model.encode_training_views([windows], extra)
    parts = model.compute_loss(ViewOutputs(embeddings=[], projections=[], batch=None, extra=extra))  # type: ignore[arg-type]
    target = model.reconstruction_target(extra["patches"])[extra["mask"]]
    return float(parts["reconstruction"]), float(target.square().mean())


def test_eegformer_pretraining_on_real_eeg() -> None:
    assert all(p.is_file() for p in RUNS), f"real data missing under {EEGMMIDB}"
    L.seed_everything(0, verbose=False)
    dm = EEGDataModule(files=[str(p) for p in RUNS], label_maps="eegmmidb", straddle="unlabel", window_s=2.0,
                       stride_s=1.0, test_recordings=["S001R06"], views=[EEGView(amplitude_scale=(0.9, 1.1))],
                       batch_size=64)
    dm.setup()
    assert dm.splits["train"].numel() == 3 * 124 and dm.splits["test"].numel() == 124
    encoder = EEGPatchTransformer(64, 320, patch_size=64, embed_dim=32, depth=2, num_heads=4, pooling="channel")
    model = EEGFormer(encoder, mask_ratio=0.5, num_codes=128, code_dim=16, decoder_depth=1, decoder_num_heads=4,
                      optimizer="adamw", lr=2e-3, weight_decay=0.05, warmup_epochs=1)
    initial = copy.deepcopy(model)
    heldout = dm.windows[dm.splits["test"]]
    trainer = L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    assert "train/codebook_perplexity" in trainer.logged_metrics

    before, zero = _heldout_reconstruction(initial, heldout)
    after, _ = _heldout_reconstruction(model, heldout)
    codes = codebook_report(model, dm.test_dataloader(), class_names=list(EEGMMIDB_CLASSES))
    results = {name: evaluate_eeg(m, dm, EEGMMIDB_TASKS)["rest_vs_movement"]
               for name, m in (("random init", initial), ("pretrained", model))}
    results["band power"] = evaluate_eeg(None, dm, EEGMMIDB_TASKS, features="band_power")["rest_vs_movement"]
    print(f"\nheld-out masked MSE: init {before:.3f}, pretrained {after:.3f}, predict-zero {zero:.3f}; "
          f"codebook perplexity {codes.perplexity:.1f}, used codes {codes.used_codes}/128; "
          f"top codes per class (code, lift): {codes.top_codes(k=3)}")
    for name, r in results.items():
        print(f"rest vs movement, {name}: balanced acc {r['balanced_acc']:.3f}, AUROC {r['auroc']:.3f} "
              f"(windows per class: train {r['train_per_class']}, test {r['test_per_class']})")

    assert after < 0.95 * before and after < 0.95 * zero, (before, after, zero)
    assert codes.perplexity > 3 and codes.used_codes >= 16, (codes.perplexity, codes.used_codes)
    rest = results["pretrained"]
    assert rest["train_per_class"] == results["band power"]["train_per_class"] and sum(rest["test_per_class"]) == rest["n_test"]
