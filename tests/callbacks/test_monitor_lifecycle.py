"""Callback life cycle: a new fit resets the monitors, DDP resume drops rank 0's banks, image_folder
classes, and which step returns projections."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_ssl.callbacks import OnlineKNN, OnlineLinearProbe, RankMe
from lightning_ssl.callbacks._common import EmbeddingBank
from lightning_ssl.data import ImageDataModule
from ssl_method_helpers import make_datamodule, make_method, make_trainer


def _fit(callbacks, epochs: int = 1):
    L.seed_everything(0, verbose=False)
    trainer = make_trainer(max_steps=-1, max_epochs=epochs, limit_train_batches=2, limit_val_batches=2,
                           num_sanity_val_steps=0, callbacks=callbacks)
    trainer.fit(make_method("SimCLR"), make_datamodule())
    return trainer


def test_a_new_fit_resets_probe_and_banks() -> None:
    probe, knn, rank = OnlineLinearProbe(), OnlineKNN(bank="train_batches", bank_size=1000), RankMe(source="train")
    _fit([rank, probe, knn])
    first_weights = probe.classifier.weight.detach().clone()
    assert knn._train_bank.size == 32 and rank._banks["embeddings"].size == 32
    # a second fit with the same callback objects (a sweep) starts from scratch: the probe is rebuilt from
    # its seed and trained on the new model only, the banks hold only the new run's 2 batches
    _fit([rank, probe, knn])
    assert knn._train_bank.size == 32, "the kNN bank kept the previous model's rows"
    assert rank._banks["embeddings"].size == 32, "the RankMe bank kept the previous model's rows"
    # the rebuilt probe, trained 2 steps on an identically seeded run, equals the first run's probe (a probe
    # continued from the first fit would have taken 4 steps)
    assert torch.equal(probe.classifier.weight, first_weights), "the probe continued from the previous fit"


@pytest.mark.parametrize("which", ["rankme", "knn"])
def test_ddp_resume_drops_rank0_bank(which: str) -> None:
    bank = EmbeddingBank(8)
    bank.add(torch.randn(5, 4), torch.arange(5))
    if which == "rankme":
        cb = RankMe(source="train")
        state = {"banks": {"embeddings": bank.state_dict()}, "done_epoch": 0, "warned_few": []}
    else:
        cb = OnlineKNN(bank="train_batches")
        state = {"train_bank": bank.state_dict()}
    single = RankMe(source="train") if which == "rankme" else OnlineKNN(bank="train_batches")
    single.load_state_dict(state)  # one process: restored
    restored = single._banks["embeddings"] if which == "rankme" else single._train_bank
    assert restored.size == 5
    cb._world_size = 2  # what setup() records under DDP, before Lightning loads callback state
    with pytest.warns(UserWarning, match="rank 0"):
        cb.load_state_dict(state)
    assert (cb._banks if which == "rankme" else cb._train_bank) in ({}, None)


def test_image_folder_num_classes_with_held_out_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "eel"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "train" / cls / f"{i}.png")
    dm = ImageDataModule("image_folder", root=str(tmp_path), image_size=8, val_fraction=0.25)
    assert dm.num_classes == 3  # the train split is a Subset of the ImageFolder (no val/ folder)


def test_projections_in_validation_only() -> None:
    model = make_method("SimCLR")
    dm = make_datamodule()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    model.eval()
    with torch.no_grad():
        val = model.validation_step(batch, 0)
        test = model.test_step(batch, 0)
    assert val["projections"].shape == (len(batch), 16) and "projections" not in test
    assert set(test) == {"embeddings", "target", "index"}
