"""Quickstart: SimCLR pretraining on scikit-learn's real 8x8 digits, label-free monitoring, a linear probe.

Runs in about 2 minutes on 2 CPU cores with no download (the digits ship inside scikit-learn). Each
epoch it prints the label-free RankMe (Garrido et al. 2022, on a bank of the last 1,024 training
embeddings) next to the online linear probe and kNN accuracy on the validation split (180 images);
at the end, linear-probe accuracy of the random-init encoder vs the pretrained one on the held-out
test split (logistic regression on frozen, standardised features; train split 1,257 / test 360 images).

    python examples/quickstart.py [--epochs 6]
"""

from __future__ import annotations

import argparse
import copy
import time

import lightning as L
import torch

from lightning_ssl.callbacks import OnlineKNN, OnlineLinearProbe, RankMe
from lightning_ssl.data import ImageDataModule
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.evaluation import extract_features, linear_probe
from lightning_ssl.methods import SimCLR


class PrintEpochMetrics(L.Callback):
    """Print the label-free and the label-based monitoring metrics after every validation epoch."""

    keys = ("rankme", "probe/val_acc", "knn/val_acc")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.current_epoch == 0:
            print(f"\n{'epoch':>5} {'RankMe':>8} {'probe acc':>10} {'kNN acc':>8}   (RankMe needs no labels)")
        m = trainer.callback_metrics
        values = [f"{float(m[k]):.3f}" if k in m else "-" for k in self.keys]
        print(f"{trainer.current_epoch:>5} {values[0]:>8} {values[1]:>10} {values[2]:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    L.seed_everything(args.seed, verbose=False)
    start = time.time()

    # Digits are 8x8: gentle crops, no flips (a flipped digit is another symbol), views made batched.
    data = ImageDataModule(
        "digits",
        recipe="simclr",
        batch_size=128,
        num_workers=0,
        device_augmentation=True,
        view_overrides={"scale": [0.4, 1.0], "hflip_p": 0.0, "grayscale_p": 0.0},
    )
    # zero_init_last=False: with timm's zero-initialised residual branches the random-init baseline is
    # nearly degenerate on 8x8 inputs (feature rank ~80), which would flatter pretraining.
    encoder = TimmEncoder("resnet18", in_chans=1, small_stem=True, model_kwargs={"zero_init_last": False})
    random_init = copy.deepcopy(encoder)
    model = SimCLR(encoder, proj_hidden_dim=512, proj_out_dim=128, temperature=0.2, lr=3e-3,
                   weight_decay=1e-4, warmup_epochs=1)
    # the validation split has 180 images, fewer than the 512 embedding dimensions: RankMe reads a rolling
    # bank of training embeddings instead (source="train"); probe and kNN report on the validation split
    monitors = [RankMe(source="train", num_samples=1024), OnlineLinearProbe(lr=1e-2), OnlineKNN(k=20),
                PrintEpochMetrics()]
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=5,
                        callbacks=monitors, enable_progress_bar=False)
    trainer.fit(model, data)

    data.setup("test")
    train_loader = data.labelled_train_dataloader()
    rows = []
    for name, enc in (("random init", random_init), ("SimCLR pretrained", encoder), ("raw pixels", torch.nn.Flatten())):
        tr_x, tr_y = extract_features(enc, train_loader)
        te_x, te_y = extract_features(enc, data.test_dataloader())
        rows.append((name, linear_probe(tr_x, tr_y, te_x, te_y)))
    print(f"\nLinear probe on frozen features, digits test split ({rows[0][1]['n_test']} images, 10 classes, chance 0.10)")
    print(f"{'encoder':<20} {'accuracy':>9} {'bal. acc':>9}")
    for name, r in rows:
        print(f"{name:<20} {r['acc']:>9.3f} {r['balanced_acc']:>9.3f}")
    print("(raw pixels: the same probe on the 64 normalised pixel values, for scale)")
    print(f"({args.epochs} epochs, {time.time() - start:.0f} s, torch {torch.__version__})")


if __name__ == "__main__":
    main()
