"""Point-cloud pretraining on 2 CPU processes (gloo) through Lightning's DDP: every rank reads different clouds,
the ranks end with identical student and EMA-teacher parameters (DDP's gradient averaging; the EMA runs on
identical parameters), and the logged loss is the same number on both ranks. BatchNorm statistics stay per rank
here: PyTorch's SyncBatchNorm (``trainer.sync_batchnorm: true``) only runs on GPUs."""

from __future__ import annotations

import os

import pytest
import torch

from ddp_utils import free_port, run_ddp

pytestmark = pytest.mark.ddp


def _fit_worker(rank: int, world: int, port: int) -> dict:
    import warnings

    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from lightning_ssl.data import PointCloudDataModule
    from lightning_ssl.encoders import PointPatchTransformer
    from lightning_ssl.methods import MaskedFeatureModeling, PointMAE

    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    out = {}
    for name, cls, extra in (("mae", PointMAE, {"decoder_depth": 1, "decoder_num_heads": 2}),
                             ("msm", MaskedFeatureModeling, {})):
        L.seed_everything(0, verbose=False)
        dm = PointCloudDataModule(dataset="synthetic", num_points=64, batch_size=4, synthetic_samples_per_class=4)
        encoder = PointPatchTransformer(num_groups=8, group_size=8, embed_dim=16, depth=2, num_heads=2)
        model = cls(encoder, warmup_epochs=0, **extra)
        seen: list = []

        class Record(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                seen.append(batch.index.clone())

        trainer = L.Trainer(accelerator="cpu", devices=world, strategy=DDPStrategy(process_group_backend="gloo"),
                            max_steps=3, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, callbacks=[Record()])
        trainer.fit(model, dm)
        out[name] = {
            "world": trainer.world_size,
            "seen": torch.cat(seen),
            "params": {k: v.detach().clone() for k, v in model.named_parameters()},
            "logged": float(trainer.callback_metrics["train/loss"]),
        }
    return out


@pytest.fixture(scope="module")
def results() -> list[dict]:
    return run_ddp(_fit_worker, free_port(), world_size=2, timeout=240)


@pytest.mark.parametrize("name", ["mae", "msm"])
def test_two_process_point_pretraining_stays_in_sync(results, name):
    r0, r1 = results[0][name], results[1][name]
    assert r0["world"] == r1["world"] == 2
    assert not set(r0["seen"].tolist()) & set(r1["seen"].tolist())  # the DistributedSampler shards the clouds
    assert r0["logged"] == pytest.approx(r1["logged"])
    assert r0["params"].keys() == r1["params"].keys()
    for key in r0["params"]:
        assert torch.allclose(r0["params"][key], r1["params"][key], atol=1e-6), key
    if name == "msm":
        assert any(k.startswith("teacher.") for k in r0["params"])
