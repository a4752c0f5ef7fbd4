"""VectorQuantizer: nearest code against brute force, straight-through values and gradients, which parameters each
loss part reaches, perplexity/usage statistics, dead-code restarts (training only) and input checks; on 2 gloo
ranks the codebook stays identical through restarts and the statistics equal one process on the joint batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddp_utils import run_ddp
from lightning_ssl.heads import VectorQuantizer


def _prep(x: torch.Tensor, cosine: bool) -> torch.Tensor:
    return F.normalize(x, dim=-1) if cosine else x


def _brute_nearest(z: torch.Tensor, codes: torch.Tensor, cosine: bool) -> torch.Tensor:
    out = []
    for row in z:
        if cosine:
            scores = [float(F.cosine_similarity(row, c, dim=0)) for c in codes]
            out.append(max(range(len(scores)), key=scores.__getitem__))
        else:
            dists = [float((row - c).pow(2).sum()) for c in codes]
            out.append(min(range(len(dists)), key=dists.__getitem__))
    return torch.tensor(out)


def _min_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance of every row of ``a`` to its closest row of ``b`` (exact; ``torch.cdist`` may use a matmul)."""
    return (a[:, None, :] - b[None, :, :]).norm(dim=-1).min(dim=1).values


def _one_code_quantizer(cosine: bool, num_codes: int = 8, dim: int = 4, dead: int = 2) -> VectorQuantizer:
    """Code 0 points along +e0, every other code far away on the negative side: inputs near +e0 all pick code 0."""
    vq = VectorQuantizer(num_codes, dim, cosine=cosine, dead_code_steps=dead)
    with torch.no_grad():
        vq.codebook.weight.copy_(-5.0 - torch.rand(num_codes, dim))
        vq.codebook.weight[0] = torch.eye(dim)[0]
    return vq


def _near_e0(n: int, dim: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.eye(dim)[0] + 0.1 * torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("cosine", [True, False])
def test_nearest_code_matches_brute_force(cosine: bool) -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 8, cosine=cosine, dead_code_steps=0)
    with torch.no_grad():
        vq.codebook.weight.normal_()  # spread-out codes with distinct norms, so the two metrics disagree
        vq.codebook.weight.mul_(torch.linspace(0.2, 3.0, 16)[:, None])
    z = torch.randn(2, 30, 8)
    q = vq(z)
    expected = _brute_nearest(z.reshape(-1, 8), vq.codebook.weight.detach(), cosine).reshape(2, 30)
    assert q.codes.shape == (2, 30) and q.quantized.shape == z.shape
    assert torch.equal(q.codes, expected)
    assert torch.equal(vq.nearest(z.reshape(-1, 8)), expected.flatten())
    other = _brute_nearest(z.reshape(-1, 8), vq.codebook.weight.detach(), not cosine)
    assert not torch.equal(other, expected.flatten())  # the metric matters here, so the check above is meaningful


@pytest.mark.parametrize("cosine", [True, False])
def test_straight_through_value_and_gradient(cosine: bool) -> None:
    torch.manual_seed(1)
    vq = VectorQuantizer(16, 8, cosine=cosine, dead_code_steps=0)
    z = (3 * torch.randn(5, 7, 8)).requires_grad_(True)
    q = vq(z)
    code_vectors = _prep(vq.codebook.weight.detach()[q.codes], cosine)
    assert torch.allclose(q.quantized.detach(), code_vectors, atol=1e-6)
    if cosine:
        assert torch.allclose(q.quantized.detach().norm(dim=-1), torch.ones(5, 7), atol=1e-5)
    (grad,) = torch.autograd.grad(q.quantized.sum(), z)
    z_ref = z.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(_prep(z_ref, cosine).sum(), z_ref)
    assert torch.allclose(grad, ref, atol=1e-6)
    if not cosine:
        assert torch.equal(grad, torch.ones_like(z))  # d quantized / d z = identity
        w = torch.randn(5, 7, 8)
        (gw,) = torch.autograd.grad((q.quantized * w).sum(), z)
        assert torch.equal(gw, w)
    else:
        assert not torch.allclose(grad, torch.ones_like(z))  # the normalisation's Jacobian is really applied
    (to_codebook,) = torch.autograd.grad(q.quantized.sum(), vq.codebook.weight, allow_unused=True)
    assert to_codebook is None or not to_codebook.any()  # the ST path gives the codebook nothing


@pytest.mark.parametrize("cosine", [True, False])
def test_codebook_and_commitment_losses_reach_only_their_side(cosine: bool) -> None:
    torch.manual_seed(2)
    vq = VectorQuantizer(16, 8, beta=0.4, cosine=cosine, dead_code_steps=0)
    z = torch.randn(6, 8, requires_grad=True)
    q = vq(z)
    assert torch.allclose(q.loss, q.codebook_loss + 0.4 * q.commitment_loss)
    e = _prep(vq.codebook.weight.detach()[q.codes], cosine)
    zp = _prep(z.detach(), cosine)
    assert torch.allclose(q.codebook_loss, (e - zp).pow(2).mean()) and torch.allclose(q.commitment_loss, q.codebook_loss)

    q.codebook_loss.backward(retain_graph=True)
    assert z.grad is None
    cb_grad = vq.codebook.weight.grad.clone()
    unused = torch.ones(16, dtype=torch.bool)
    unused[q.codes] = False
    assert cb_grad[~unused].abs().sum() > 0 and torch.equal(cb_grad[unused], torch.zeros_like(cb_grad[unused]))
    if not cosine:  # d/d e_k mean((e - z)^2) = sum_{i: code k} 2 (e_k - z_i) / (N D)
        expected = torch.zeros(16, 8).index_add_(0, q.codes, 2 * (e - zp) / zp.numel())
        assert torch.allclose(cb_grad, expected, atol=1e-6)

    vq.codebook.weight.grad = None
    q.commitment_loss.backward()
    assert vq.codebook.weight.grad is None
    assert z.grad is not None and z.grad.abs().sum() > 0
    if not cosine:
        assert torch.allclose(z.grad, 2 * (zp - e) / zp.numel(), atol=1e-6)


@pytest.mark.parametrize("cosine", [True, False])
def test_perplexity_and_usage(cosine: bool) -> None:
    torch.manual_seed(3)
    K = 12
    vq = VectorQuantizer(K, 6, cosine=cosine, dead_code_steps=0)
    codes = vq.codebook.weight.detach().clone()
    uniform = vq(codes.repeat(3, 1))  # every code picked 3 times
    assert torch.equal(uniform.codes, torch.arange(K).repeat(3))
    assert uniform.perplexity.item() == pytest.approx(K, rel=1e-5) and uniform.usage.item() == pytest.approx(1.0)
    one = vq(codes[4].expand(10, 6))
    assert torch.equal(one.codes, torch.full((10,), 4))
    assert one.perplexity.item() == pytest.approx(1.0, abs=1e-5) and one.usage.item() == pytest.approx(1 / K)
    mixed = vq(torch.stack([codes[0], codes[0], codes[0], codes[5]]))
    p = torch.tensor([0.75, 0.25])
    assert mixed.perplexity.item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)
    assert mixed.usage.item() == pytest.approx(2 / K)


@pytest.mark.parametrize("cosine", [True, False])
def test_dead_codes_restart_onto_inputs_in_training_only(cosine: bool) -> None:
    torch.manual_seed(4)
    vq = _one_code_quantizer(cosine)
    before = vq.codebook.weight.detach().clone()
    for step in range(2):
        q = vq(_near_e0(16, seed=step))
        assert torch.equal(q.codes, torch.zeros(16, dtype=torch.long)) and q.usage.item() == pytest.approx(1 / 8)
    assert torch.equal(vq.steps_unused, torch.tensor([0] + [2] * 7))
    assert int(vq.restarted) == 0 and torch.equal(vq.codebook.weight.detach(), before)

    z = _near_e0(16, seed=9)
    q = vq(z)  # codes unused for dead_code_steps=2 steps are restarted before this batch is matched
    assert int(vq.restarted) == 7 and int(vq.restart_round) == 1
    w = vq.codebook.weight.detach()
    assert torch.equal(w[0], before[0])  # the used code stays
    targets = _prep(z, cosine)
    for k in range(1, 8):  # every restarted code now sits on (the normalised) one of the batch's rows
        assert _min_dist(w[k : k + 1], targets).item() < 1e-6, k
    assert q.usage.item() > 1 / 8 and int((q.codes > 0).sum()) > 0
    used = torch.zeros(8, dtype=torch.bool)
    used[q.codes] = True
    assert torch.equal(vq.steps_unused, (~used).long())  # reset on restart, then counted for this step

    # evaluation: nothing restarts and the counters stay
    vq.steps_unused.fill_(5)
    vq.eval()
    frozen = vq.codebook.weight.detach().clone()
    vq(_near_e0(16, seed=10))
    assert torch.equal(vq.steps_unused, torch.full((8,), 5)) and int(vq.restarted) == 7
    assert torch.equal(vq.codebook.weight.detach(), frozen)

    never = _one_code_quantizer(cosine, dead=0)  # dead_code_steps=0: never restart
    for step in range(4):
        never(_near_e0(8, seed=step))
    assert int(never.restarted) == 0


def test_bad_inputs() -> None:
    vq = VectorQuantizer(4, 3)
    with pytest.raises(ValueError, match="code_dim=3"):
        vq(torch.randn(5, 4))
    with pytest.raises(ValueError, match="num_codes >= 2"):
        VectorQuantizer(1, 3)
    with pytest.raises(ValueError, match="must be >= 0"):
        VectorQuantizer(4, 3, dead_code_steps=-1)


# ---------------------------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world: int, cosine: bool) -> dict:
    torch.manual_seed(0)  # same initial codebook on every rank
    vq = VectorQuantizer(8, 4, cosine=cosine, dead_code_steps=1, seed=3)
    init = vq.codebook.weight.detach().clone()
    torch.manual_seed(100 + rank)  # different data and different rank-local draws
    n = 6 if rank == 0 else 4  # uneven row counts exercise the variable-size gather
    inputs = []
    for _ in range(4):
        z = torch.randn(n, 4) * 0.2 + torch.tensor([1.0, 0.5, 0.0, 0.0]) * (1 + rank)  # few codes in use: restarts
        inputs.append(z)
        vq(z)
    vq.eval()  # comparison step: no restart
    final = torch.randn(n, 4)
    q = vq(final)
    return {"init": init, "state": {k: v.clone() for k, v in vq.state_dict().items()}, "inputs": torch.cat(inputs),
            "final": final, "perplexity": q.perplexity, "usage": q.usage}


@pytest.mark.ddp
@pytest.mark.parametrize("cosine", [True, False])
def test_ddp_codebook_identical_and_statistics_global(cosine: bool) -> None:
    r0, r1 = run_ddp(_ddp_worker, cosine, world_size=2, timeout=120, start_method="fork")  # imports inherited: fast
    assert torch.equal(r0["init"], r1["init"])
    assert int(r0["state"]["restarted"]) > 0
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    w = r0["state"]["codebook.weight"]
    changed = (w != r0["init"]).any(dim=1)
    assert changed.any()
    pool = _prep(torch.cat([r0["inputs"], r1["inputs"]]), cosine)  # restarts draw from every rank's inputs
    assert _min_dist(w[changed], pool).max() < 1e-6

    assert torch.equal(r0["perplexity"], r1["perplexity"]) and torch.equal(r0["usage"], r1["usage"])
    single = VectorQuantizer(8, 4, cosine=cosine, dead_code_steps=1, seed=3)
    single.load_state_dict(r0["state"])
    single.eval()
    q = single(torch.cat([r0["final"], r1["final"]]))
    assert r0["perplexity"].item() == pytest.approx(q.perplexity.item(), rel=1e-6)
    assert r0["usage"].item() == pytest.approx(q.usage.item())


def test_empty_input_gives_zero_loss_and_skips_restarts() -> None:
    vq = VectorQuantizer(4, 3, dead_code_steps=1)
    vq(torch.randn(2, 3))
    before = vq.codebook.weight.detach().clone()
    q = vq(torch.randn(0, 3, requires_grad=True))
    assert q.codes.shape == (0,) and float(q.loss) == 0.0 and torch.equal(vq.codebook.weight, before)
    q.loss.backward()  # still connected to the codebook (DDP needs every parameter in the graph)
    assert vq.codebook.weight.grad is not None
