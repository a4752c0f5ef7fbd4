"""Bad input to ImageDataModule fails early, with a message that names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_ssl.data import DATASETS, RECIPES, ImageDataModule
from lightning_ssl.data.image import load_medmnist
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.methods import SimCLR

MEDMNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "medmnist"



def _dm(dataset: str = "breastmnist", root: Path | str = MEDMNIST, **kwargs) -> ImageDataModule:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("num_workers", 0)
    return ImageDataModule(dataset, root=str(root), **kwargs)


class _NoTrainingStep(L.Callback):
    def __init__(self) -> None:
        self.train_batches = 0

    def on_train_batch_start(self, *args) -> None:
        self.train_batches += 1


def _fit(model: L.LightningModule, dm: ImageDataModule, tmp_path: Path) -> tuple[L.Trainer, _NoTrainingStep]:
    spy = _NoTrainingStep()
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path, callbacks=[spy],
    )
    return trainer, spy


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="Unknown dataset 'cifar11'") as exc:
        ImageDataModule("cifar11")
    msg = str(exc.value)
    for name in ("cifar10", "fashion_mnist", "image_folder", "digits", "pneumoniamnist", "medmnist"):
        assert f"'{name}'" in msg
    assert set(DATASETS) >= {"cifar10", "pneumoniamnist", "breastmnist", "retinamnist", "digits"}


def test_unknown_recipe_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="Unknown recipe 'simclrr'") as exc:
        ImageDataModule("breastmnist", recipe="simclrr")
    for name in RECIPES:
        assert f"'{name}'" in str(exc.value)


def test_bad_channels_and_batch_size() -> None:
    with pytest.raises(ValueError, match="channels must be 1, 3 or null, got 2"):
        ImageDataModule("breastmnist", channels=2)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ImageDataModule("breastmnist", batch_size=0)


def test_missing_medmnist_file_says_how_to_get_it(tmp_path: Path) -> None:
    dm = _dm("pneumoniamnist", root=tmp_path)
    with pytest.raises(FileNotFoundError) as exc:
        dm.setup("fit")
    msg = str(exc.value)
    assert str(tmp_path / "pneumoniamnist.npz") in msg
    assert "python -m medmnist save --flag=pneumoniamnist" in msg  # how to download
    assert "data.root" in msg  # where to put it
    # the same for a file path that does not exist
    with pytest.raises(FileNotFoundError, match=r"breastmnist\.npz.*data\.root"):
        _dm("medmnist", root=tmp_path / "breastmnist.npz").setup("fit")
    # a folder with dataset "medmnist" cannot know which file to read
    with pytest.raises(ValueError, match="is a folder: name the MedMNIST file"):
        load_medmnist(tmp_path)


def test_not_a_medmnist_file(tmp_path: Path) -> None:
    import numpy as np

    bad = tmp_path / "pneumoniamnist.npz"
    np.savez(bad, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"not a MedMNIST file: keys \[.*'train_labels'"):
        _dm("pneumoniamnist", root=tmp_path).setup("fit")


@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
def test_missing_torchvision_data_without_download(tmp_path: Path, dataset: str) -> None:
    dm = _dm(dataset, root=tmp_path, download=False)
    dm.prepare_data()  # download=False: nothing to do, nothing written
    with pytest.raises(FileNotFoundError) as exc:
        dm.setup("fit")
    msg = str(exc.value)
    assert dataset in msg and str(tmp_path) in msg
    assert "data.download: true" in msg and "data.root" in msg
    assert list(tmp_path.iterdir()) == [], "nothing may be written without download=True"


def test_image_folder_without_train(tmp_path: Path) -> None:
    (tmp_path / "val" / "a").mkdir(parents=True)
    dm = _dm("image_folder", root=tmp_path, image_size=28)
    with pytest.raises(FileNotFoundError) as exc:
        dm.setup("fit")
    msg = str(exc.value)
    assert str(tmp_path / "train") in msg and "train/<class>/<image>" in msg and "data.root" in msg


@pytest.mark.parametrize("dataset, data_ch, enc_ch", [("breastmnist", 1, 3), ("retinamnist", 3, 1)])
def test_channel_mismatch_fails_before_training(tmp_path: Path, dataset: str, data_ch: int, enc_ch: int) -> None:
    dm = _dm(dataset)
    model = SimCLR(TimmEncoder("test_resnet", in_chans=enc_ch, small_stem=True), proj_hidden_dim=32, proj_out_dim=16)
    trainer, spy = _fit(model, dm, tmp_path)
    with pytest.raises(ValueError) as exc:
        trainer.fit(model, datamodule=dm)
    msg = str(exc.value)
    assert f"data has {data_ch} channel(s)" in msg and f"expects {enc_ch}" in msg
    assert f"in_chans: {data_ch}" in msg and "channels" in msg  # the two fixes
    assert spy.train_batches == 0 and trainer.global_step == 0


def test_channel_conversion_fixes_the_mismatch(tmp_path: Path) -> None:
    dm = _dm("breastmnist", channels=3)
    model = SimCLR(TimmEncoder("test_resnet", in_chans=3, small_stem=True), proj_hidden_dim=32, proj_out_dim=16)
    trainer, spy = _fit(model, dm, tmp_path)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 1 and spy.train_batches == 1


def test_batch_size_larger_than_the_training_split(tmp_path: Path) -> None:
    dm = _dm("breastmnist", batch_size=1024)
    with pytest.raises(ValueError) as exc:
        dm.setup("fit")
    msg = str(exc.value)
    assert "batch_size=1024" in msg and "546" in msg and "breastmnist" in msg
    assert "data.batch_size" in msg and "drop_last: false" in msg
    # under a Trainer it fails in setup, before any step
    model = SimCLR(TimmEncoder("test_resnet", in_chans=1, small_stem=True), proj_hidden_dim=32, proj_out_dim=16)
    trainer, spy = _fit(model, _dm("breastmnist", batch_size=1024), tmp_path)
    with pytest.raises(ValueError, match="batch_size=1024"):
        trainer.fit(model, datamodule=_dm("breastmnist", batch_size=1024))
    assert spy.train_batches == 0
    # the documented fix works: one (partial) batch of all 546 images
    dm = _dm("breastmnist", batch_size=1024, drop_last=False)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and batches[0].views[0].shape == (546, 1, 28, 28)


def test_unknown_view_overrides_key() -> None:
    # raised when the datamodule is built (the CLI fails before reading any data)
    with pytest.raises(ValueError) as exc:
        _dm("breastmnist", view_overrides={"scal": [0.5, 1.0], "hflip_p": 0.0})
    msg = str(exc.value)
    assert "Unknown view_overrides ['scal']" in msg
    assert "'scale'" in msg and "'solarize_p'" in msg  # valid fields listed


def test_invalid_view_overrides_value() -> None:
    with pytest.raises(ValueError, match="scale must satisfy 0 < min <= max <= 1"):
        _dm("breastmnist", view_overrides={"scale": [0.5, 2.0]}).setup("fit")


def test_no_test_split_for_image_folder_without_test(tmp_path: Path) -> None:
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(torch.randint(0, 255, (8, 8), dtype=torch.uint8).numpy(), mode="L").save(
                tmp_path / "train" / c / f"{i}.png"
            )
    dm = _dm("image_folder", root=tmp_path, image_size=8, batch_size=2)
    dm.setup("fit")
    with pytest.raises(ValueError, match="no test split.*test/"):
        dm.test_dataloader()
