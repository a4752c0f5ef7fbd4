"""GroCo (Shvetsova et al. 2023) and its relaxed odd-even sorting network: hard-sort limit, double
stochasticity, gradients, the official code's values, the ordering behaviour, bad input and DDP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddp_utils import run_ddp
from lightning_ssl.losses.groco import RELAXATIONS, GroCoLoss, groco_loss, odd_even_sort


def _hard_permutation(x: torch.Tensor) -> torch.Tensor:
    """P[b, argsort(x)[b, j], j] = 1: element argsort[j] goes to ascending rank j."""
    b, n = x.shape
    p = torch.zeros(b, n, n, dtype=x.dtype)
    idx = torch.argsort(x, dim=1)
    for bi in range(b):
        for j in range(n):
            p[bi, idx[bi, j], j] = 1.0
    return p


@pytest.mark.parametrize("relaxation", sorted(RELAXATIONS))
@pytest.mark.parametrize("n", [2, 3, 6, 11])
def test_large_steepness_gives_the_hard_argsort_permutation(relaxation, n):
    g = torch.Generator().manual_seed(n)
    x = torch.stack([torch.randperm(n, generator=g) for _ in range(5)]).double()  # distinct, gaps >= 1
    p = odd_even_sort(x, steepness=1e6, relaxation=relaxation)
    torch.testing.assert_close(p, _hard_permutation(x), rtol=0, atol=1e-4)
    sorted_values = torch.einsum("bi,bij->bj", x, p)
    torch.testing.assert_close(sorted_values, torch.sort(x, dim=1).values, rtol=0, atol=1e-3)


@pytest.mark.parametrize("relaxation", sorted(RELAXATIONS))
@pytest.mark.parametrize("steepness", [0.5, 1.0, 10.0])
def test_relaxed_permutation_is_doubly_stochastic(relaxation, steepness):
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = odd_even_sort(x, steepness=steepness, relaxation=relaxation)
    assert p.shape == (6, 7, 7)
    assert (p >= 0).all() and (p <= 1).all()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(6, 7, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.sum(dim=2), torch.ones(6, 7, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (p - _hard_permutation(x)).abs().max() > 1e-3  # soft at finite steepness


def test_sorted_input_gives_identity_only_in_the_limit():
    x = torch.tensor([[0.0, 0.5, 1.0, 2.0]], dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)[None]
    torch.testing.assert_close(odd_even_sort(x, steepness=1e7), eye, rtol=0, atol=1e-5)
    assert (odd_even_sort(x, steepness=1.0) - eye).abs().max() > 0.1


def test_sorting_network_gradients():
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (odd_even_sort(x, steepness=2.0) * w).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for relaxation in sorted(RELAXATIONS):
        x0 = x.detach().clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda t: odd_even_sort(t, 2.0, relaxation), (x0,))


def test_sorting_network_bad_input():
    with pytest.raises(ValueError, match="Unknown relaxation 'sigmoid'"):
        odd_even_sort(torch.zeros(1, 3), relaxation="sigmoid")
    with pytest.raises(ValueError, match="steepness must be positive"):
        odd_even_sort(torch.zeros(1, 3), steepness=0.0)
    with pytest.raises(ValueError, match=r"\[B, n\]"):
        odd_even_sort(torch.zeros(3))


def _views(n_views: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    base = torch.randn(8, 5, generator=g, dtype=torch.float64)
    return [base + 0.5 * torch.randn(8, 5, generator=g, dtype=torch.float64) for _ in range(3)][:n_views]


# Loss and per-view sum of |grad| of the official code (learning_by_sorting/losses/groco.py, non-distributed,
# float64) with diffsort 0.2.0 on _views(): (n_views, num_positive_views, num_negatives, steepness, stop_grad).
OFFICIAL = [
    ((2, 2, 3, 1.0, True), 0.37868803885519015, [0.03414010449924555, 0.040671928821462075]),
    ((2, 2, 3, 5.0, True), 0.26548004937158654, [0.13532920655232222, 0.1789257416672389]),
    ((3, 3, 7, 1.0, True), 0.28833545453599413, [0.010056929281546714, 0.011587885336934414, 0.012140146409567272]),
    ((3, 2, 3, 1.0, True), 0.3941678729280087, [0.02276006966616371, 0.02711461921430805, 0.031145734963839027]),
    ((2, 2, 3, 1.0, False), 0.37868803885519015, [0.06584497175580528, 0.06842912936207601]),
]


@pytest.mark.parametrize("case,loss,grad_sums", OFFICIAL, ids=[str(c[0]) for c in OFFICIAL])
def test_matches_official_code(case, loss, grad_sums):
    n_views, n_pos, k, steepness, stop_grad = case
    views = [v.requires_grad_() for v in _views(n_views)]
    got = groco_loss(views, num_negatives=k, steepness=steepness, num_positive_views=n_pos, stop_grad=stop_grad)
    assert got.item() == pytest.approx(loss, rel=1e-12)
    got.backward()
    assert [float(v.grad.abs().sum()) for v in views] == pytest.approx(grad_sums, rel=1e-9)
    module = GroCoLoss(num_negatives=k, steepness=steepness, num_positive_views=n_pos, stop_grad=stop_grad)
    assert module(_views(n_views)).item() == pytest.approx(loss, rel=1e-12)


def _ordered(positives_closer: bool) -> list[torch.Tensor]:
    """12 orthogonal samples (negatives at cosine 0); positives at cosine +1 (closer) or -1 (farther)."""
    z = torch.eye(12, 16, dtype=torch.float64)
    return [z, z.clone() if positives_closer else -z]


def test_near_zero_when_positives_rank_first_large_otherwise():
    good = groco_loss(_ordered(True), num_negatives=5, steepness=1000.0).item()
    bad = groco_loss(_ordered(False), num_negatives=5, steepness=1000.0).item()
    assert good < 1e-3
    assert bad > 1.0
    # at the official steepness 1 the relaxation is soft (a perfect order still costs ~0.25), but the order decides
    soft_good = groco_loss(_ordered(True), num_negatives=5, steepness=1.0).item()
    soft_bad = groco_loss(_ordered(False), num_negatives=5, steepness=1.0).item()
    assert 0.1 < soft_good < soft_bad - 0.1


def test_gradient_step_pulls_positives_and_pushes_hard_negatives():
    views = [v.clone().requires_grad_() for v in _views(2)]
    groco_loss(views, num_negatives=3, steepness=5.0).backward()
    before = [v.detach() for v in _views(2)]
    after = [v.detach() - 0.5 * v.grad for v in views]

    def stats(vs):
        a, p = F.normalize(vs[0], dim=1), F.normalize(vs[1], dim=1)
        sim = (a @ a.T).fill_diagonal_(-2.0)
        return (a * p).sum(1).mean(), sim.max(dim=1).values.mean()

    pos_before, neg_before = stats(before)
    pos_after, neg_after = stats(after)
    assert pos_after > pos_before
    assert neg_after < neg_before
    assert groco_loss(after, num_negatives=3, steepness=5.0) < groco_loss(before, num_negatives=3, steepness=5.0)


def test_stop_grad_changes_gradients_not_value():
    a = [v.clone().requires_grad_() for v in _views(2)]
    b = [v.clone().requires_grad_() for v in _views(2)]
    la, lb = groco_loss(a, num_negatives=3, stop_grad=True), groco_loss(b, num_negatives=3, stop_grad=False)
    assert la.item() == pytest.approx(lb.item(), rel=1e-12)
    la.backward()
    lb.backward()
    assert (a[0].grad - b[0].grad).abs().max() > 1e-4


def test_bad_input_and_few_negatives():
    views = _views(2)
    with pytest.warns(UserWarning, match="only 3 negatives per anchor; using 3 instead of num_negatives=10"):
        assert torch.isfinite(groco_loss([v[:4] for v in views], num_negatives=10))
    with pytest.raises(ValueError, match=">= 2 views"):
        groco_loss(views[:1])
    with pytest.raises(ValueError, match="same shape"):
        groco_loss([views[0], views[1][:, :3]])
    with pytest.raises(ValueError, match="num_positive_views must be in"):
        groco_loss(views, num_positive_views=3)
    with pytest.raises(ValueError, match="num_negatives must be >= 1"):
        groco_loss(views, num_negatives=0)
    with pytest.raises(ValueError, match=">= 2 samples"):
        groco_loss([v[:1] for v in views])
    with pytest.raises(ValueError, match="Unknown relaxation"):
        GroCoLoss(relaxation="softmax")


# ---------------------------------------------------------------------------------------- DDP
N_GLOBAL, D_IN = 16, 6


def _inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    base = torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64)
    return [base + 0.4 * torch.randn(N_GLOBAL, D_IN, generator=g, dtype=torch.float64) for _ in range(2)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, 16), nn.Tanh(), nn.Linear(16, 8)).double()


def _run(model: nn.Module, views: list[torch.Tensor], stop_grad: bool, gather: bool = True) -> dict:
    n = views[0].shape[0]
    z = model(torch.cat(views)).split(n)
    loss = groco_loss(list(z), num_negatives=5, steepness=2.0, stop_grad=stop_grad, gather=gather)
    loss.backward()
    return {"loss": loss.detach(), "grads": [p.grad.clone() for p in model.parameters()]}


def _worker(rank_: int, world_size_: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    n = N_GLOBAL // world_size_
    local = [v[rank_ * n : (rank_ + 1) * n] for v in _inputs()]
    out = {sg: _run(DDP(_model()), local, stop_grad=sg) for sg in (True, False)}
    out["local_loss"] = _run(_model(), local, stop_grad=True, gather=False)["loss"]
    return out


@pytest.mark.ddp
def test_ddp_equals_single_process():
    results = run_ddp(_worker, world_size=2)
    for stop_grad in (True, False):
        ref = _run(_model(), _inputs(), stop_grad=stop_grad)
        for r, per_rank in enumerate(results):
            got = per_rank[stop_grad]
            torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-6, atol=0, msg=f"loss on rank {r}")
            for g, g_ref in zip(got["grads"], ref["grads"]):
                torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-12, msg=f"grads on rank {r}")
    ref = _run(_model(), _inputs(), stop_grad=True)
    for per_rank in results:  # negatives mined per rank only: a different loss
        assert abs(per_rank["local_loss"].item() - ref["loss"].item()) > 1e-4
