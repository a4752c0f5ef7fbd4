"""A 2-process DDP fit with RankMe monitored by Lightning's EarlyStopping and ModelCheckpoint.

usage: python rankme_ddp_driver.py OUT_DIR [EPOCHS]

Lightning's "ddp" strategy re-runs this script (same argv) for rank 1. Every rank writes
``OUT_DIR/rank<r>.json`` (the ``rankme`` it saw at the end of each epoch, RankMe's own float64 value,
what EarlyStopping and ModelCheckpoint concluded) and ``OUT_DIR/rank<r>.pt`` (its local validation
embeddings per epoch, in the order the callback received them) for test_rankme_ddp.py to compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lightning_ssl.callbacks import RankMe
from rankme_helpers import RecordOutputs
from ssl_method_helpers import make_datamodule, make_method

NUM_SAMPLES = 48  # 24 per rank; each rank sees 2 val batches of 16 = 32 rows: the cap is exercised
BATCH = 16


class Report(L.Callback):
    def __init__(self, out_dir: Path, rankme_cb: RankMe, rec: RecordOutputs, es: EarlyStopping,
                 ckpt: ModelCheckpoint) -> None:
        self.out_dir, self.rankme_cb, self.rec, self.es, self.ckpt = out_dir, rankme_cb, rec, es, ckpt
        self.float64: dict[int, float] = {}

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.float64[trainer.current_epoch] = self.rankme_cb.last_value["embeddings"]

    def on_fit_end(self, trainer, pl_module):
        rank = trainer.global_rank
        self.out_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "rank": rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "logged": {str(e): v for e, v in self.rec.metric_at_epoch_end.items()},
            "float64": {str(e): v for e, v in self.float64.items()},
            "es_best_score": float(self.es.best_score),
            "es_wait_count": self.es.wait_count,
            "ckpt_best_score": float(self.ckpt.best_model_score),
            "ckpt_best_path": Path(self.ckpt.best_model_path).name,
            "epochs_run": trainer.current_epoch,
        }
        (self.out_dir / f"rank{rank}.json").write_text(json.dumps(report))
        torch.save({e: self.rec.val_rows(e) for e in self.rec.val}, self.out_dir / f"rank{rank}.pt")


def main(out_dir: str, epochs: int) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    out = Path(out_dir)
    rankme_cb = RankMe(num_samples=NUM_SAMPLES)
    rec = RecordOutputs(keys=("embeddings",))
    es = EarlyStopping(monitor="rankme", mode="max", patience=epochs)
    ckpt = ModelCheckpoint(dirpath=str(out / "ckpt"), monitor="rankme", mode="max", save_top_k=1,
                           filename="{epoch}-{rankme:.6f}")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[rankme_cb, rec, es, ckpt, Report(out, rankme_cb, rec, es, ckpt)],
        default_root_dir=str(out),
    )
    model = make_method("SimCLR", lr=0.05)
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=BATCH))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
