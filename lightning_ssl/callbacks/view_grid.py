"""Show users what their augmentation recipe does to their data."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor


def view_grid(views: list[Tensor], num_samples: int = 8) -> Tensor:
    """A ``[3, H, W]`` grid in [0, 1]: one row per sample, one column per view.

    Views of other sizes (multi-crop) are resized to the first view's size; each tile is min-max
    scaled so normalised inputs are visible.
    """
    size = views[0].shape[-2:]
    cols = []
    for v in views:
        v = v[:num_samples].detach().float().cpu()
        if v.shape[-2:] != size:
            v = F.interpolate(v, size=size, mode="nearest")
        if v.shape[1] == 1:
            v = v.expand(-1, 3, -1, -1)
        lo = v.amin(dim=(1, 2, 3), keepdim=True)
        hi = v.amax(dim=(1, 2, 3), keepdim=True)
        cols.append((v - lo) / (hi - lo).clamp_min(1e-8))
    tiles = torch.stack(cols, dim=1).flatten(0, 1)  # sample-major: each row is one sample's views
    from torchvision.utils import make_grid

    return make_grid(tiles, nrow=len(views), padding=1, pad_value=1.0)


class LogAugmentedViews(L.Callback):
    """Log a grid of the augmented training views of ``num_samples`` samples once per run.

    Written to every TensorBoard logger as the image ``train/views`` at the end of the first training
    batch (rank 0 only), tagged with the global step after that batch's optimizer step. Batches whose
    views are not image tensors ``[B, C, H, W]`` are ignored.
    """

    def __init__(self, num_samples: int = 8) -> None:
        self.num_samples = num_samples
        self.logged = False

    def state_dict(self) -> dict[str, Any]:
        return {"logged": self.logged}  # a resumed run does not log the grid again

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.logged = bool(state_dict.get("logged", False))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.logged:
            return
        views = getattr(batch, "views", None)
        self.logged = True
        if trainer.global_rank != 0 or not views or not all(isinstance(v, Tensor) and v.ndim == 4 for v in views):
            return
        grid = view_grid(list(views), self.num_samples)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("train/views", grid, trainer.global_step)
