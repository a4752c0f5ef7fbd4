"""Research code: subclass a method and override one small hook, never ``training_step``.

Here SimCLR gets an extra uniformity term (Wang & Isola 2020) on the projections: a new objective
in a dozen lines, with heads, multi-view forward, optimizer, logging and DDP handled by the base.

    python examples/subclass_method.py --max-steps 20
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.data import ImageDataModule
from lightning_ssl.distributed import gather_with_grad
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.methods import SimCLR, ViewOutputs


class SimCLRWithUniformity(SimCLR):
    """SimCLR + ``weight`` x log E[exp(-2 ||z_i - z_j||^2)] over the global batch."""

    def __init__(self, *args, uniformity_weight: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.uniformity_weight = uniformity_weight

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        nt_xent = super().compute_loss(out)
        z = F.normalize(gather_with_grad(out.projections[0]), dim=-1)  # global batch under DDP
        uniformity = torch.pdist(z).pow(2).mul(-2).exp().mean().log()
        return {"loss": nt_xent + self.uniformity_weight * uniformity, "nt_xent": nt_xent, "uniformity": uniformity}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=20)
    args = parser.parse_args()
    data = ImageDataModule("digits", batch_size=64, num_workers=0, device_augmentation=True,
                           view_overrides={"scale": [0.4, 1.0], "hflip_p": 0.0})
    model = SimCLRWithUniformity(TimmEncoder("resnet18", in_chans=1, small_stem=True), proj_hidden_dim=256)
    trainer = L.Trainer(max_steps=args.max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        limit_val_batches=0, enable_model_summary=False)
    trainer.fit(model, data)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()}
    print("final metrics:", metrics)


if __name__ == "__main__":
    main()
