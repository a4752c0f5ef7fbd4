"""ImageDataModule on real data: MedMNIST files, scikit-learn digits, an ImageFolder of real PNGs and
Fashion-MNIST from the Debian package; views of every recipe, CPU and device augmentation paths."""

from __future__ import annotations

import gzip
import os
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_ssl.data import ImageDataModule, SSLBatch, load_medmnist
from lightning_ssl.data.image import load_digits_splits
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.methods import SimCLR

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MEDMNIST = SHARED / "medmnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# flag -> (channels, train, val, test) as documented in shared/data/README.md
MEDMNIST_SPLITS = {
    "pneumoniamnist": (1, 4708, 524, 624),
    "breastmnist": (1, 546, 78, 156),
    "retinamnist": (3, 1080, 120, 400),
}



def _dm(dataset: str = "breastmnist", root: Path | str = MEDMNIST, **kwargs) -> ImageDataModule:
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("num_workers", 0)
    return ImageDataModule(dataset, root=str(root), **kwargs)


def _first(loader) -> SSLBatch:
    return next(iter(loader))


# ---------------------------------------------------------------------------------------------- MedMNIST


@pytest.mark.parametrize("flag", sorted(MEDMNIST_SPLITS))
def test_load_medmnist_shapes_dtypes_and_split_sizes(flag: str) -> None:
    channels, n_train, n_val, n_test = MEDMNIST_SPLITS[flag]
    raw_labels = np.load(MEDMNIST / f"{flag}.npz")["train_labels"]
    # the shared copies cover both label layouts: (N, 1) official, (N,) re-saved breastmnist
    assert raw_labels.ndim == (1 if flag == "breastmnist" else 2)
    splits = load_medmnist(MEDMNIST, flag)
    assert set(splits) == {"train", "val", "test"}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        images, labels = splits[split]
        assert images.shape == (n, channels, 28, 28)
        assert images.dtype == torch.uint8
        assert labels.shape == (n,)
        assert labels.dtype == torch.long
    # labels are the file's labels, flattened
    np.testing.assert_array_equal(splits["train"][1].numpy(), raw_labels.reshape(-1))
    # images are the file's images (channels moved first for RGB)
    raw_images = np.load(MEDMNIST / f"{flag}.npz")["train_images"]
    first = splits["train"][0][0].numpy()
    np.testing.assert_array_equal(first, raw_images[0][None] if channels == 1 else raw_images[0].transpose(2, 0, 1))


@pytest.mark.parametrize("flag", sorted(MEDMNIST_SPLITS))
def test_datamodule_medmnist_folder_and_flag(flag: str) -> None:
    channels, n_train, n_val, n_test = MEDMNIST_SPLITS[flag]
    dm = _dm(flag)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (n_train, n_val, n_test)
    assert dm.num_channels == channels
    assert dm.image_size == 28

    train = _first(dm.train_dataloader())
    assert isinstance(train, SSLBatch)
    assert len(train.views) == 2
    for v in train.views:
        assert v.shape == (8, channels, 28, 28)
        assert v.dtype == torch.float32
        # normalised with mean 0.5 / std 0.5 (no known statistics): values in [-1, 1], not [0, 255]
        assert v.min() >= -1.0 - 1e-5 and v.max() <= 1.0 + 1e-5
        assert v.min() < 0.0
    assert not torch.equal(train.views[0], train.views[1]), "two views of the same images must differ"
    assert train.target.shape == (8,) and train.target.dtype == torch.long
    assert train.index.shape == (8,) and train.index.dtype == torch.long

    val = _first(dm.val_dataloader())
    assert len(val.views) == 1
    assert val.views[0].shape == (8, channels, 28, 28) and val.views[0].dtype == torch.float32
    assert val.target.shape == (8,) and val.target.dtype == torch.long
    # the clean view is the un-augmented image, normalised
    images, labels = load_medmnist(MEDMNIST, flag)["val"]
    expected = (images[:8].float() / 255.0 - 0.5) / 0.5
    torch.testing.assert_close(val.views[0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(val.target, labels[:8])

    test = _first(dm.test_dataloader())
    assert len(test.views) == 1 and test.views[0].shape == (8, channels, 28, 28)


def test_datamodule_root_is_the_npz_file() -> None:
    dm = _dm("medmnist", root=MEDMNIST / "pneumoniamnist.npz")
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4708, 524, 624)
    assert dm.num_channels == 1
    batch = _first(dm.train_dataloader())
    assert [tuple(v.shape) for v in batch.views] == [(8, 1, 28, 28)] * 2


def test_medmnist_folder_without_flag_is_an_error() -> None:
    with pytest.raises(ValueError, match="pneumoniamnist"):
        load_medmnist(MEDMNIST)


# ---------------------------------------------------------------------------------------------- recipes


def test_byol_recipe_gives_two_views() -> None:
    dm = _dm("retinamnist", recipe="byol")
    dm.setup("fit")
    batch = _first(dm.train_dataloader())
    assert [tuple(v.shape) for v in batch.views] == [(8, 3, 28, 28)] * 2
    specs = dm.view_specs()
    assert len(specs) == 2 and specs[0].solarize_p == 0.0 and specs[1].solarize_p == 0.2  # asymmetric


def test_dino_recipe_gives_global_and_local_crops() -> None:
    dm = _dm("breastmnist", recipe="dino", num_local_crops=3, local_size=12)
    dm.setup("fit")
    batch = _first(dm.train_dataloader())
    shapes = [tuple(v.shape) for v in batch.views]
    assert shapes == [(8, 1, 28, 28)] * 2 + [(8, 1, 12, 12)] * 3
    # default local size: round(image_size * 96 / 224), at least 8
    dm = _dm("breastmnist", recipe="dino", num_local_crops=2, image_size=56)
    dm.setup("fit")
    shapes = [tuple(v.shape) for v in _first(dm.train_dataloader()).views]
    assert shapes == [(8, 1, 56, 56)] * 2 + [(8, 1, 24, 24)] * 2


def test_view_overrides_apply_to_every_view() -> None:
    dm = _dm("breastmnist", recipe="dino", num_local_crops=2, view_overrides={"hflip_p": 0.0, "scale": [0.5, 1.0]})
    specs = dm.view_specs()
    assert len(specs) == 4
    assert all(s.hflip_p == 0.0 and s.scale == (0.5, 1.0) for s in specs)


# ---------------------------------------------------------------------------------------------- device path


def test_device_augmentation_hook_with_trainer_states() -> None:
    dm = _dm("breastmnist", recipe="byol", device_augmentation=True)
    dm.setup("fit")
    batch = _first(dm.train_dataloader())
    # workers only resize: one uint8 view
    assert len(batch.views) == 1
    assert batch.views[0].dtype == torch.uint8 and batch.views[0].shape == (8, 1, 28, 28)

    dm.trainer = SimpleNamespace(training=True, world_size=1)
    raw = batch.views[0].clone()
    out = dm.on_after_batch_transfer(batch, 0)
    assert len(out.views) == 2
    for v in out.views:
        assert v.dtype == torch.float32 and v.shape == (8, 1, 28, 28)
        assert v.min() >= -1.0 - 1e-5 and v.max() <= 1.0 + 1e-5
    assert not torch.equal(out.views[0], out.views[1])
    assert not torch.allclose(out.views[0], (raw.float() / 255 - 0.5) / 0.5), "training views must be augmented"

    # validation: the clean view passes through untouched
    dm.trainer = SimpleNamespace(training=False, world_size=1)
    val = _first(dm.val_dataloader())
    before = val.views[0].clone()
    out = dm.on_after_batch_transfer(val, 0)
    assert len(out.views) == 1 and torch.equal(out.views[0], before)
    images = load_medmnist(MEDMNIST, "breastmnist")["val"][0]
    torch.testing.assert_close(out.views[0], (images[:8].float() / 255 - 0.5) / 0.5, atol=1e-5, rtol=0)


class _CaptureBatches(L.Callback):
    def __init__(self) -> None:
        self.train: SSLBatch | None = None
        self.val: SSLBatch | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train = self.train or batch

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val = self.val or batch


def test_device_augmentation_under_a_real_trainer(tmp_path: Path) -> None:
    dm = _dm("breastmnist", recipe="dino", num_local_crops=2, local_size=12, device_augmentation=True, batch_size=4)
    model = SimCLR(TimmEncoder("test_resnet", in_chans=1, small_stem=True), proj_hidden_dim=32, proj_out_dim=16)
    capture = _CaptureBatches()
    trainer = L.Trainer(
        max_steps=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[capture], accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 1
    shapes = [tuple(v.shape) for v in capture.train.views]
    assert shapes == [(4, 1, 28, 28)] * 2 + [(4, 1, 12, 12)] * 2
    assert all(v.dtype == torch.float32 for v in capture.train.views)
    assert capture.val is not None, "validation did not run"
    assert len(capture.val.views) == 1 and capture.val.views[0].dtype == torch.float32
    images = load_medmnist(MEDMNIST, "breastmnist")["val"][0]
    torch.testing.assert_close(capture.val.views[0], (images[:4].float() / 255 - 0.5) / 0.5, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- channels


def test_channels_3_on_gray_data() -> None:
    dm = _dm("breastmnist", channels=3)
    dm.setup("fit")
    assert dm.num_channels == 3
    batch = _first(dm.train_dataloader())
    assert [tuple(v.shape) for v in batch.views] == [(8, 3, 28, 28)] * 2
    val = _first(dm.val_dataloader()).views[0]
    assert val.shape == (8, 3, 28, 28)
    # gray replicated: the three channels of the clean view are identical
    torch.testing.assert_close(val[:, 0], val[:, 1])
    torch.testing.assert_close(val[:, 0], val[:, 2])


def test_channels_1_on_rgb_data() -> None:
    dm = _dm("retinamnist", channels=1)
    dm.setup("fit")
    assert dm.num_channels == 1
    assert _first(dm.val_dataloader()).views[0].shape == (8, 1, 28, 28)


# ---------------------------------------------------------------------------------------------- digits


def test_digits_splits_are_stratified_disjoint_and_complete() -> None:
    from sklearn.datasets import load_digits

    data = load_digits()
    splits = load_digits_splits(val_fraction=0.1, test_fraction=0.2, seed=0)
    sizes = {k: len(v[1]) for k, v in splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.2 * 1797, abs=1)
    assert sizes["val"] == pytest.approx(0.1 * 1797, abs=1)
    # disjoint and complete: the three splits together are exactly the 1,797 samples (as a multiset)
    full = (data.images * (255.0 / 16.0)).round().astype(np.uint8)
    key = lambda img, y: img.tobytes() + bytes([int(y)])  # noqa: E731
    union = Counter(key(img[0].numpy(), y) for imgs, ys in splits.values() for img, y in zip(imgs, ys))
    assert union == Counter(key(img, y) for img, y in zip(full, data.target))
    # stratified: every split has every class in the overall proportion (+-1 sample)
    total = Counter(data.target.tolist())
    for name, frac in (("test", 0.2), ("val", 0.1)):
        counts = Counter(splits[name][1].tolist())
        for c, n in total.items():
            assert abs(counts[c] - frac * n) <= 1.5, (name, c, counts[c], frac * n)
    # seeded: same seed, same split
    again = load_digits_splits(val_fraction=0.1, test_fraction=0.2, seed=0)
    assert torch.equal(again["val"][0], splits["val"][0])


def test_digits_datamodule() -> None:
    dm = _dm("digits", batch_size=16)
    dm.setup("fit")
    n = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert n == 1797
    assert dm.num_channels == 1 and dm.image_size == 8
    batch = _first(dm.train_dataloader())
    assert [tuple(v.shape) for v in batch.views] == [(16, 1, 8, 8)] * 2
    val = _first(dm.val_dataloader())
    assert val.target.max() <= 9 and val.target.min() >= 0


# ---------------------------------------------------------------------------------------------- ImageFolder


def _write_pngs(folder: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    for i, (img, y) in enumerate(zip(images, labels)):
        cls_dir = folder / ("benign" if int(y) == 1 else "malignant")
        cls_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), mode="L").save(cls_dir / f"{i:03d}.png")


def test_image_folder_with_held_out_val(tmp_path: Path) -> None:
    images, labels = load_medmnist(MEDMNIST, "breastmnist")["train"]
    idx = torch.cat([torch.nonzero(labels == 0)[:10, 0], torch.nonzero(labels == 1)[:10, 0]])
    _write_pngs(tmp_path / "train", images[idx], labels[idx])
    dm = _dm("image_folder", root=tmp_path, image_size=28, batch_size=4, val_fraction=0.2)
    dm.setup("fit")
    assert len(dm.train_set) == 16 and len(dm.val_set) == 4
    assert dm.num_channels == 3  # ImageFolder reads RGB
    batch = _first(dm.train_dataloader())
    assert [tuple(v.shape) for v in batch.views] == [(4, 3, 28, 28)] * 2
    val = _first(dm.val_dataloader())
    assert val.views[0].shape == (4, 3, 28, 28)
    assert set(val.target.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="test"):
        dm.test_dataloader()


def test_image_folder_with_val_and_test_folders_gray(tmp_path: Path) -> None:
    splits = load_medmnist(MEDMNIST, "breastmnist")
    for split in ("train", "val", "test"):
        images, labels = splits[split]
        _write_pngs(tmp_path / split, images[:12], labels[:12])
    dm = _dm("image_folder", root=tmp_path, image_size=28, batch_size=4, channels=1)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 12, 12)
    val = _first(dm.val_dataloader())
    assert val.views[0].shape == (4, 1, 28, 28)
    # the PNG round trip is lossless: the clean view is the original MedMNIST image
    dataset = dm.val_set.base
    first_path, first_label = dataset.samples[0]
    original = splits["val"][0][int(Path(first_path).stem)].float()
    torch.testing.assert_close(dm.val_set[0][0], (original / 255 - 0.5) / 0.5, atol=1e-5, rtol=0)
    assert _first(dm.test_dataloader()).views[0].shape == (4, 1, 28, 28)


# ---------------------------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    missing = [f for f in FASHION_MNIST_FILES if not (FASHION_MNIST_DIR / f).is_file()]
    if missing:
        pytest.fail(
            f"Fashion-MNIST files {missing} not found in {FASHION_MNIST_DIR}. Install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu package; CI installs it)."
        )
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FASHION_MNIST_FILES:
        with gzip.open(FASHION_MNIST_DIR / name, "rb") as src, open(raw / name[: -len(".gz")], "wb") as dst:
            shutil.copyfileobj(src, dst)
    dm = ImageDataModule("fashion_mnist", root=str(tmp_path), batch_size=16, num_workers=0, val_fraction=0.1)
    assert dm.num_channels == 1  # known before any data is read
    dm.setup("fit")
    assert len(dm.train_set) == 54000 and len(dm.val_set) == 6000 and len(dm.test_set) == 10000
    batch = _first(dm.train_dataloader())
    assert [tuple(v.shape) for v in batch.views] == [(16, 1, 28, 28)] * 2
    val = _first(dm.val_dataloader())
    assert val.views[0].shape == (16, 1, 28, 28) and val.views[0].dtype == torch.float32
    # Fashion-MNIST statistics are used for normalisation: mean ~0 over a clean batch of many images
    clean = torch.cat([b.views[0] for _, b in zip(range(8), dm.val_dataloader())])
    assert abs(clean.mean().item()) < 0.3
    assert set(torch.cat([b.target for _, b in zip(range(8), dm.test_dataloader())]).tolist()) <= set(range(10))
    # the held-out validation indices never appear in the training split
    assert not set(dm.train_set.base.indices) & set(dm.val_set.base.indices)


# ---------------------------------------------------------------------------------------------- read-only data


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    st = root.stat()
    out["."] = (st.st_size, st.st_mtime_ns)
    return out


def test_reads_the_shared_folder_without_writing() -> None:
    before = _snapshot(SHARED)
    for dataset, root in (("pneumoniamnist", MEDMNIST), ("medmnist", MEDMNIST / "breastmnist.npz")):
        dm = _dm(dataset, root=root, device_augmentation=dataset == "medmnist")
        dm.prepare_data()
        dm.setup("fit")
        _first(dm.train_dataloader())
        _first(dm.val_dataloader())
        _first(dm.test_dataloader())
        _first(dm.labelled_train_dataloader())
    assert _snapshot(SHARED) == before
