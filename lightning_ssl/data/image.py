"""Image datamodule: torchvision datasets, ImageFolder, MedMNIST ``.npz`` files, scikit-learn digits.

Train batches carry the views of a named recipe (:func:`lightning_ssl.data.image_transforms.make_recipe`),
made on CPU workers with ``torchvision.transforms.v2`` or, with ``device_augmentation=True``, batched
on the accelerator in ``on_after_batch_transfer``. Validation and test batches carry one clean view
and the labels.

Splits: datasets with an official validation split (MedMNIST, ImageFolder with ``val/``) use it;
for the others ``val_fraction`` of the training split is held out (seeded), so that no epoch is ever
picked on the test split. Digits have no official split: ``val_fraction`` and ``test_fraction`` of the
1,797 images are held out, stratified by class.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.data.image_transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    RECIPES,
    BatchStylesStandardization,
    DeviceAugmentation,
    MultiViewTransform,
    ViewSpec,
    base_transform,
    default_stats,
    eval_transform,
    make_recipe,
)
from lightning_ssl.data.image_transforms import _ratio_range  # the validation BatchStylesStandardization uses

MEDMNIST_FLAGS = (
    "pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
    "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist",
)
TORCHVISION_DATASETS = ("cifar10", "cifar100", "stl10", "mnist", "fashion_mnist", "svhn")
DATASETS = TORCHVISION_DATASETS + ("image_folder", "digits", "medmnist") + MEDMNIST_FLAGS

# per dataset: (native image size, native channels, mean, std)
_STATS: dict[str, tuple[int, int, tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (32, 3, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (32, 3, CIFAR100_MEAN, CIFAR100_STD),
    "stl10": (96, 3, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "svhn": (32, 3, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": (28, 1, MNIST_MEAN, MNIST_STD),
    "fashion_mnist": (28, 1, (0.2860,), (0.3530,)),
    "image_folder": (224, 3, IMAGENET_MEAN, IMAGENET_STD),
}


class ImageSamples(Dataset):
    """Images held in memory as a uint8 tensor ``[N, C, H, W]`` with integer labels."""

    def __init__(self, images: Tensor, labels: Tensor | None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"ImageSamples needs uint8 [N, C, H, W]; got {images.dtype} {tuple(images.shape)}.")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor | int]:
        # a scalar label, or a vector for multi-label files (ChestMNIST); -1 when unlabelled
        return self.images[i], (self.labels[i] if self.labels is not None else -1)


class _Transformed(Dataset):
    """Applies a transform to the image of ``(image, label)`` samples and adds the sample index."""

    def __init__(self, base: Dataset, transform: Any, channels: int | None) -> None:
        self.base, self.transform, self.channels = base, transform, channels
        # SSLBatch.index holds sample ids of the underlying dataset, also through a held-out Subset
        self.ids = list(base.indices) if isinstance(base, Subset) else None

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Tensor, int]:
        image, label = self.base[i]
        image = _to_channels(image, self.channels)
        return self.transform(image), torch.as_tensor(label, dtype=torch.long), (self.ids[i] if self.ids else i)


def _to_channels(image: Any, channels: int | None) -> Any:
    if channels is None:
        return image
    if isinstance(image, Tensor):
        c = image.shape[0]
        if c == channels:
            return image
        if c == 1 and channels == 3:
            return image.expand(3, -1, -1)
        if c == 3 and channels == 1:
            w = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)
            return (image.float() * w).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        raise ValueError(f"Cannot convert a {c}-channel image to {channels} channels.")
    return image.convert("RGB" if channels == 3 else "L")


def load_medmnist(path: str | os.PathLike, flag: str | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Read a MedMNIST ``.npz`` (keys ``{train,val,test}_{images,labels}``) into uint8 ``[N, C, H, W]``.

    ``path`` is the ``.npz`` file or a folder holding ``<flag>.npz``. Labels of shape ``(N,)`` and
    ``(N, 1)`` both give ``(N,)``; multi-label files (ChestMNIST) keep ``(N, L)``.
    """
    path = Path(path)
    if path.is_dir():
        if flag is None:
            raise ValueError(f"{path} is a folder: name the MedMNIST file with dataset: <flag> (e.g. pneumoniamnist).")
        path = path / f"{flag}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"MedMNIST file not found: {path}. Download {path.name} (MedMNIST v2, e.g. with the `medmnist` "
            f"package: `python -m medmnist save --flag={path.stem}` or from the MedMNIST website) and set "
            f"data.root to the folder that holds it (or to the file itself)."
        )
    with np.load(path) as npz:
        missing = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels") if f"{s}_{k}" not in npz]
        if missing:
            raise ValueError(f"{path} is not a MedMNIST file: keys {missing} are missing (found {sorted(npz.files)}).")
        out = {}
        for split in ("train", "val", "test"):
            images = np.asarray(npz[f"{split}_images"])
            labels = np.asarray(npz[f"{split}_labels"])
            if images.ndim == 3:
                images = images[:, None]
            elif images.ndim == 4 and images.shape[-1] in (1, 3):
                images = images.transpose(0, 3, 1, 2)
            else:
                raise ValueError(f"{path}: {split}_images has shape {images.shape}; expected (N,H,W) or (N,H,W,C).")
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if len(labels) != len(images):
                raise ValueError(f"{path}: {len(images)} {split} images but {len(labels)} labels.")
            out[split] = (torch.from_numpy(np.ascontiguousarray(images)).to(torch.uint8), torch.from_numpy(labels).long())
    return out


def load_digits_splits(val_fraction: float, test_fraction: float, seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    """scikit-learn's 1,797 real 8x8 digits (values 0-16) as uint8 ``[N, 1, 8, 8]``, stratified splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.from_numpy((data.images * (255.0 / 16.0)).round().astype(np.uint8))[:, None]
    labels = torch.from_numpy(data.target).long()
    idx = np.arange(len(labels))
    trainval, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=data.target)
    rel_val = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(trainval, test_size=rel_val, random_state=seed, stratify=data.target[trainval])
    return {s: (images[i], labels[i]) for s, i in (("train", train), ("val", val), ("test", test))}


def _torchvision_split(name: str, root: str, train: bool, download: bool) -> Dataset:
    import torchvision.datasets as tvd

    try:
        if name == "cifar10":
            return tvd.CIFAR10(root, train=train, download=download)
        if name == "cifar100":
            return tvd.CIFAR100(root, train=train, download=download)
        if name == "mnist":
            return tvd.MNIST(root, train=train, download=download)
        if name == "fashion_mnist":
            return tvd.FashionMNIST(root, train=train, download=download)
        if name == "svhn":
            return tvd.SVHN(root, split="train" if train else "test", download=download)
        if name == "stl10":
            return tvd.STL10(root, split="train+unlabeled" if train else "test", download=download)
    except RuntimeError as err:
        if "not found" in str(err).lower() or "corrupted" in str(err).lower():
            raise FileNotFoundError(
                f"{name} not found under root={root!r} (torchvision said: {err}). Set data.download: true to "
                f"download it there, or point data.root at the folder that holds torchvision's {name} files."
            ) from None
        raise
    raise ValueError(name)


class ImageDataModule(L.LightningDataModule):
    """Images for SSL: named datasets, multi-view recipes, CPU or device augmentation.

    Args:
        dataset: one of ``cifar10``, ``cifar100``, ``stl10``, ``mnist``, ``fashion_mnist``, ``svhn``
            (torchvision), ``image_folder`` (``root/train/<class>/*``, optional ``val/`` and ``test/``),
            ``digits`` (scikit-learn, ships with it), or a MedMNIST flag such as ``pneumoniamnist``
            (``root`` is the folder holding ``<flag>.npz``, or the file itself).
        root: where the data lives. Read-only roots work: nothing is written unless ``download``.
        download: let torchvision download the dataset into ``root``.
        recipe: training views: ``simclr``, ``byol`` (asymmetric), ``dino`` (multi-crop) or ``mae`` (one view).
        image_size: side of the global views (default: the dataset's native size).
        view_overrides: fields of :class:`ViewSpec` set on every view, e.g. ``{"scale": [0.5, 1.0]}``.
        device_augmentation: make the views on the device, batched, with per-sample parameters. The
            workers then only resize and centre-crop each image to ``image_size`` (so random crops
            are cut from that square, not from a larger original as on the CPU path).
        channels: convert images to 1 or 3 channels (default: keep the dataset's).
        mean, std: normalisation (default: the dataset's statistics, else 0.5).
        val_fraction, test_fraction: held-out fractions where the dataset has no official split.
        drop_last: drop the last incomplete training batch (needed for DDP losses on equal shards).
        batch_styles: Batch Styles Standardization of every training view (Scalbert et al., ICLR 2024;
            :class:`~lightning_ssl.data.image_transforms.BatchStylesStandardization`): per view, the
            low-frequency Fourier amplitude of one randomly chosen image of the batch replaces every
            image's, phases are kept. An area ratio in [0, 1], or a ``[min, max]`` range sampled per
            view; ``None`` (default) turns it off. Applied in ``on_after_batch_transfer`` after the views
            are made (CPU or device path), in pixel space; validation and test batches are untouched.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        root: str = "data",
        download: bool = False,
        recipe: str = "simclr",
        image_size: int | None = None,
        num_local_crops: int = 6,
        local_size: int | None = None,
        blur: bool | None = None,
        view_overrides: dict[str, Any] | None = None,
        device_augmentation: bool = False,
        channels: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        drop_last: bool = True,
        pin_memory: bool = True,
        batch_styles: float | list[float] | None = None,
    ) -> None:
        super().__init__()
        name = dataset.lower()
        if name not in DATASETS:
            raise ValueError(f"Unknown dataset {dataset!r}. Valid names: {list(DATASETS)}.")
        recipe = recipe.lower()
        if recipe not in RECIPES:
            raise ValueError(f"Unknown recipe {recipe!r}. Valid recipes: {list(RECIPES)}.")
        unknown = sorted(set(view_overrides or {}) - {f.name for f in dataclasses.fields(ViewSpec)})
        if unknown:
            raise ValueError(
                f"Unknown view_overrides {unknown}; valid fields: {sorted(f.name for f in dataclasses.fields(ViewSpec))}."
            )
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or null, got {channels}.")
        if batch_styles is not None:
            _ratio_range(batch_styles, "batch_styles")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.save_hyperparameters()
        self.dataset_name = name
        self.root = str(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.channels = channels
        self._splits: dict[str, Dataset] = {}
        self._native: tuple[int, int] | None = None  # (size, channels)
        self.device_aug: DeviceAugmentation | None = None
        self.style_standardization: BatchStylesStandardization | None = None
        # Known without reading data: fail before any data is read when the encoder disagrees.
        if name in _STATS:
            self._native = _STATS[name][:2]
        elif name == "digits":
            self._native = (8, 1)

    # ------------------------------------------------------------------ properties
    @property
    def num_channels(self) -> int | None:
        """Channels of the images the model sees (after ``channels`` conversion)."""
        if self.channels is not None:
            return self.channels
        return None if self._native is None else self._native[1]

    @property
    def image_size(self) -> int:
        if self.hparams.image_size:
            return int(self.hparams.image_size)
        if self._native is None:
            self._load_raw()
        assert self._native is not None
        return self._native[0]

    @property
    def num_classes(self) -> int:
        """Number of classes of the labels (read by the online probe and kNN callbacks)."""
        known = {"cifar10": 10, "cifar100": 100, "stl10": 10, "mnist": 10, "fashion_mnist": 10, "svhn": 10, "digits": 10}
        if self.dataset_name in known:
            return known[self.dataset_name]
        raw = self._load_raw()
        train = raw["train"]
        folder = getattr(train, "dataset", train)  # ImageFolder, or a held-out Subset of one
        if hasattr(folder, "classes"):
            return len(folder.classes)
        if isinstance(train, ImageSamples) and train.labels is not None:
            labels = train.labels
            if labels.ndim == 2 and labels.shape[1] > 1:  # multi-label (e.g. ChestMNIST): one output per label
                return int(labels.shape[1])
            return int(max(int(s.labels.max()) for s in raw.values() if isinstance(s, ImageSamples)) + 1)
        raise ValueError(f"{self.dataset_name}: the number of classes is unknown; set it on the probe callback.")

    def _stats(self) -> tuple[Sequence[float], Sequence[float]]:
        c = self.num_channels or 3
        if self.hparams.mean is not None and self.hparams.std is not None:
            mean, std = tuple(self.hparams.mean), tuple(self.hparams.std)
        elif self.dataset_name in _STATS and _STATS[self.dataset_name][1] == c:
            mean, std = _STATS[self.dataset_name][2:]
        else:
            mean, std = default_stats(c)
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values but the images have {c} channel(s).")
        return mean, std

    def view_specs(self) -> list:
        specs = make_recipe(
            self.hparams.recipe.lower(),
            self.image_size,
            num_local_crops=self.hparams.num_local_crops,
            local_size=self.hparams.local_size,
            blur=self.hparams.blur,
        )
        overrides = dict(self.hparams.view_overrides or {})
        if overrides:
            for key in ("scale", "ratio", "blur_sigma"):
                if key in overrides:
                    overrides[key] = tuple(overrides[key])
            specs = [dataclasses.replace(s, **overrides) for s in specs]
        return specs

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        if self.hparams.download and self.dataset_name in TORCHVISION_DATASETS:
            for train in (True, False):
                _torchvision_split(self.dataset_name, self.root, train, download=True)

    def _load_raw(self) -> dict[str, Dataset]:
        """Datasets of ``(image, label)`` per split, before transforms (cached)."""
        if self._splits:
            return self._splits
        name, hp = self.dataset_name, self.hparams
        if name == "digits":
            arrays = load_digits_splits(hp.val_fraction, hp.test_fraction, hp.seed)
            splits = {k: ImageSamples(*v) for k, v in arrays.items()}
            self._native = (8, 1)
        elif name in MEDMNIST_FLAGS or name == "medmnist":
            arrays = load_medmnist(self.root, None if name == "medmnist" else name)
            images = arrays["train"][0]
            self._native = (int(images.shape[-1]), int(images.shape[1]))
            splits = {k: ImageSamples(*v) for k, v in arrays.items()}
        elif name == "image_folder":
            splits = self._image_folder()
        else:
            # prepare_data downloaded once per node under a Trainer; every rank only reads here
            download = hp.download and self.trainer is None
            full = _torchvision_split(name, self.root, True, download)
            splits = {"test": _torchvision_split(name, self.root, False, download)}
            if name == "stl10":
                splits["train"], splits["val"] = self._stl10_split(full)
            else:
                splits["train"], splits["val"] = self._holdout(full, len(full))
        self._splits = splits
        return splits

    def _holdout(self, full: Dataset, n: int) -> tuple[Dataset, Dataset]:
        g = torch.Generator().manual_seed(self.hparams.seed)
        perm = torch.randperm(n, generator=g).tolist()
        n_val = int(round(self.hparams.val_fraction * n))
        return Subset(full, perm[n_val:]), Subset(full, perm[:n_val])

    def _stl10_split(self, full: Dataset) -> tuple[Dataset, Dataset]:
        # the first 5,000 of "train+unlabeled" are the labelled train images: hold out from those only
        labelled = 5000
        g = torch.Generator().manual_seed(self.hparams.seed)
        perm = torch.randperm(labelled, generator=g).tolist()
        n_val = int(round(self.hparams.val_fraction * labelled))
        val = perm[:n_val]
        train = perm[n_val:] + list(range(labelled, len(full)))  # type: ignore[arg-type]
        return Subset(full, train), Subset(full, val)

    def _image_folder(self) -> dict[str, Dataset]:
        from torchvision.datasets import ImageFolder

        root = Path(self.root)
        if not (root / "train").is_dir():
            raise FileNotFoundError(
                f"image_folder expects {root}/train/<class>/<image> (and optionally val/ and test/); "
                f"{root / 'train'} does not exist. Set data.root to the folder that holds train/."
            )
        train = ImageFolder(str(root / "train"))
        splits: dict[str, Dataset] = {}
        if (root / "val").is_dir():
            splits["train"], splits["val"] = train, ImageFolder(str(root / "val"))
        else:
            splits["train"], splits["val"] = self._holdout(train, len(train))
        if (root / "test").is_dir():
            splits["test"] = ImageFolder(str(root / "test"))
        self._native = (self.hparams.image_size or 224, 3)
        return splits

    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1 and not getattr(self, "_rank_seeded", False):
            # seed_everything gives every rank the same seed: without this, sample i of every rank's
            # shard would get the same crop, flip and jitter (device path, and CPU path in the main
            # process). Offset the seed by the rank, once, reproducibly.
            torch.manual_seed((torch.initial_seed() + 7919 * trainer.global_rank) % 2**63)
            self._rank_seeded = True
        raw = self._load_raw()
        mean, std = self._stats()
        specs = self.view_specs()
        if self.hparams.device_augmentation:
            train_tf: Any = base_transform(self.image_size)
            self.device_aug = DeviceAugmentation(specs, mean, std)
        else:
            train_tf = MultiViewTransform(specs, mean, std)
        if self.hparams.get("batch_styles") is not None:
            self.style_standardization = BatchStylesStandardization(self.hparams.batch_styles, mean, std)
        clean = eval_transform(self.image_size, mean, std)
        ch = self.num_channels
        self.train_set = _Transformed(raw["train"], train_tf, ch)
        self.val_set = _Transformed(raw["val"], clean, ch)
        self.test_set = _Transformed(raw["test"], clean, ch) if "test" in raw else None
        self._check_batch_size()

    def _check_batch_size(self) -> None:
        world = self.trainer.world_size if self.trainer is not None else 1
        per_rank = len(self.train_set) // world
        if self.hparams.drop_last and self.batch_size > per_rank:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the {per_rank} training samples per process "
                f"({len(self.train_set)} in {self.dataset_name} train over {world} process(es)); with "
                "drop_last=True no batch would be left. Lower data.batch_size or set data.drop_last: false."
            )

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and self.hparams.drop_last,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            collate_fn=collate_views,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ValueError(f"{self.dataset_name} at {self.root} has no test split (image_folder needs test/).")
        return self._loader(self.test_set, train=False)

    def labelled_train_dataloader(self) -> DataLoader:
        """The labelled training images with the clean (evaluation) transform: for offline probes.

        STL-10's unlabelled images (target -1) are left out.
        """
        mean, std = self._stats()
        train = self._load_raw()["train"]
        if self.dataset_name == "stl10" and isinstance(train, Subset):
            train = Subset(train.dataset, [i for i in train.indices if i < 5000])
        clean = _Transformed(train, eval_transform(self.image_size, mean, std), self.num_channels)
        return self._loader(clean, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if self.device_aug is not None and trainer is not None and trainer.training and isinstance(batch, SSLBatch):
            images = batch.views[0]
            if self.device_aug.mean.device != images.device:  # else mean/std are copied (with a sync) per view
                self.device_aug.to(images.device)
            batch.views = self.device_aug(images)
        bss = self.style_standardization
        if bss is not None and trainer is not None and trainer.training and isinstance(batch, SSLBatch):
            if bss.mean.device != batch.views[0].device:
                bss.to(batch.views[0].device)
            batch.views = [bss(view) for view in batch.views]  # one style image and ratio per view
        return batch


def collate_views(samples: list[tuple[Any, int, int]]) -> SSLBatch:
    """Stack ``(views | image, label, index)`` samples into an :class:`SSLBatch`."""
    first = samples[0][0]
    if isinstance(first, (list, tuple)):
        views = [torch.stack([s[0][v] for s in samples]) for v in range(len(first))]
    else:
        views = [torch.stack([s[0] for s in samples])]
    target = torch.stack([torch.as_tensor(s[1], dtype=torch.long) for s in samples])
    index = torch.tensor([s[2] for s in samples], dtype=torch.long)
    return SSLBatch(views=views, target=target, index=index)
