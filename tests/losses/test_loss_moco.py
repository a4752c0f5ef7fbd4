"""MoCo v3 loss against a hand-worked value and an explicit float64 loop re-derivation."""

import math

import numpy as np
import pytest
import torch

from lightning_ssl.losses import MoCoV3Loss, mocov3_loss


def _ref_ctr(q: np.ndarray, k: np.ndarray, t: float) -> float:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    n = q.shape[0]
    total = 0.0
    for i in range(n):
        logits = [float(q[i] @ k[j]) / t for j in range(n)]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    return total / n * 2 * t


def test_hand_worked():
    # q = k = (e1, e2): logits [[1/T, 0], [0, 1/T]], each row CE = -log(e^{1/T} / (e^{1/T} + 1))
    t = 0.2
    e = torch.eye(2)
    per = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 1)) * 2 * t
    assert mocov3_loss(e, e, e, e, temperature=t).item() == pytest.approx(2 * per, rel=1e-6)


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_matches_loop_reference_float64(temperature):
    g = torch.Generator().manual_seed(0)
    q1, q2, k1, k2 = (torch.randn(9, 6, generator=g, dtype=torch.float64) for _ in range(4))
    expected = _ref_ctr(q1.numpy(), k2.numpy(), temperature) + _ref_ctr(q2.numpy(), k1.numpy(), temperature)
    got = mocov3_loss(q1, q2, k1, k2, temperature=temperature).item()
    assert got == pytest.approx(expected, rel=1e-10)
    assert MoCoV3Loss(temperature)(q1, q2, k1, k2).item() == pytest.approx(got, rel=1e-12)


def test_keys_get_no_gradient():
    q1, q2 = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    k1, k2 = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    mocov3_loss(q1, q2, k1, k2).backward()
    assert q1.grad is not None and q2.grad is not None
    assert k1.grad is None and k2.grad is None


def test_aligned_lower_than_shuffled():
    g = torch.Generator().manual_seed(2)
    q1, q2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    perm = torch.randperm(16, generator=g)
    assert mocov3_loss(q1, q2, q1, q2) < mocov3_loss(q1, q2, q1[perm], q2[perm])
