"""SupCon (Khosla et al. 2020): L_out against a per-anchor loop of the paper's formula and the reference
code's value, NT-Xent equivalence with unique labels, label checks, and DDP (2 gloo processes)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddp_utils import run_ddp
from lightning_ssl.losses.nt_xent import nt_xent_loss
from lightning_ssl.losses.supcon import SupConLoss, check_labels, supcon_loss


def _loop_l_out(views: list[torch.Tensor], labels: torch.Tensor, t: float) -> float:
    """The paper's Eq. 2 anchor by anchor, averaged over anchors:
    L_i = -1/|P(i)| sum_p log(exp(z_i.z_p/t) / sum_{a != i} exp(z_i.z_a/t))."""
    z = [F.normalize(v, dim=1) for v in views]
    rows = [(z[v][s], int(labels[s])) for v in range(len(z)) for s in range(z[0].shape[0])]
    total, anchors = 0.0, 0
    for i, (zi, yi) in enumerate(rows):
        denom = sum(math.exp(float(zi @ za) / t) for a, (za, _) in enumerate(rows) if a != i)
        positives = [p for p, (_, yp) in enumerate(rows) if p != i and yp == yi]
        if not positives:
            continue
        total += -sum(float(zi @ rows[p][0]) / t - math.log(denom) for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def _loop_l_in(views: list[torch.Tensor], labels: torch.Tensor, t: float) -> float:
    """The paper's Eq. 3 (1/|P(i)| inside the log): the variant SupCon does *not* use."""
    z = [F.normalize(v, dim=1) for v in views]
    rows = [(z[v][s], int(labels[s])) for v in range(len(z)) for s in range(z[0].shape[0])]
    total = 0.0
    for i, (zi, yi) in enumerate(rows):
        denom = sum(math.exp(float(zi @ za) / t) for a, (za, _) in enumerate(rows) if a != i)
        positives = [p for p, (_, yp) in enumerate(rows) if p != i and yp == yi]
        total += -math.log(sum(math.exp(float(zi @ rows[p][0]) / t) for p in positives) / len(positives) / denom)
    return total / len(rows)


def _views(n: int = 8, d: int = 6, n_views: int = 2, seed: int = 11) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    return [z1] + [z1 + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(n_views - 1)]


LABELS = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])


@pytest.mark.parametrize("n_views", [2, 3])
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_matches_per_anchor_loop(n_views, t):
    views = _views(n_views=n_views)
    got = supcon_loss(views, LABELS, temperature=t).item()
    assert got == pytest.approx(_loop_l_out(views, LABELS, t), rel=1e-10)
    assert SupConLoss(temperature=t)(views, LABELS).item() == pytest.approx(got, rel=1e-12)


def test_is_l_out_not_l_in():
    views = _views()
    got = supcon_loss(views, LABELS, temperature=0.1).item()
    assert abs(got - _loop_l_in(views, LABELS, 0.1)) > 1e-2


@pytest.mark.parametrize("t,expected", [(0.1, 5.373213185375333), (0.5, 2.3141164290253107)])
def test_matches_reference_code_value(t, expected):
    """Values of HobbitLong/SupContrast's SupConLoss (contrast_mode='all', base_temperature = temperature) on
    the same inputs; the reference adds 1e-9 inside its log, hence rel 1e-8."""
    assert supcon_loss(_views(), LABELS, temperature=t).item() == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_unique_labels_reduce_to_nt_xent(t):
    """Every sample its own class: P(i) is the other view only, and SupCon is SimCLR's NT-Xent."""
    a = [v.clone().requires_grad_() for v in _views()]
    b = [v.clone().requires_grad_() for v in _views()]
    got = supcon_loss(a, torch.arange(8), temperature=t)
    ref = nt_xent_loss(b[0], b[1], temperature=t)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    got.backward()
    ref.backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-14)
    # shared labels change the loss: the test above is not trivially true
    assert abs(supcon_loss(_views(), LABELS, temperature=t).item() - ref.item()) > 1e-3


def test_same_class_is_pulled_together():
    """The gradient moves a sample towards a same-class sample of another image (not only its own views)."""
    views = [v.clone().requires_grad_() for v in _views()]
    supcon_loss(views, LABELS, temperature=0.1).backward()
    z0 = F.normalize(views[0][0].detach(), dim=0)
    z2 = F.normalize(views[0][2].detach(), dim=0)  # sample 2 has sample 0's label
    step = -views[0].grad[0]
    tangent = z2 - (z2 @ z0) * z0  # direction towards z2 on the sphere
    assert float(step @ tangent) > 0


def test_single_view_and_label_checks():
    z = _views(n_views=1)[0]
    assert torch.isfinite(supcon_loss([z], LABELS))  # one view, repeated classes: anchors with positives
    with pytest.raises(ValueError, match="no anchor has a positive"):
        supcon_loss([z], torch.arange(8))
    with pytest.raises(ValueError, match="target=None"):
        check_labels(None, 8)
    with pytest.raises(ValueError, match="-1 marks an unlabelled sample"):
        supcon_loss(_views(), torch.tensor([0, 1, 0, -1, 1, 0, 3, 2]))
    with pytest.raises(ValueError, match="integer class ids"):
        supcon_loss(_views(), LABELS.float())
    with pytest.raises(ValueError, match="Multi-label"):
        supcon_loss(_views(), torch.zeros(8, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \[8\]"):
        supcon_loss(_views(), LABELS[:5])
    with pytest.raises(ValueError, match="temperature must be positive"):
        supcon_loss(_views(), LABELS, temperature=0.0)
    assert torch.equal(check_labels(LABELS[:, None], 8), LABELS)  # [N, 1] targets (MedMNIST files) accepted


# ---------------------------------------------------------------------------------------- DDP
N_GLOBAL, D_IN = 16, 6


def _inputs() -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    base = torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64)
    views = [base + 0.3 * torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64) for _ in range(2)]
    labels = torch.randint(0, 4, (N_GLOBAL,), generator=g)
    return views, labels


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(D_IN, 8).double()


def _run(model: nn.Module, views: list[torch.Tensor], labels: torch.Tensor, gather: bool = True) -> dict:
    n = views[0].shape[0]
    z = model(torch.cat(views)).split(n)
    loss = supcon_loss(list(z), labels, temperature=0.1, gather=gather)
    loss.backward()
    return {"loss": loss.detach(), "grads": [p.grad.clone() for p in model.parameters()]}


def _worker(rank_: int, world_size_: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    views, labels = _inputs()
    n = N_GLOBAL // world_size_
    sl = slice(rank_ * n, (rank_ + 1) * n)
    out = _run(DDP(_model()), [v[sl] for v in views], labels[sl])
    out["local_loss"] = _run(_model(), [v[sl] for v in views], labels[sl], gather=False)["loss"]
    return out


@pytest.mark.ddp
def test_ddp_equals_single_process():
    views, labels = _inputs()
    ref = _run(_model(), views, labels)
    for r, got in enumerate(run_ddp(_worker, world_size=2)):
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-6, atol=0, msg=f"loss on rank {r}")
        for g, g_ref in zip(got["grads"], ref["grads"]):
            torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-12, msg=f"grads on rank {r}")
        assert abs(got["local_loss"].item() - ref["loss"].item()) > 1e-3  # without the gather: a different loss
