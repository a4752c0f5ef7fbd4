"""``rankme`` and its Gram-matrix path against the paper's definition written out in the test."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.callbacks import RankMe, rankme, rankme_from_singular_values, spectrum_image
from lightning_ssl.callbacks.rankme import singular_values_from_gram
from rankme_helpers import reference_rankme


def _random(n: int, k: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # uneven column scales: a spectrum that is far from flat, so RankMe sits well inside (1, min(N, K))
    scales = torch.logspace(0, -2, k, dtype=torch.float64)
    return (torch.randn(n, k, generator=g, dtype=torch.float64) * scales).to(dtype)


@pytest.mark.parametrize("shape", [(200, 32), (24, 64), (50, 50)], ids=["N>K", "N<K", "N=K"])
def test_rankme_is_the_papers_definition(shape):
    z = _random(*shape)
    value = rankme(z)
    assert value.dtype == torch.float64 and value.ndim == 0
    expected = reference_rankme(z)
    assert float(value) == pytest.approx(expected, rel=1e-12)
    assert 1.0 < float(value) < min(shape)


def test_rankme_does_not_center():
    """A large common offset (one dominant direction) must lower RankMe; centering would hide it."""
    z = _random(300, 16)
    shifted = z + 50.0
    assert float(rankme(shifted)) == pytest.approx(reference_rankme(shifted), rel=1e-12)
    assert float(rankme(shifted)) < 0.5 * float(rankme(z))
    assert float(rankme(shifted)) != pytest.approx(float(rankme(shifted - shifted.mean(0))), rel=1e-3)


def test_eps_is_used():
    z = _random(100, 20)
    default, bigger = float(rankme(z)), float(rankme(z, eps=1e-2))
    assert default == pytest.approx(reference_rankme(z, eps=1e-7), rel=1e-12)
    assert bigger == pytest.approx(reference_rankme(z, eps=1e-2), rel=1e-12)
    assert abs(bigger - default) > 1e-3  # 20 extra terms of 1e-2 move the value visibly


@pytest.mark.parametrize("n,k", [(64, 16), (16, 64)])
def test_equal_singular_values_give_min_n_k(n, k):
    # orthonormal columns (or rows) times a constant: all min(N, K) singular values equal
    q, _ = torch.linalg.qr(torch.randn(max(n, k), min(n, k), dtype=torch.float64))
    z = 3.0 * (q if n >= k else q.T)
    assert z.shape == (n, k)
    assert float(rankme(z)) == pytest.approx(min(n, k), rel=1e-4)


def test_rank_one_matrix_gives_one():
    z = torch.randn(100, 1, dtype=torch.float64) @ torch.randn(1, 32, dtype=torch.float64)
    assert float(rankme(z)) == pytest.approx(1.0, abs=1e-3)
    # a rank-r matrix with equal singular values: ~r
    u, _ = torch.linalg.qr(torch.randn(100, 5, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(32, 5, dtype=torch.float64))
    assert float(rankme(u @ v.T)) == pytest.approx(5.0, rel=1e-4)


def test_rankme_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-d"):
        rankme(torch.randn(4, 3, 2))


@pytest.mark.parametrize("shape", [(300, 48), (20, 48), (48, 48)], ids=["N>K", "N<K", "N=K"])
def test_gram_path_matches_svd(shape):
    z = _random(*shape, seed=1, dtype=torch.float64)
    n, k = shape
    s = singular_values_from_gram(z.T @ z, n)
    assert s.shape == (min(n, k),), "only the min(N, K) largest values are singular values of Z"
    assert torch.all(s[:-1] >= s[1:]), "descending"
    svd = torch.linalg.svdvals(z)
    assert torch.allclose(s, svd, rtol=1e-6)
    assert float(rankme_from_singular_values(s)) == pytest.approx(float(rankme(z)), rel=1e-9)
    assert float(rankme_from_singular_values(s)) == pytest.approx(reference_rankme(z), rel=1e-9)


def test_gram_path_keeps_only_min_n_k_values():
    """For N < K the Gram matrix has K - N (numerically tiny) extra eigenvalues; keeping them would
    add K - N terms of ~eps to the entropy."""
    z = _random(8, 64, seed=2, dtype=torch.float64)
    gram = z.T @ z
    kept = rankme_from_singular_values(singular_values_from_gram(gram, 8))
    every = rankme_from_singular_values(singular_values_from_gram(gram, 64))
    assert float(kept) == pytest.approx(reference_rankme(z), rel=1e-9)
    assert abs(float(every) - float(kept)) > 1e-6


def test_gram_path_on_a_rank_deficient_matrix_is_close():
    # square roots of rounding-level eigenvalues are ~1e-8 * s_max: below eps, so RankMe barely moves
    z = torch.randn(200, 2, dtype=torch.float64) @ torch.randn(2, 40, dtype=torch.float64)
    s = singular_values_from_gram(z.T @ z, 200)
    assert float(rankme_from_singular_values(s)) == pytest.approx(float(rankme(z)), rel=1e-4)


def test_spectrum_image_shape_range_and_curve():
    k = 10
    img = spectrum_image(torch.full((k,), 2.0), height=81, width=40)
    assert img.shape == (3, 81, 40) and img.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    # a flat spectrum is a horizontal line at log10(1/K) on the [log10(floor), 0] axis
    row = round(math.log10(1 / k) / math.log10(1e-8) * 80)
    curve = (img[0] == 0.1) & (img[2] == 0.8)
    for x in (0, 20, 39):
        assert curve[:, x].nonzero().flatten().tolist() == [row]
    # a collapsed spectrum drops to the floor (bottom row) after the first value
    img = spectrum_image(torch.tensor([1.0] + [0.0] * 9), height=81, width=40)
    curve = (img[0] == 0.1) & (img[2] == 0.8)
    assert curve[0, 0] and curve[80, 39]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(source="test"), "source"),
        (dict(num_samples=1), "num_samples"),
        (dict(eps=0.0), "eps"),
        (dict(every_n_epochs=0), "every_n_epochs"),
        (dict(keys=[]), "keys"),
        (dict(spectrum_every_n_epochs=-1), "spectrum_every_n_epochs"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RankMe(**kwargs)


def test_metric_names():
    cb = RankMe(keys="both")
    assert cb.keys == ["embeddings", "projections"]
    assert cb.metric_name("embeddings") == "rankme" and cb.metric_name("projections") == "rankme/projections"
    cb = RankMe(keys="projections", name="rm")
    assert cb.metric_name("projections") == "rm"
