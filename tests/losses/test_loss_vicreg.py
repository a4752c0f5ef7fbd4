"""VICReg against hand-worked values and an explicit float64 loop re-derivation."""

import math

import numpy as np
import pytest
import torch

from lightning_ssl.losses import VICRegLoss, vicreg_loss

HADAMARD_COLS = torch.tensor(
    [[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64
)


def _ref_vicreg(z1: np.ndarray, z2: np.ndarray, eps: float = 1e-4) -> tuple[float, float, float]:
    n, d = z1.shape
    inv = sum((z1[i, k] - z2[i, k]) ** 2 for i in range(n) for k in range(d)) / (n * d)

    def var_term(z):
        tot = 0.0
        for k in range(d):
            mean = sum(z[i, k] for i in range(n)) / n
            var = sum((z[i, k] - mean) ** 2 for i in range(n)) / (n - 1)  # unbiased
            tot += max(0.0, 1 - math.sqrt(var + eps))
        return tot / d

    def cov_term(z):
        means = [sum(z[i, k] for i in range(n)) / n for k in range(d)]
        tot = 0.0
        for a in range(d):
            for b in range(d):
                if a != b:
                    cov = sum((z[i, a] - means[a]) * (z[i, b] - means[b]) for i in range(n)) / (n - 1)
                    tot += cov**2
        return tot / d

    return inv, 0.5 * (var_term(z1) + var_term(z2)), cov_term(z1) + cov_term(z2)


def test_matches_loop_reference_float64():
    g = torch.Generator().manual_seed(0)
    # columns with std below and above 1, correlated columns
    scale = torch.tensor([0.3, 0.8, 1.5, 0.1, 2.0], dtype=torch.float64)
    z1 = torch.randn(12, 5, generator=g, dtype=torch.float64) * scale
    z1[:, 3] += 0.5 * z1[:, 0]
    z2 = z1 + 0.3 * torch.randn(12, 5, generator=g, dtype=torch.float64)
    inv, var, cov = _ref_vicreg(z1.numpy(), z2.numpy())
    loss, terms = vicreg_loss(z1, z2)
    assert terms["invariance"].item() == pytest.approx(inv, rel=1e-10)
    assert terms["variance"].item() == pytest.approx(var, rel=1e-10)
    assert terms["covariance"].item() == pytest.approx(cov, rel=1e-10)
    assert loss.item() == pytest.approx(25 * inv + 25 * var + 1 * cov, rel=1e-10)
    loss2, _ = vicreg_loss(z1, z2, sim_weight=1.0, var_weight=2.0, cov_weight=3.0)
    assert loss2.item() == pytest.approx(inv + 2 * var + 3 * cov, rel=1e-10)


def test_zero_for_identical_decorrelated_wide_inputs():
    z = 2 * HADAMARD_COLS  # unbiased std = 2 * sqrt(4/3) > 1, orthogonal centred columns
    loss, terms = vicreg_loss(z, z.clone())
    assert terms["invariance"].item() == 0.0
    assert terms["variance"].item() == 0.0
    assert terms["covariance"].item() == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_variance_term_zero_when_std_at_least_one():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(256, 8, generator=g, dtype=torch.float64)
    z = (z - z.mean(0)) / z.std(0) * 1.01  # unbiased std exactly 1.01
    _, terms = vicreg_loss(z, z)
    assert terms["variance"].item() == 0.0


def test_collapse_variance_averaged_not_summed():
    # constant embeddings: each branch gives mean(relu(1 - sqrt(0 + 1e-4))) = 0.99; averaged -> 0.99
    z = torch.ones(8, 4, dtype=torch.float64)
    _, terms = vicreg_loss(z, z)
    assert terms["variance"].item() == pytest.approx(0.99, rel=1e-12)
    assert terms["covariance"].item() == 0.0


def test_hand_worked_covariance():
    # two perfectly correlated columns x and 2x with x = (1, -1, 1, -1): var(x) = 4/3, cov = 8/3
    x = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    z = torch.stack([x, 2 * x], dim=1)
    _, terms = vicreg_loss(z, z)
    # per branch: 2 off-diagonal entries of (8/3)^2, divided by D = 2; summed over two branches
    assert terms["covariance"].item() == pytest.approx(2 * (2 * (8 / 3) ** 2 / 2), rel=1e-12)


def test_module_stores_terms():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(6, 3, generator=g, requires_grad=True)
    z2 = torch.randn(6, 3, generator=g)
    mod = VICRegLoss()
    loss = mod(z1, z2)
    ref_loss, ref_terms = vicreg_loss(z1, z2)
    assert loss.item() == pytest.approx(ref_loss.item())
    assert set(mod.last_terms) == {"invariance", "variance", "covariance"}
    for k, v in mod.last_terms.items():
        assert not v.requires_grad
        assert v.item() == pytest.approx(ref_terms[k].item())
    loss.backward()
    assert z1.grad is not None
