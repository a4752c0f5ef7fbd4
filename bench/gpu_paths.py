"""The GPU paths of training with label-free monitoring (a check to run on a GPU machine, not a test).

Trains SimCLR (ResNet-18, small stem) on PneumoniaMNIST with device augmentation and the monitoring
callbacks (RankMe, OnlineLinearProbe, OnlineKNN, ModelCheckpoint on rankme) in three set-ups:
fp32 on one GPU; bf16-mixed + channels_last; bf16-mixed under ``strategy="ddp"`` on one GPU (NCCL
process group of size 1). For each it prints the epoch time, the logged metrics, and the relative
difference between the logged ``rankme`` and a float64 SVD of the validation embeddings collected
independently (which must be below 1e-6).

    python bench/gpu_paths.py --root ../shared/data/medmnist --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_ssl.callbacks import OnlineKNN, OnlineLinearProbe, RankMe, rankme
from lightning_ssl.data import ImageDataModule
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.methods import SimCLR


class CollectValEmbeddings(L.Callback):
    """Keeps the validation embeddings of the last validation epoch (an independent copy)."""

    def on_validation_epoch_start(self, trainer, pl_module):
        self.rows = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.rows.append(outputs["embeddings"].detach().float().cpu())


class EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.last = time.perf_counter() - self.t0


def run(args: argparse.Namespace, precision: str, strategy: str, channels_last: bool) -> dict:
    L.seed_everything(0, verbose=False)
    data = ImageDataModule("pneumoniamnist", root=args.root, device_augmentation=True, batch_size=args.batch_size,
                           num_workers=args.num_workers)
    model = SimCLR(TimmEncoder("resnet18", in_chans=1, small_stem=True), proj_hidden_dim=2048, proj_out_dim=256,
                   temperature=0.2, lr=1e-3, warmup_epochs=1)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    collect, timer = CollectValEmbeddings(), EpochTimer()
    ckpt_dir = tempfile.mkdtemp()
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, monitor="rankme", mode="max", save_top_k=1)
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=1, limit_train_batches=args.limit_batches,
        limit_val_batches=args.limit_batches, strategy=strategy, precision=precision, max_epochs=args.epochs,
        logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[RankMe(), OnlineLinearProbe(), OnlineKNN(), collect, timer, checkpoint],
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    wall = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    reference = float(rankme(torch.cat(collect.rows)))
    return {
        "setup": f"{precision}{' + channels_last' if channels_last else ''}, strategy={strategy}",
        "wall_s": wall,
        "last_epoch_s": timer.last,
        "rankme": metrics.get("rankme", float("nan")),
        "rankme_svd_f64": reference,
        "rel_diff": abs(metrics.get("rankme", float("nan")) - reference) / reference,
        "probe_acc": metrics.get("probe/val_acc", float("nan")),
        "probe_auroc": metrics.get("probe/val_auroc", float("nan")),
        "knn_acc": metrics.get("knn/val_acc", float("nan")),
        "best_ckpt": Path(checkpoint.best_model_path).name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--accelerator", default="gpu", help="cpu only for a dry run of the script")
    parser.add_argument("--limit-batches", type=float, default=1.0)
    args = parser.parse_args()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_paths.py needs a CUDA GPU (or --accelerator cpu for a dry run).")
    torch.set_float32_matmul_precision("high")
    name = torch.cuda.get_device_name() if args.accelerator == "gpu" else "cpu (dry run)"
    print(f"device: {name}, torch {torch.__version__}, lightning {L.__version__}")
    rows = [run(args, "32-true", "auto", False), run(args, "bf16-mixed", "auto", True)]
    if args.accelerator == "gpu":  # ddp on one GPU: an NCCL process group of size 1
        rows.append(run(args, "bf16-mixed", "ddp", False))
    print("\n| setup | wall s | last epoch s | rankme | rankme (f64 SVD) | rel. diff | probe acc | probe AUROC | kNN acc | best checkpoint |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['setup']} | {r['wall_s']:.1f} | {r['last_epoch_s']:.2f} | {r['rankme']:.3f} | {r['rankme_svd_f64']:.3f} | "
              f"{r['rel_diff']:.1e} | {r['probe_acc']:.3f} | {r['probe_auroc']:.3f} | {r['knn_acc']:.3f} | {r['best_ckpt']} |")
    bad = [r["setup"] for r in rows if not r["rel_diff"] < 1e-6]
    if bad:
        raise SystemExit(f"logged rankme differs from the float64 SVD in: {bad}")


if __name__ == "__main__":
    main()
