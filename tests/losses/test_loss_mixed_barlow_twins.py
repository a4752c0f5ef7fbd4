"""Mixed Barlow Twins (Bandara et al. 2023): the regulariser written out as in the paper / official main.py,
limits that must hold, bad input, and DDP (2 gloo processes) against one process on the concatenated batch.

That the method draws the same lambda on every rank is tested in tests/methods/test_method_research.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddp_utils import run_ddp
from lightning_ssl.losses.barlow_twins import barlow_twins_loss
from lightning_ssl.losses.mixed_barlow_twins import MixedBarlowTwinsLoss, mix_images, mixed_barlow_twins_loss

N, D_IN, D = 12, 6, 5


def _bn(z: torch.Tensor) -> torch.Tensor:
    # an independent BatchNorm1d(affine=False) in training mode
    return F.batch_norm(z, None, None, training=True, eps=1e-5)


def _reference(z1, z2, zm, perm, lam, lambda_offdiag, lambda_reg):
    """The paper's / official main.py's terms written out matrix by matrix (C_m1, C_m1_gt, C_m2, C_m2_gt)."""
    n = z1.shape[0]
    z1n, z2n, zmn = _bn(z1), _bn(z2), _bn(zm)
    c_m1 = zmn.T @ z1n / n
    c_m1_gt = lam * (z1n.T @ z1n) / n + (1 - lam) * (z2n[perm].T @ z1n) / n
    c_m2 = zmn.T @ z2n / n
    c_m2_gt = lam * (z1n.T @ z2n) / n + (1 - lam) * (z2n[perm].T @ z2n) / n
    reg = lambda_reg * lambda_offdiag * (((c_m1 - c_m1_gt) ** 2).sum() + ((c_m2 - c_m2_gt) ** 2).sum())
    c = z1n.T @ z2n / n
    on = ((1 - torch.diagonal(c)) ** 2).sum()
    off = (c**2).sum() - (torch.diagonal(c) ** 2).sum()
    return on + lambda_offdiag * off, reg


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(N, D, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64)
    zm = torch.randn(N, D, generator=g, dtype=torch.float64)
    perm = torch.randperm(N, generator=g)
    return z1, z2, zm, perm


@pytest.mark.parametrize("lam,lambda_reg,lambda_offdiag", [(0.3, 4.0, 0.0078125), (0.0, 2.0, 0.0051), (1.0, 1.0, 0.5)])
def test_matches_written_out_formula(lam, lambda_reg, lambda_offdiag):
    z1, z2, zm, perm = _data()
    loss, terms = mixed_barlow_twins_loss(z1, z2, zm, perm, lam, lambda_offdiag=lambda_offdiag, lambda_reg=lambda_reg)
    bt_ref, reg_ref = _reference(z1, z2, zm, perm, lam, lambda_offdiag, lambda_reg)
    assert reg_ref.item() > 1e-3  # random z_m: the regulariser is far from 0, so the comparison means something
    assert terms["mix_reg"].item() == pytest.approx(reg_ref.item(), rel=1e-10)
    assert terms["barlow_twins"].item() == pytest.approx(bt_ref.item(), rel=1e-10)
    assert loss.item() == pytest.approx(bt_ref.item() + reg_ref.item(), rel=1e-10)
    module = MixedBarlowTwinsLoss(lambda_offdiag=lambda_offdiag, lambda_reg=lambda_reg)
    assert module(z1, z2, zm, perm, lam).item() == pytest.approx(loss.item(), rel=1e-12)


def test_regulariser_is_zero_when_mixing_is_linear_and_scales_with_lambda_reg():
    z1, _, zm, _ = _data(1)
    identity = torch.arange(N)
    # identical views and no shuffle: z_m = z1 is exactly the interpolation, whatever lambda
    _, terms = mixed_barlow_twins_loss(z1, z1.clone(), z1.clone(), identity, 0.37)
    assert terms["mix_reg"].item() < 1e-20
    _, t1 = mixed_barlow_twins_loss(z1, z1.clone(), zm, identity, 0.37, lambda_reg=1.0)
    _, t3 = mixed_barlow_twins_loss(z1, z1.clone(), zm, identity, 0.37, lambda_reg=3.0)
    assert t1["mix_reg"].item() > 1e-3
    assert t3["mix_reg"].item() == pytest.approx(3 * t1["mix_reg"].item(), rel=1e-12)
    # lambda_reg = 0 is plain Barlow Twins
    z1, z2, zm, perm = _data(2)
    loss0, _ = mixed_barlow_twins_loss(z1, z2, zm, perm, 0.5, lambda_reg=0.0)
    assert loss0.item() == pytest.approx(barlow_twins_loss(z1, z2).item(), rel=1e-12)


def test_gradients_reach_all_three_branches():
    z1, z2, zm, perm = (t.requires_grad_() if t.is_floating_point() else t for t in _data(3))
    loss, _ = mixed_barlow_twins_loss(z1, z2, zm, perm, 0.6)
    loss.backward()
    for z in (z1, z2, zm):
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_mix_images_formula_and_bad_input():
    g = torch.Generator().manual_seed(4)
    x1, x2 = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    perm = torch.tensor([2, 0, 3, 1])
    xm = mix_images(x1, x2, 0.25, perm)
    for i in range(4):
        assert torch.allclose(xm[i], 0.25 * x1[i] + 0.75 * x2[perm[i]])
    with pytest.raises(ValueError, match="same shape"):
        mix_images(x1, x2[:, :, :2], 0.5, perm)
    with pytest.raises(ValueError, match="must be tensors"):
        mix_images(x1, [x2], 0.5, perm)
    with pytest.raises(ValueError, match=r"lambda must lie in \[0, 1\]"):
        mix_images(x1, x2, -0.1, perm)
    with pytest.raises(ValueError, match=r"lambda must lie in \[0, 1\]"):
        mix_images(x1, x2, 1.5, perm)
    with pytest.raises(ValueError, match="permutation of the 4 rows"):
        mix_images(x1, x2, 0.5, perm[:3])


def test_loss_bad_input():
    z1, z2, zm, perm = _data()
    with pytest.raises(ValueError, match=r"lambda must lie in \[0, 1\]"):
        mixed_barlow_twins_loss(z1, z2, zm, perm, -0.2)
    with pytest.raises(ValueError, match="lambda_reg must be >= 0"):
        mixed_barlow_twins_loss(z1, z2, zm, perm, 0.5, lambda_reg=-1.0)
    with pytest.raises(ValueError, match="lambda_reg must be >= 0"):
        MixedBarlowTwinsLoss(lambda_reg=-1.0)
    with pytest.raises(ValueError, match="must all be"):
        mixed_barlow_twins_loss(z1, z2, zm[:, :3], perm, 0.5)
    with pytest.raises(ValueError, match="permutation"):
        mixed_barlow_twins_loss(z1, z2, zm, perm[:-1], 0.5)


# ---------------------------------------------------------------------------------------- DDP
N_GLOBAL = 16


def _inputs() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], float]:
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64)
    x1 = base + 0.3 * torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64)
    x2 = base + 0.3 * torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64)
    local_perms = [torch.randperm(N_GLOBAL // 2, generator=g) for _ in range(2)]  # each rank's own
    lam = float(np.random.default_rng(0).beta(1.0, 1.0))
    return x1, x2, local_perms, lam


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, 16), nn.Tanh(), nn.Linear(16, 8)).double()


def _run(model: nn.Module, x1, x2, perm, lam, gather: bool = True) -> dict:
    xm = mix_images(x1, x2, lam, perm)
    n = x1.shape[0]
    z1, z2, zm = model(torch.cat([x1, x2, xm])).split(n)
    loss, terms = mixed_barlow_twins_loss(z1, z2, zm, perm, lam, lambda_offdiag=0.0078125, lambda_reg=4.0,
                                          gather=gather)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return {"loss": loss.detach(), "reg": terms["mix_reg"].detach(), "grads": grads}


def _worker(rank_: int, world_size_: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    x1, x2, perms, lam = _inputs()
    n = N_GLOBAL // world_size_
    sl = slice(rank_ * n, (rank_ + 1) * n)
    out = _run(DDP(_model()), x1[sl], x2[sl], perms[rank_], lam)
    local = _model()  # the per-rank loss without the gather (what a gather-less implementation computes)
    out["local_loss"] = _run(local, x1[sl], x2[sl], perms[rank_], lam, gather=False)["loss"]
    return out


@pytest.fixture(scope="module")
def ddp_results() -> list[dict]:
    return run_ddp(_worker, world_size=2)


@pytest.mark.ddp
def test_ddp_equals_single_process_with_block_permutation(ddp_results):
    x1, x2, perms, lam = _inputs()
    block = torch.cat([perms[0], perms[1] + N_GLOBAL // 2])  # the global permutation the ranks' local ones make
    ref = _run(_model(), x1, x2, block, lam)
    assert ref["reg"].item() > 1e-4
    for r, got in enumerate(ddp_results):
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-6, atol=0, msg=f"loss on rank {r}")
        torch.testing.assert_close(got["reg"], ref["reg"], rtol=1e-6, atol=0, msg=f"regulariser on rank {r}")
        for g, g_ref in zip(got["grads"], ref["grads"]):
            torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-12, msg=f"grads on rank {r}")
        # a per-rank loss (no gather) is a different number: the test would catch a missing gather
        assert abs(got["local_loss"].item() - ref["loss"].item()) > 1e-3 * ref["loss"].item()

