"""Continual pre-training with the infinite learning-rate schedule: PneumoniaMNIST, then BreastMNIST.

The infinite schedule (Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually Pre-train Large
Language Models"; for self-supervised pre-training, Singh et al. 2025, "Beyond Cosine Decay: On the
effectiveness of Infinite Learning Rate Schedule for Continual Pre-training") warms up once, cools down to a
constant level and stays there; only a run that must hand over a converged model anneals.

- Run 1, task 1 (PneumoniaMNIST chest X-rays): warm-up, cosine cooldown, constant phase, annealing. The
  checkpoint written at the end of the constant phase, before annealing, is kept; the annealed weights are
  task 1's deployable model.
- Run 2, task 2 (BreastMNIST ultrasound, new data): starts from the constant-phase checkpoint with
  ``start_phase: constant``, so its first step already runs at the constant level (no re-warming, the
  source of forgetting that Singh et al. measure for repeated cosine schedules) and it anneals at its end.
  Only the weights carry over; the optimizer state starts afresh.

SimCLR with a tiny encoder and few steps by default: well under a minute on a CPU. The learning rate is
printed at every phase boundary of both runs.

    python examples/continual_pretraining.py [--data-root ../shared/data/medmnist] [--steps 60 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from lightning_ssl.data import ImageDataModule
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.methods import SimCLR
from lightning_ssl.optim import InfiniteSchedule

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"
CONSTANT_FACTOR, MIN_FACTOR = 0.5, 0.05  # constant level and final minimum, as fractions of the peak lr


class RecordLR(L.Callback):
    """The learning rate of every optimizer step, and the checkpoint at the end of the constant phase."""

    def __init__(self, checkpoint: Path | None = None) -> None:
        self.lrs: list[float] = []
        self.checkpoint = checkpoint

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        schedule = trainer.lr_scheduler_configs[0].scheduler
        # global_step counts finished optimizer steps: == anneal_start once the last constant step is done
        if self.checkpoint is not None and trainer.global_step == schedule.anneal_start:
            trainer.save_checkpoint(self.checkpoint)


def encoder() -> TimmEncoder:
    # timm's tiny test ResNet with its standard stride-4 stem (28 px -> 7 x 7 maps): seconds on a CPU.
    # For real runs use e.g. TimmEncoder("resnet18", in_chans=1, small_stem=True).
    return TimmEncoder("test_resnet", in_chans=1, small_stem=False)


def run(model: SimCLR, flag: str, steps: int, root: Path, checkpoint: Path | None = None) -> tuple[RecordLR, dict]:
    data = ImageDataModule(flag, root=str(root), batch_size=32, num_workers=0, device_augmentation=True)
    record = RecordLR(checkpoint)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, enable_model_summary=False, enable_progress_bar=False,
                        callbacks=[record])
    trainer.fit(model, datamodule=data)
    schedule = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(schedule, InfiniteSchedule)
    return record, {"boundaries": schedule.boundaries, "loss": float(trainer.callback_metrics["train/loss"])}


def print_lrs(title: str, record: RecordLR, info: dict) -> None:
    print(f"\n{title}: loss at the end {info['loss']:.3f}")
    print(f"{'step':>6} {'lr':>12}   phase")
    rows = {0: "first step"}
    for phase, end in info["boundaries"].items():
        rows[end] = f"end of {phase}" if end not in rows else f"{rows[end]}, end of {phase}"
    for step, what in sorted(rows.items()):
        print(f"{step:>6} {record.lrs[step]:>12.6e}   {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT,
                        help="folder with pneumoniamnist.npz and breastmnist.npz (default: ../shared/data/medmnist)")
    parser.add_argument("--steps", type=int, nargs=2, default=(60, 30), metavar=("RUN1", "RUN2"))
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    L.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "constant_phase.ckpt"
        # Run 1: the full schedule on task 1; keep the constant-phase checkpoint
        first = {"warmup_fraction": 0.1, "cooldown_fraction": 0.2, "anneal_fraction": 0.2,
                 "constant_factor": CONSTANT_FACTOR, "min_factor": MIN_FACTOR}
        model = SimCLR(encoder(), proj_hidden_dim=64, proj_out_dim=32, temperature=0.2, lr=args.lr,
                       lr_schedule="infinite", infinite_schedule=first)
        rec1, info1 = run(model, "pneumoniamnist", args.steps[0], args.data_root, checkpoint)
        print_lrs(f"run 1: pneumoniamnist, {args.steps[0]} steps (warm-up, cooldown, constant, annealing)", rec1, info1)
        constant_end = info1["boundaries"]["constant"]
        print(f"kept the checkpoint after step {constant_end}, the last step of the constant phase")
        print(f"constant level lr = {rec1.lrs[constant_end]:.6e}")

        # Run 2: new data, resumed from the constant phase: no warm-up, no cooldown, annealing at its end
        continual = {"start_phase": "constant", "anneal_fraction": 0.3,
                     "constant_factor": CONSTANT_FACTOR, "min_factor": MIN_FACTOR}
        model = SimCLR.load_from_checkpoint(checkpoint, encoder=encoder(), infinite_schedule=continual)
        rec2, info2 = run(model, "breastmnist", args.steps[1], args.data_root)
        print_lrs(f"run 2: breastmnist, {args.steps[1]} steps from the constant-phase checkpoint", rec2, info2)
        print(f"run 2 first lr = {rec2.lrs[0]:.6e} (no re-warming: the constant level)")
    print(f"({time.time() - start:.0f} s, torch {torch.__version__})")


if __name__ == "__main__":
    main()
