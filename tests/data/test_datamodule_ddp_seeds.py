"""Under DDP every rank draws its own augmentation parameters (seed_everything gives all ranks one seed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from ddp_utils import run_ddp
from lightning_ssl.data import ImageDataModule

MEDMNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "medmnist"


def _views_of_the_same_images(rank: int, world_size: int) -> list[torch.Tensor]:
    L.seed_everything(0, verbose=False)
    dm = ImageDataModule("breastmnist", root=str(MEDMNIST), batch_size=8, num_workers=0, device_augmentation=True)
    dm.trainer = SimpleNamespace(world_size=world_size, global_rank=rank, training=True)  # what setup reads
    dm.setup("fit")
    images = torch.stack([dm.train_set[i][0] for i in range(8)])  # identical uint8 images on both ranks
    return [v for v in dm.device_aug(images)]


@pytest.mark.ddp
def test_ranks_draw_different_augmentations() -> None:
    rank0, rank1 = run_ddp(_views_of_the_same_images, world_size=2)
    assert rank0[0].shape == rank1[0].shape
    assert not torch.allclose(rank0[0], rank1[0]), "both ranks made the same views of the same images"
    # and it is reproducible: the same rank with the same seed makes the same views
    again = run_ddp(_views_of_the_same_images, world_size=2)
    assert torch.equal(again[0][0], rank0[0]) and torch.equal(again[1][1], rank1[1])
