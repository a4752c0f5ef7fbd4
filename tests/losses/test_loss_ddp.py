"""Distributed losses on 2 CPU processes (gloo): value and gradients equal the single-process run.

One spawn runs every case: a tiny ``nn.Linear`` (same seed on both ranks) wrapped in
``DistributedDataParallel``; each rank feeds its half of a fixed global batch (64 x 16 -> 32,
float64), computes the loss and calls backward. The references are the same loss and gradients
computed in the parent, in one process, on the concatenated batch.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddp_utils import run_ddp
from lightning_ssl.distributed import all_reduce_mean, gather_no_grad, rank, world_size
from lightning_ssl.losses import DINOLoss, barlow_twins_loss, mocov3_loss, nt_xent_loss, vicreg_loss

N_GLOBAL, D_IN, D_OUT = 64, 16, 32
N_VIEWS = 4  # 2 "global" views for all losses, 2 more "local" crops for DINO
CASES = ["nt_xent", "mocov3", "barlow_twins", "vicreg", "dino"]


def _views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64)
    return [base + 0.3 * torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64) for _ in range(N_VIEWS)]


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = nn.Linear(D_IN, D_OUT).double()
    teacher = nn.Linear(D_IN, D_OUT).double()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def _gather_without_autograd(z: torch.Tensor) -> torch.Tensor:
    """The peer-library pattern: all_gather without autograd, then put the local tensor back."""
    chunks = list(gather_no_grad(z).chunk(world_size()))
    chunks[rank()] = z
    return torch.cat(chunks)


def _loss(case: str, model: nn.Module, teacher: nn.Module, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """The loss of ``case`` on ``views`` (local halves under DDP, full batch in one process)."""
    n = views[0].shape[0]
    extra: dict = {}
    if case == "dino":
        out = model(torch.cat(views)).split(n)  # one forward through the (DDP) model
        with torch.no_grad():
            t_out = [teacher(v) for v in views[:2]]
        loss_fn = DINOLoss(D_OUT).double()
        loss = loss_fn(list(out), t_out, teacher_temp=0.04)
        extra["center"] = loss_fn.center.clone()
        return loss, extra
    z1, z2 = model(torch.cat(views[:2])).split(n)
    if case == "nt_xent":
        loss = nt_xent_loss(z1, z2, temperature=0.5)
    elif case == "nt_xent_no_autograd_gather":
        loss = nt_xent_loss(_gather_without_autograd(z1), _gather_without_autograd(z2), temperature=0.5, gather=False)
    elif case == "mocov3":
        with torch.no_grad():
            k1, k2 = teacher(views[0]), teacher(views[1])
        loss = mocov3_loss(z1, z2, k1, k2, temperature=0.2)
    elif case == "barlow_twins":
        loss = barlow_twins_loss(z1, z2)
    elif case == "vicreg":
        loss, terms = vicreg_loss(z1, z2)
        extra.update({k: v.detach() for k, v in terms.items()})
    else:
        raise KeyError(case)
    return loss, extra


def _run_case(case: str, model: nn.Module, teacher: nn.Module, views: list[torch.Tensor]) -> dict:
    loss, extra = _loss(case, model, teacher, views)
    loss.backward()
    return {"loss": loss.detach().clone(), "grads": [p.grad.clone() for p in model.parameters()], **extra}


def _worker(rank_: int, world_size_: int, cases: list[str]) -> dict[str, dict]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    n_local = N_GLOBAL // world_size_
    local = [v[rank_ * n_local : (rank_ + 1) * n_local] for v in _views()]
    results = {}
    for case in cases:
        student, teacher = _models()
        res = _run_case(case, DDP(student), teacher, local)
        if case == "dino":  # per-sample loss, not gathered: the mean over ranks is the global loss
            res["loss"] = all_reduce_mean(res["loss"])
        results[case] = res
    return results


@pytest.fixture(scope="module")
def ddp_results() -> list[dict[str, dict]]:
    return run_ddp(_worker, CASES + ["nt_xent_no_autograd_gather"], world_size=2)


def _single_process(case: str) -> dict:
    student, teacher = _models()
    return _run_case(case, student, teacher, _views())


@pytest.mark.ddp
@pytest.mark.parametrize("case", CASES)
def test_loss_and_grads_equal_single_process(ddp_results, case):
    ref = _single_process(case)
    for r, per_rank in enumerate(ddp_results):
        got = per_rank[case]
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-5, atol=0, msg=f"{case}: loss on rank {r}")
        for g, g_ref in zip(got["grads"], ref["grads"]):
            torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-12, msg=f"{case}: grads on rank {r}")
        for key in ("center", "invariance", "variance", "covariance"):
            if key in ref:
                torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-12, msg=f"{case}: {key} on rank {r}")


@pytest.mark.ddp
def test_gather_without_autograd_scales_gradients(ddp_results):
    """A gather without autograd (peer-library bug) gives the right loss but gradients / world_size."""
    ref = _single_process("nt_xent")
    for per_rank in ddp_results:
        got = per_rank["nt_xent_no_autograd_gather"]
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-5, atol=0)
        for g, g_ref in zip(got["grads"], ref["grads"]):
            assert not torch.allclose(g, g_ref, rtol=1e-2)
            torch.testing.assert_close(g, g_ref / 2, rtol=1e-5, atol=1e-12)


def _failing_worker(rank_: int, world_size_: int) -> None:
    assert rank_ == 0, "deliberate failure on rank 1"


def _echo_worker(rank_: int, world_size_: int, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return gather_no_grad(x[rank_ : rank_ + 1] * scale)


@pytest.mark.ddp
def test_run_ddp_returns_results_and_propagates_assertions():
    out = run_ddp(_echo_worker, torch.tensor([1.0, 2.0]), world_size=2, scale=3.0)
    assert [o.tolist() for o in out] == [[3.0, 6.0], [3.0, 6.0]]
    with pytest.raises(AssertionError, match="deliberate failure on rank 1"):
        run_ddp(_failing_worker, world_size=2)
