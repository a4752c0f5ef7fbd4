"""BYOL and SimSiam cosine losses on orthogonal, identical and opposite vectors."""

import pytest
import torch

from lightning_ssl.losses import BYOLLoss, NegativeCosineSimilarity, byol_loss, negative_cosine_similarity


def test_byol_hand_values():
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert byol_loss(e1, e2).item() == pytest.approx(2.0)  # orthogonal: 2 - 2 * 0
    assert byol_loss(e1, 5 * e1).item() == pytest.approx(0.0, abs=1e-7)  # identical direction
    assert byol_loss(e1, -e1).item() == pytest.approx(4.0)  # opposite
    # batch mean of the three cases
    p = torch.cat([e1, e1, e1])
    z = torch.cat([e2, 5 * e1, -e1])
    assert BYOLLoss()(p, z).item() == pytest.approx((2 + 0 + 4) / 3)


def test_byol_is_normalised_squared_distance():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 5, generator=g, dtype=torch.float64)
    pn = p / p.norm(dim=1, keepdim=True)
    zn = z / z.norm(dim=1, keepdim=True)
    expected = ((pn - zn) ** 2).sum(dim=1).mean()
    assert byol_loss(p, z).item() == pytest.approx(expected.item(), rel=1e-12)


def test_simsiam_hand_values():
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert negative_cosine_similarity(e1, e2).item() == pytest.approx(0.0, abs=1e-7)
    assert negative_cosine_similarity(e1, 3 * e1).item() == pytest.approx(-1.0)
    assert NegativeCosineSimilarity()(e1, -e1).item() == pytest.approx(1.0)
    # 45 degrees
    assert negative_cosine_similarity(e1, e1 + e2).item() == pytest.approx(-(2**-0.5))


@pytest.mark.parametrize("fn", [byol_loss, negative_cosine_similarity])
def test_stop_gradient_on_target(fn):
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    fn(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None
