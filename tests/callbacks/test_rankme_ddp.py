"""RankMe under DDP: every rank logs the RankMe of the *global* embedding matrix.

1. The callback's own hooks, driven by hand on 2 gloo processes (``run_ddp``): each rank holds a part
   of a random matrix; every rank's value equals single-process ``rankme`` of the concatenation.
2. A real ``strategy="ddp"`` fit on 2 CPU processes (``rankme_ddp_driver.py``, re-launched by
   Lightning for rank 1) with Lightning's own ``EarlyStopping`` and ``ModelCheckpoint`` on ``rankme``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddp_utils import run_ddp
from lightning_ssl.callbacks import RankMe
from rankme_helpers import FakeModule, FakeTrainer, drive_validation, reference_rankme

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


def _matrix(n: int = 72, k: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, k, generator=g) * torch.linspace(1.0, 0.05, k)


# rows of the global matrix that each rank holds, per case: uneven, equal, one rank without any rows
SPLITS = {
    "uneven": [(0, 50), (50, 72)],
    "equal": [(0, 36), (36, 72)],
    "rank1_empty": [(0, 72), (72, 72)],
}


def _one_case(rank: int, world_size: int, z: torch.Tensor, split: str, num_samples: int, source: str):
    lo, hi = SPLITS[split][rank]
    local = z[lo:hi]
    cb = RankMe(num_samples=num_samples, source=source)
    trainer, module = FakeTrainer(world_size=world_size, global_rank=rank), FakeModule()
    batches = [{"embeddings": local[i : i + 16]} for i in range(0, local.shape[0], 16)]
    if source == "val":
        drive_validation(cb, trainer, module, batches)
    else:
        for i, out in enumerate(batches):
            cb.on_train_batch_end(trainer, module, out, None, i)
        cb.on_train_epoch_end(trainer, module)
    return module.values("rankme"), cb.last_value.get("embeddings")


CASES = {  # name: (split, num_samples, source)
    **{f"val_{split}": (split, 10_000, "val") for split in SPLITS},
    "val_capped": ("uneven", 40, "val"),
    "train_capped": ("uneven", 40, "train"),
}


def _worker(rank: int, world_size: int, z: torch.Tensor):
    # all cases in one process group: starting the ranks costs far more than the cases
    return {name: _one_case(rank, world_size, z, *args) for name, args in CASES.items()}


@pytest.fixture(scope="module")
def ddp_results():
    z = _matrix()
    return z, run_ddp(_worker, z, world_size=2)


@pytest.mark.ddp
@pytest.mark.parametrize("split", sorted(SPLITS))
def test_callback_hooks_give_the_global_rankme_on_every_rank(ddp_results, split):
    z, results = ddp_results
    expected = reference_rankme(z)
    per_rank = [r[f"val_{split}"] for r in results]
    for logged, value in per_rank:
        assert value == pytest.approx(expected, rel=1e-10)
        assert logged == pytest.approx([expected], rel=1e-6)  # logged as float32
    assert per_rank[0][1] == per_rank[1][1], "bit-identical on both ranks"


@pytest.mark.ddp
def test_num_samples_is_split_over_ranks_and_train_source(ddp_results):
    z, results = ddp_results
    # num_samples=40 over 2 ranks: the first 20 rows of each rank's validation embeddings
    v0, v1 = (r["val_capped"][1] for r in results)
    expected = reference_rankme(torch.cat([z[0:20], z[50:70]]))
    assert v0 == v1 == pytest.approx(expected, rel=1e-10)
    # source="train": each rank's bank keeps its last 20 rows
    t0, t1 = (r["train_capped"][1] for r in results)
    expected = reference_rankme(torch.cat([z[30:50], z[52:72]]))
    assert t0 == t1 == pytest.approx(expected, rel=1e-10)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    paths = [str(HERE), str(HERE.parent / "methods"), str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED"):
        env.pop(key, None)
    return env


@pytest.mark.ddp
def test_lightning_ddp_fit_logs_the_same_global_rankme_on_both_ranks(tmp_path):
    epochs = 3
    cmd = [sys.executable, str(HERE / "rankme_ddp_driver.py"), str(tmp_path / "out"), str(epochs)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"

    out = tmp_path / "out"
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    embeddings = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for rank, rep in enumerate(reports):
        assert rep["rank"] == rank and rep["world_size"] == 2 and rep["strategy"] == "DDPStrategy"
        assert sorted(rep["logged"]) == [str(e) for e in range(epochs)]

    # both ranks logged identical values every epoch
    assert reports[0]["logged"] == reports[1]["logged"]
    assert reports[0]["float64"] == reports[1]["float64"]

    per_rank = 24  # driver: num_samples=48 over 2 ranks; each rank saw 2 batches of 16 rows
    for epoch in range(epochs):
        local = [embeddings[r][epoch] for r in (0, 1)]
        assert all(x.shape == (32, 96) for x in local)
        assert not torch.equal(local[0], local[1]), "the ranks validated on different shards"
        expected = reference_rankme(torch.cat([local[0][:per_rank], local[1][:per_rank]]))
        assert reports[0]["float64"][str(epoch)] == pytest.approx(expected, rel=1e-8)
        assert reports[0]["logged"][str(epoch)] == pytest.approx(expected, rel=1e-5)
        # rank 0's half alone gives another value: the metric is the global one
        assert abs(reference_rankme(local[0][:per_rank]) - expected) > 1e-3

    logged = [reports[0]["logged"][str(e)] for e in range(epochs)]
    assert len(set(logged)) == epochs, "the model trained between epochs"
    best = max(logged)
    for rep in reports:
        assert rep["ckpt_best_score"] == pytest.approx(best, rel=1e-6)
        assert rep["ckpt_best_path"].startswith(f"epoch={logged.index(best)}-")
        assert rep["es_best_score"] == pytest.approx(best, rel=1e-6)
        assert rep["es_wait_count"] == epochs - 1 - logged.index(best)
    saved = sorted(p.name for p in (out / "ckpt").iterdir())
    assert saved == [reports[0]["ckpt_best_path"]]
