"""NT-Xent (SimCLR) against hand-worked values and an explicit float64 loop re-derivation."""

import math

import numpy as np
import pytest
import torch

from lightning_ssl.losses import NTXentLoss, nt_xent_loss


def _ref_nt_xent(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """Explicit loops: 2N anchors, positive = other view, negatives = the other 2N - 2 rows."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    two_n = z.shape[0]
    n = two_n // 2
    total = 0.0
    for i in range(two_n):
        pos = (i + n) % two_n
        denom = 0.0
        for j in range(two_n):
            if j != i:
                denom += math.exp(float(z[i] @ z[j]) / temperature)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / temperature) / denom)
    return total / two_n


def test_hand_worked_2x2_aligned():
    # views a = a' = e1, b = b' = e2. Anchor a: positive a' (cos 1), negatives b, b' (cos 0)
    # loss = -log(e^{1/T} / (e^{1/T} + e^0 + e^0)), identical for the 4 anchors
    t = 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 1 + 1))
    assert nt_xent_loss(z1, z2, temperature=t).item() == pytest.approx(expected, rel=1e-6)


def test_hand_worked_2x2_swapped():
    # a = e1, b = e2, a' = e2, b' = e1. Anchor a: positive a' (cos 0), negatives b (cos 0), b' (cos 1)
    t = 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.0, 3.0], [2.0, 0.0]])  # norms do not matter
    expected = -math.log(1 / (1 + 1 + math.exp(1 / t)))
    assert nt_xent_loss(z1, z2, temperature=t).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_loop_reference_float64(temperature):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(7, 5, generator=g, dtype=torch.float64)
    z2 = torch.randn(7, 5, generator=g, dtype=torch.float64)
    got = nt_xent_loss(z1, z2, temperature=temperature).item()
    assert got == pytest.approx(_ref_nt_xent(z1.numpy(), z2.numpy(), temperature), rel=1e-10)
    assert NTXentLoss(temperature)(z1, z2).item() == pytest.approx(got, rel=1e-12)


def test_properties():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(32, 8, generator=g)
    z2 = z1 + 0.05 * torch.randn(32, 8, generator=g)
    aligned = nt_xent_loss(z1, z2)
    shuffled = nt_xent_loss(z1, z2[torch.randperm(32, generator=g)])
    assert aligned < shuffled
    # symmetric in the views, invariant to the scale of each row
    assert nt_xent_loss(z2, z1).item() == pytest.approx(aligned.item(), rel=1e-6)
    assert nt_xent_loss(3 * z1, 0.5 * z2).item() == pytest.approx(aligned.item(), rel=1e-5)
    # lower bound: the positive can at best take all the mass among 2N - 1 candidates,
    # upper value for identical rows everywhere: log(2N - 1)
    same = torch.ones(4, 3)
    assert nt_xent_loss(same, same).item() == pytest.approx(math.log(7), rel=1e-6)


def test_gradient_flows_to_both_views():
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = torch.randn(6, 4, requires_grad=True)
    nt_xent_loss(z1, z2).backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0
    assert z2.grad is not None and z2.grad.abs().sum() > 0


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        nt_xent_loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        NTXentLoss(temperature=0.0)
