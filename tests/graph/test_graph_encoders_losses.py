"""GNNEncoder (GCN, GAT, GraphSAGE, GIN), the CCA-SSG loss and GraphMAE's scaled cosine error against
references written here from the papers' formulas, the empty projection head and the coupled-decay Adam."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graph_helpers import random_graph
from lightning_ssl.encoders import GNN_LAYERS, GNNEncoder
from lightning_ssl.heads import projection_head
from lightning_ssl.losses import CCASSGLoss, cca_ssg_loss, scaled_cosine_error
from lightning_ssl.optim import build_optimizer

N, F_IN = 40, 12


@pytest.fixture()
def graph():
    return random_graph(num_nodes=N, num_features=F_IN, num_edges=160, positive=False)


# ---------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("conv", GNN_LAYERS)
def test_encoder_shapes_and_out_dim(graph, conv):
    enc = GNNEncoder(conv, in_channels=F_IN, hidden_channels=16, out_channels=8, num_layers=2, heads=2)
    out = enc(graph)
    assert out.shape == (N, 8) and enc.out_dim == 8
    assert torch.isfinite(out).all()
    assert len(enc.convs) == 2 and enc.num_layers == 2 and enc.in_channels == F_IN
    default = GNNEncoder(conv, in_channels=F_IN, hidden_channels=16, num_layers=3)
    assert default.out_dim == 16 and default(graph).shape == (N, 16) and len(default.convs) == 3


@pytest.mark.parametrize("conv", GNN_LAYERS)
def test_act_last_false_leaves_the_last_layer_linear(graph, conv):
    torch.manual_seed(0)
    with_act = GNNEncoder(conv, in_channels=F_IN, hidden_channels=16, activation="relu", act_last=True)
    torch.manual_seed(0)
    linear = GNNEncoder(conv, in_channels=F_IN, hidden_channels=16, activation="relu", act_last=False)
    out_act, out_lin = with_act(graph), linear(graph)
    assert bool((out_act >= 0).all())  # relu after the last layer
    assert bool((out_lin < 0).any())  # no activation after the last layer
    assert len(linear.acts) == 1 and len(with_act.acts) == 2
    torch.testing.assert_close(out_act, out_lin.relu())  # same weights: only the last relu differs


@pytest.mark.parametrize("conv", GNN_LAYERS)
def test_batch_norm_and_gradients_reach_every_parameter(graph, conv):
    enc = GNNEncoder(conv, in_channels=F_IN, hidden_channels=16, norm="batch_norm", heads=2)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in enc.modules()) == 2
    out = enc(graph)
    assert out.shape == (N, 16) and torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, f"{conv}: no gradient for {name}"
        assert torch.isfinite(p.grad).all()
    plain = GNNEncoder(conv, in_channels=F_IN, hidden_channels=16, heads=2)
    out = plain(graph)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in plain.named_parameters():
        assert p.grad is not None and bool((p.grad != 0).any()), f"{conv}: zero gradient for {name}"


def test_batch_norm_standardises_the_pre_activation(graph):
    enc = GNNEncoder("gcn", in_channels=F_IN, hidden_channels=16, norm="batch_norm", activation="relu", act_last=False)
    x = enc.norms[0](enc.convs[0](graph.x, graph.edge_index))
    torch.testing.assert_close(x.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.var(0, unbiased=False), torch.ones(16), atol=2e-2, rtol=0)  # var / (var + eps)


def test_encoder_rejects_a_plain_tensor():
    with pytest.raises(TypeError, match="Data/Batch with `x` and `edge_index`"):
        GNNEncoder("gcn", in_channels=F_IN)(torch.randn(3, F_IN))


# ---------------------------------------------------------------------------------------------- CCA-SSG


def _cca_reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> tuple[torch.Tensor, ...]:
    """Zhang et al. 2021, Eq. (5): Z~ = (Z - mean) / std / sqrt(N) per column,
    L = ||Z~1 - Z~2||_F^2 + lambd (||Z~1^T Z~1 - I||_F^2 + ||Z~2^T Z~2 - I||_F^2)."""
    n, d = z1.shape

    def std(z):
        mu = z.sum(0) / n
        sd = (((z - mu) ** 2).sum(0) / (n - 1)).sqrt()
        return (z - mu) / sd / n ** 0.5

    a, b = std(z1), std(z2)
    eye = torch.eye(d, dtype=z1.dtype)
    inv = -(a * b).sum()  # the official code's -tr(Z1^T Z2) (see the next test for the paper's squared form)
    dec = ((a.T @ a - eye) ** 2).sum() + ((b.T @ b - eye) ** 2).sum()
    return inv + lambd * dec, inv, dec


@pytest.mark.parametrize("lambd", [1e-3, 0.5])
def test_cca_ssg_matches_the_reference_formula(lambd):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(50, 6, generator=g, dtype=torch.float64) * 3 + 1
    z2 = z1 + 0.5 * torch.randn(50, 6, generator=g, dtype=torch.float64)
    out = cca_ssg_loss(z1, z2, lambd=lambd)
    loss, inv, dec = _cca_reference(z1, z2, lambd)
    torch.testing.assert_close(out["loss"], loss)
    torch.testing.assert_close(out["invariance"], inv)
    torch.testing.assert_close(out["decorrelation"], dec)
    torch.testing.assert_close(CCASSGLoss(lambd)(z1, z2), loss)
    # gradients too
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    cca_ssg_loss(a, b, lambd=lambd)["loss"].backward()
    ra, rb = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    _cca_reference(ra, rb, lambd)[0].backward()
    torch.testing.assert_close(a.grad, ra.grad)
    torch.testing.assert_close(b.grad, rb.grad)


def test_cca_ssg_invariance_is_the_official_trace_form():
    """Ours is the official code's invariance -tr(Z1^T Z2) / N with (Z - mean) / std, the form its lambd values
    belong to; the paper's squared distance ||Z1 - Z2||^2 (Z / sqrt(N)) is 2 D (N - 1) / N + 2 x that."""
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, 5, generator=g, dtype=torch.float64)
    n, d = z1.shape
    s1, s2 = (z1 - z1.mean(0)) / z1.std(0), (z2 - z2.mean(0)) / z2.std(0)
    official_inv = -torch.diagonal(s1.T @ s2 / n).sum()
    ours = cca_ssg_loss(z1, z2)["invariance"]
    torch.testing.assert_close(ours, official_inv)
    paper = ((s1 - s2) ** 2).sum() / n
    torch.testing.assert_close(paper, 2 * d * (n - 1) / n + 2 * ours)


def test_cca_ssg_identical_views_have_minimal_invariance():
    z = torch.randn(64, 8, dtype=torch.float64)
    out = cca_ssg_loss(z, z.clone(), lambd=1e-3)
    # -tr(Z^T Z) of standardised columns / sqrt(N): -D (N - 1) / N, the minimum over pairs of views
    assert float(out["invariance"]) == pytest.approx(-8 * 63 / 64, abs=1e-12)
    other = cca_ssg_loss(z, torch.randn(64, 8, dtype=torch.float64), lambd=1e-3)
    assert float(other["invariance"]) > float(out["invariance"])
    torch.testing.assert_close(out["loss"], out["invariance"] + 1e-3 * out["decorrelation"])
    # orthonormal zero-mean columns: Z~^T Z~ = (N - 1) / N * I, so the decorrelation is 2 D / N^2 only
    a = torch.randn(64, 8, dtype=torch.float64)
    white = torch.linalg.qr(a - a.mean(0))[0]
    torch.testing.assert_close(cca_ssg_loss(white, white)["decorrelation"], torch.tensor(2 * 8 / 64**2, dtype=torch.float64))


def test_cca_ssg_is_invariant_to_affine_column_changes():
    z1, z2 = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 4, dtype=torch.float64)
    scale, shift = torch.tensor([2.0, 0.5, 3.0, 10.0], dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(cca_ssg_loss(z1 * scale + shift, z2)["loss"], cca_ssg_loss(z1, z2)["loss"])


def test_cca_ssg_input_checks():
    with pytest.raises(ValueError, match=r"both be \[N, D\]"):
        cca_ssg_loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        cca_ssg_loss(torch.randn(1, 3), torch.randn(1, 3))


# ---------------------------------------------------------------------------------------------- scaled cosine error


def _sce_reference(pred, target, alpha):
    """Hou et al. 2022, Eq. (3): mean over rows of (1 - x^T z / (||x|| ||z||))^alpha."""
    cos = (pred * target).sum(1) / (pred.norm(dim=1) * target.norm(dim=1))
    return ((1 - cos) ** alpha).mean()


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_scaled_cosine_error_matches_reference(alpha):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(20, 7, generator=g, dtype=torch.float64), torch.randn(20, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(scaled_cosine_error(pred, target, alpha), _sce_reference(pred, target, alpha))


def test_scaled_cosine_error_alpha_behaviour():
    target = torch.randn(10, 5, dtype=torch.float64)
    assert float(scaled_cosine_error(target * 3.0, target, 2.0)) == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert float(scaled_cosine_error(-target, target, 1.0)) == pytest.approx(2.0)  # opposite rows: 1 - (-1)
    assert float(scaled_cosine_error(-target, target, 3.0)) == pytest.approx(8.0)
    near = target + 0.3 * torch.randn_like(target)  # easy rows: 1 - cos < 1, so a larger alpha down-weights them
    values = [float(scaled_cosine_error(near, target, a)) for a in (1.0, 2.0, 3.0)]
    assert values[0] > values[1] > values[2] > 0
    torch.testing.assert_close(scaled_cosine_error(near, target, 1.0), (1 - F.cosine_similarity(near, target)).mean())
    with pytest.raises(ValueError, match="alpha must be >= 1"):
        scaled_cosine_error(near, target, 0.5)
    with pytest.raises(ValueError, match="same shape"):
        scaled_cosine_error(near[:3], target, 2.0)


# ---------------------------------------------------------------------------------------------- heads, optimizer


def test_projection_head_without_layers_is_identity():
    head = projection_head(16, 32, 8, num_layers=0)
    assert isinstance(head, nn.Identity)
    x = torch.randn(3, 16)
    assert head(x) is x
    assert isinstance(projection_head(16, 32, 8, num_layers=2), nn.Sequential)
    with pytest.raises(ValueError, match="num_layers must be >= 0"):
        projection_head(16, 32, 8, num_layers=-1)


def test_adam_builds_torch_adam_with_coupled_weight_decay():
    def one_step(name):
        p = nn.Parameter(torch.ones(3, dtype=torch.float64))
        opt = build_optimizer(name, [{"params": [p]}], lr=0.1, weight_decay=0.5, momentum=0.9)
        p.grad = torch.zeros_like(p)  # only the weight decay moves p
        opt.step()
        return opt, p.detach()

    adam, p_adam = one_step("adam")
    assert type(adam) is torch.optim.Adam
    assert not adam.defaults.get("decoupled_weight_decay", False)
    assert adam.param_groups[0]["weight_decay"] == 0.5
    # coupled (L2): grad = 0 + wd * p = 0.5, Adam's first step moves by lr * sign = 0.1
    torch.testing.assert_close(p_adam, torch.full((3,), 0.9, dtype=torch.float64), atol=1e-6, rtol=0)
    adamw, p_adamw = one_step("ADAMW")
    assert isinstance(adamw, torch.optim.AdamW)
    # decoupled: p * (1 - lr * wd) = 0.95 and a zero Adam update
    torch.testing.assert_close(p_adamw, torch.full((3,), 0.95, dtype=torch.float64))
