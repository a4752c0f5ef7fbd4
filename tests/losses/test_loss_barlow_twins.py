"""Barlow Twins against hand-worked values and an explicit float64 loop re-derivation."""

import math

import numpy as np
import pytest
import torch

from lightning_ssl.losses import BarlowTwinsLoss, barlow_twins_loss, cross_correlation

# rows = 4 samples, columns = 3 features: +-1, zero mean, biased variance 1, mutually orthogonal
HADAMARD_COLS = torch.tensor(
    [[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64
)


def _ref_barlow(z1: np.ndarray, z2: np.ndarray, lam: float, eps: float = 1e-5) -> float:
    n, d = z1.shape

    def bn(z):
        out = np.empty_like(z, dtype=np.float64)
        for k in range(d):
            mean = sum(z[i, k] for i in range(n)) / n
            var = sum((z[i, k] - mean) ** 2 for i in range(n)) / n  # biased
            for i in range(n):
                out[i, k] = (z[i, k] - mean) / math.sqrt(var + eps)
        return out

    a, b = bn(z1), bn(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[s, i] * b[s, j] for s in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


def test_identical_decorrelated_inputs_give_zero():
    z = HADAMARD_COLS
    # C = I / (1 + eps) exactly, so the loss is D * (1 - 1 / (1 + 1e-5))^2 ~ 3e-10
    got = barlow_twins_loss(z, z.clone()).item()
    assert got == pytest.approx(3 * (1 - 1 / (1 + 1e-5)) ** 2, rel=1e-6)
    assert got < 1e-9
    # BN removes scale and shift up to eps: variance 49 gives C_ii = 1 / sqrt((1 + eps)(1 + eps / 49))
    got = barlow_twins_loss(z, 7 * z + 2).item()
    c = 1 / math.sqrt((1 + 1e-5) * (1 + 1e-5 / 49))
    assert got == pytest.approx(3 * (1 - c) ** 2, rel=1e-6)
    assert got < 1e-9


def test_hand_worked_anticorrelated_and_mixed():
    z = HADAMARD_COLS
    # z2 = -z1: C = -I / (1 + eps): loss = D * (1 + 1/(1+eps))^2
    c = 1 / (1 + 1e-5)
    assert barlow_twins_loss(z, -z).item() == pytest.approx(3 * (1 + c) ** 2, rel=1e-9)
    # z2 = z1 with columns 0 and 1 swapped: C has C_01 = C_10 = c, C_22 = c, C_00 = C_11 = 0
    z2 = z[:, [1, 0, 2]]
    expected = (1 - 0) ** 2 + (1 - 0) ** 2 + (1 - c) ** 2 + 0.0051 * 2 * c**2
    assert barlow_twins_loss(z, z2).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("lam", [0.0051, 0.5])
def test_matches_loop_reference_float64(lam):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(10, 6, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(10, 6, generator=g, dtype=torch.float64)
    got = barlow_twins_loss(z1, z2, lambda_offdiag=lam).item()
    assert got == pytest.approx(_ref_barlow(z1.numpy(), z2.numpy(), lam), rel=1e-10)
    assert BarlowTwinsLoss(lam)(z1, z2).item() == pytest.approx(got, rel=1e-12)


def test_per_chunk_normalisation_is_a_different_loss():
    """Normalising each half separately and averaging the halves' C (peer libraries) differs."""
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(64, 32, generator=g, dtype=torch.float64) + torch.linspace(-1, 1, 64, dtype=torch.float64)[:, None]
    z2 = z1 + 0.5 * torch.randn(64, 32, generator=g, dtype=torch.float64)
    c = 0.5 * (cross_correlation(z1[:32], z2[:32]) + cross_correlation(z1[32:], z2[32:]))
    diag = torch.diagonal(c)
    per_chunk = ((1 - diag) ** 2).sum() + 0.0051 * ((c**2).sum() - (diag**2).sum())
    full = barlow_twins_loss(z1, z2)
    assert abs(per_chunk.item() - full.item()) / full.item() > 1e-3
