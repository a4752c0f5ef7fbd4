"""Graph losses on 2 CPU processes (gloo): gather with unequal row counts, CCA-SSG and DGI equal one process
on the concatenated rows (value, and gradients after DDP's averaging), and a 2-process Lightning fit.

Rows per rank are unequal in graph SSL (the seed nodes of sampled subgraphs, a full graph sharded by
``node % world_size`` with an odd node count), so every case runs with 3 + 5 rows as well as 4 + 4.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from ddp_utils import free_port, run_ddp
from graph_helpers import CORA_NODES, PLANETOID

pytestmark = pytest.mark.ddp

N_GLOBAL, D_IN, D_OUT = 8, 6, 4
SPLITS = {"equal": (4, 4), "unequal": (3, 5)}


class LinearEncoder(nn.Linear):
    """A stand-in encoder (rows -> embeddings) with the ``out_dim`` contract."""

    def __init__(self) -> None:
        super().__init__(D_IN, D_OUT)
        self.out_dim = D_OUT


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64)
    x2 = x + 0.3 * torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64)  # a second view
    corrupt = x[torch.randperm(N_GLOBAL, generator=g)]  # DGI's shuffled features
    return x, x2, corrupt


def _rows(split: tuple[int, int], rank: int) -> slice:
    start = sum(split[:rank])
    return slice(start, start + split[rank])


def _cca(x: torch.Tensor, x2: torch.Tensor, corrupt: torch.Tensor) -> dict:
    from lightning_ssl.losses import cca_ssg_loss

    torch.manual_seed(0)
    enc = LinearEncoder().double()
    loss = cca_ssg_loss(enc(x), enc(x2), lambd=0.1)["loss"]
    loss.backward()
    return {"loss": loss.detach(), "grads": [p.grad.clone() for p in enc.parameters()]}


def _dgi(x: torch.Tensor, x2: torch.Tensor, corrupt: torch.Tensor) -> dict:
    from lightning_ssl.data import SSLBatch
    from lightning_ssl.methods import DGI
    from lightning_ssl.methods.base import ViewOutputs

    torch.manual_seed(0)
    model = DGI(LinearEncoder()).double()
    h_real, h_fake = model.encoder(x), model.encoder(corrupt)
    summary = model.readout(h_real)
    out = model.compute_loss(ViewOutputs(embeddings=[h_real, h_fake], projections=[h_real, h_fake], batch=SSLBatch()))
    out["loss"].backward()
    return {"loss": out["loss"].detach(), "summary": summary.detach(),
            "grads": [p.grad.clone() for p in model.parameters() if p.grad is not None],
            "names": [n for n, p in model.named_parameters() if p.grad is not None]}


LOSSES = {"cca_ssg": _cca, "dgi": _dgi}


def _gather_case(rank: int, world: int, split: tuple[int, int]) -> dict:
    """gather_with_grad on rows 3 + 5: the concatenation, and the gradients of rank-dependent losses."""
    from lightning_ssl.distributed import gather_with_grad

    g = torch.Generator().manual_seed(11)
    full = torch.randn(N_GLOBAL, D_OUT, generator=g, dtype=torch.float64)
    weights = [torch.randn(N_GLOBAL, D_OUT, generator=g, dtype=torch.float64) for _ in range(world)]
    local = full[_rows(split, rank)].clone().requires_grad_()
    gathered = gather_with_grad(local)
    (gathered * weights[rank]).sum().backward()  # each rank its own loss
    return {"gathered": gathered.detach(), "grad": local.grad.clone(), "expected_grad": sum(weights)[_rows(split, rank)]}


def _worker(rank: int, world: int) -> dict:
    from lightning_ssl.distributed import uneven_rows

    # what SSLMethod.training_step does for batches with a row mask (ranks may hold different counts)
    with uneven_rows():
        return _worker_uneven(rank, world)


def _worker_uneven(rank: int, world: int) -> dict:
    from lightning_ssl.distributed import all_reduce_mean

    x, x2, corrupt = _inputs()
    results: dict = {}
    for split_name, split in SPLITS.items():
        rows = _rows(split, rank)
        results[("gather", split_name)] = _gather_case(rank, world, split)
        for name, fn in LOSSES.items():
            res = fn(x[rows], x2[rows], corrupt[rows])
            # what DDP does with the parameters' gradients; and the logged loss (sync_dist mean)
            res["avg_grads"] = [all_reduce_mean(g) for g in res["grads"]]
            res["mean_loss"] = all_reduce_mean(res["loss"])
            results[(name, split_name)] = res
    return results


@pytest.mark.parametrize("split", list(SPLITS))
def test_gather_with_grad_unequal_rows(ddp_results, split):
    full = torch.randn(N_GLOBAL, D_OUT, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    for rank, per_rank in enumerate(ddp_results):
        got = per_rank[("gather", split)]
        assert got["gathered"].shape == (N_GLOBAL, D_OUT)
        torch.testing.assert_close(got["gathered"], full, rtol=0, atol=0)
        assert got["grad"].shape == (SPLITS[split][rank], D_OUT)
        # the gradient of every rank's loss reaches the rows it came from (sum over ranks)
        torch.testing.assert_close(got["grad"], got["expected_grad"])


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("name", list(LOSSES))
def test_graph_loss_equals_single_process(ddp_results, name, split):
    ref = LOSSES[name](*_inputs())
    for rank, per_rank in enumerate(ddp_results):
        got = per_rank[(name, split)]
        if name == "cca_ssg":  # the global loss on every rank
            torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-10, atol=0, msg=f"loss on rank {rank}")
        torch.testing.assert_close(got["mean_loss"], ref["loss"], rtol=1e-10, atol=0, msg=f"mean loss, rank {rank}")
        if name == "dgi":
            assert got["names"] == ref["names"]  # encoder and discriminator
            torch.testing.assert_close(got["summary"], ref["summary"], msg="the summary is over all ranks' rows")
        assert len(got["avg_grads"]) == len(ref["grads"])
        for g, g_ref in zip(got["avg_grads"], ref["grads"]):
            torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-12, msg=f"{name} grads on rank {rank}")


# ---------------------------------------------------------------------------------------------- Lightning fit


STEPS_PER_EPOCH = 2


def _fit_worker(rank: int, world: int, port: int, cache: str, mode: str = "full") -> dict:
    import warnings

    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from graph_helpers import cora_dm, tiny_gnn
    from lightning_ssl.methods import CCASSG

    warnings.filterwarnings("ignore")
    # the process group exists already (run_ddp): Lightning joins it instead of launching processes
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    L.seed_everything(0, verbose=False)
    dm = cora_dm(cache, steps_per_epoch=STEPS_PER_EPOCH, mode=mode, num_neighbors=[5, 5], batch_size=512)
    model = CCASSG(tiny_gnn(width=16, activation="relu", act_last=False), optimizer="adam", lr=1e-2,
                   warmup_epochs=0, min_lr_factor=1.0)
    before = model.encoder.convs[0].lin.weight.detach().clone()
    steps: list = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.append({"loss": float(outputs["loss"]), "mask": batch.mask.clone(), "rows": outputs["embeddings"].shape[0],
                          "seeds": batch.index[batch.mask].clone()})

    trainer = L.Trainer(accelerator="cpu", devices=world, strategy=DDPStrategy(process_group_backend="gloo"),
                        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[Record()])
    trainer.fit(model, dm)
    return {"world": trainer.world_size, "steps": steps, "global_step": trainer.global_step,
            "logged": float(trainer.callback_metrics["train/loss"]),
            "weight": model.encoder.convs[0].lin.weight.detach().clone(), "before": before}


def _all_worker(rank: int, world: int, port: int, cache: str) -> dict:
    """One spawn for the whole module (starting two interpreters with Lightning and PyG costs most of the time)."""
    return {"losses": _worker(rank, world), "fit": _fit_worker(rank, world, port, cache),
            "fit_neighbor": _fit_worker(rank, world, port, cache, mode="neighbor")}


@pytest.fixture(scope="module")
def _spawned(tmp_path_factory) -> list[dict]:
    assert (PLANETOID / "Cora" / "raw").is_dir()
    cache = tmp_path_factory.mktemp("ddp_cache")
    return run_ddp(_all_worker, free_port(), str(cache), world_size=2, timeout=240)


@pytest.fixture(scope="module")
def ddp_results(_spawned) -> list[dict]:
    return [r["losses"] for r in _spawned]


@pytest.fixture(scope="module")
def fit_results(_spawned) -> list[dict]:
    return [r["fit"] for r in _spawned]


def test_two_process_fit_full_mode(fit_results):
    r0, r1 = fit_results
    assert r0["world"] == r1["world"] == 2
    assert len(r0["steps"]) == len(r1["steps"]) >= 1
    for rank, res in enumerate(fit_results):
        for step in res["steps"]:
            # every node counts on exactly one rank: node % 2 == rank
            assert torch.equal(step["mask"], torch.arange(CORA_NODES) % 2 == rank)
            assert step["rows"] == CORA_NODES // 2
    # the CCA-SSG loss is global: the same number on both ranks, every step, and as logged
    assert [s["loss"] for s in r0["steps"]] == pytest.approx([s["loss"] for s in r1["steps"]], rel=1e-6)
    assert r0["logged"] == pytest.approx(r1["logged"], rel=1e-6)
    assert r0["logged"] == pytest.approx(r0["steps"][-1]["loss"], rel=1e-6)
    # DDP kept the replicas identical, and they trained
    torch.testing.assert_close(r0["weight"], r1["weight"])
    assert not torch.equal(r0["weight"], r0["before"])


def test_two_process_fit_honours_steps_per_epoch(fit_results):
    for res in fit_results:
        assert res["global_step"] == STEPS_PER_EPOCH, res["global_step"]


def test_two_process_fit_neighbor_mode(_spawned):
    """Neighbour mode under DDP: Lightning's DistributedSampler splits the seed nodes (no node is a seed on
    both ranks), each rank drops its last partial batch, and the global CCA-SSG loss is the same number on
    both ranks."""
    r0, r1 = (r["fit_neighbor"] for r in _spawned)
    assert len(r0["steps"]) == len(r1["steps"]) == 2  # 1354 seeds per rank: 2 batches of 512, 330 dropped
    seeds = torch.cat([s["seeds"] for r in (r0, r1) for s in r["steps"]])
    assert seeds.numel() == 2048 and seeds.unique().numel() == 2048
    assert [s["rows"] for s in r0["steps"]] == [512, 512]
    assert [s["loss"] for s in r0["steps"]] == pytest.approx([s["loss"] for s in r1["steps"]], rel=1e-6)
    torch.testing.assert_close(r0["weight"], r1["weight"])
    assert not torch.equal(r0["weight"], r0["before"])
