"""Tests for lightning_ssl.optim: LARS, parameter groups, schedules, LR scaling, optimizer factory."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from torch import nn

from lightning_ssl.optim import (
    LARS,
    WarmupCosineSchedule,
    build_optimizer,
    param_groups_no_weight_decay,
    scale_learning_rate,
    warmup_cosine_factor,
)

# --------------------------------------------------------------------------------------------- LARS


def _hand_lars(p, grads, lr, momentum, wd, trust, eps, excluded=False):
    """Plain-python LARS on a list of floats (Barlow Twins reference form)."""
    p = list(p)
    mu = [0.0] * len(p)
    for grad in grads:
        g = list(grad)
        if not excluded:
            g = [gi + wd * pi for gi, pi in zip(g, p)]
            pn = math.sqrt(sum(x * x for x in p))
            gn = math.sqrt(sum(x * x for x in g))
            q = trust * pn / (gn + eps) if (pn > 0 and gn > 0) else 1.0
            g = [q * gi for gi in g]
        mu = [momentum * m + gi for m, gi in zip(mu, g)]
        p = [pi - lr * m for pi, m in zip(p, mu)]
    return p


def _run_lars(p0, grads, excluded=False, **kw):
    p = nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = LARS([{"params": [p], "lars_exclude": excluded}], **kw)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().tolist(), opt


def test_lars_two_steps_match_hand_computation():
    p0 = [3.0, 4.0, -1.0]
    grads = [[1.0, 0.0, 2.0], [-0.5, 0.25, 1.0]]
    kw = dict(lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01, eps=1e-8)
    got, _ = _run_lars(p0, grads, **kw)
    # step 1 written out: g = grad + wd*p; q = trust*||p||/(||g||+eps); mu = g*q; p -= lr*mu
    g1 = [1.0 + 0.3, 0.0 + 0.4, 2.0 - 0.1]
    q1 = 0.01 * math.sqrt(26.0) / (math.sqrt(sum(x * x for x in g1)) + 1e-8)
    mu1 = [q1 * x for x in g1]
    p1 = [a - 0.5 * m for a, m in zip(p0, mu1)]
    g2 = [gr + 0.1 * a for gr, a in zip(grads[1], p1)]
    q2 = 0.01 * math.sqrt(sum(x * x for x in p1)) / (math.sqrt(sum(x * x for x in g2)) + 1e-8)
    mu2 = [0.9 * m + q2 * x for m, x in zip(mu1, g2)]
    p2 = [a - 0.5 * m for a, m in zip(p1, mu2)]
    assert got == pytest.approx(p2, rel=1e-12, abs=1e-12)
    assert got == pytest.approx(_hand_lars(p0, grads, 0.5, 0.9, 0.1, 0.01, 1e-8), rel=1e-12)


@pytest.mark.parametrize("key", ["lars_exclude", "exclude_from_adaptation"])
def test_lars_excluded_group_is_plain_momentum_sgd(key):
    p0 = [3.0, 4.0]
    grads = [[1.0, -2.0], [0.5, 0.5]]
    p = nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = LARS([{"params": [p], key: True}], lr=0.1, momentum=0.9, weight_decay=0.5)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    # no weight decay, no trust ratio: mu1 = g1, mu2 = 0.9 g1 + g2
    expected = [3.0 - 0.1 * 1.0 - 0.1 * (0.9 * 1.0 + 0.5), 4.0 + 0.1 * 2.0 - 0.1 * (-1.8 + 0.5)]
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-12)


def test_lars_zero_norm_param_uses_unit_trust_ratio():
    got, _ = _run_lars([0.0, 0.0], [[1.0, 2.0]], lr=0.1, momentum=0.9, weight_decay=0.0)
    assert got == pytest.approx([-0.1, -0.2])


def test_lars_skips_params_without_grad_and_state_dict_roundtrip():
    a = nn.Parameter(torch.ones(3))
    b = nn.Parameter(torch.ones(2))
    opt = LARS([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2))
    assert "mu" in opt.state[a] and b not in opt.state
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2 = LARS([a, b], lr=0.1)
    opt2.load_state_dict(torch.load(buf))
    assert torch.equal(opt2.state[a]["mu"], opt.state[a]["mu"])


def test_lars_closure_and_invalid_args():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = LARS([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss.detach()

    assert float(opt.step(closure)) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="learning rate"):
        LARS([w], lr=-1.0)
    with pytest.raises(ValueError, match="trust_coefficient"):
        LARS([w], lr=0.1, trust_coefficient=0.0)


# ------------------------------------------------------------------------------------ param groups


def _ids(params):
    return {id(p) for p in params}


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight decays, bias not
        self.bn = nn.BatchNorm2d(4)  # weight + bias: no decay
        self.conv_nobias = nn.Conv2d(4, 4, 1, bias=False)  # weight decays
        self.ln = nn.LayerNorm(4)  # no decay
        self.gn = nn.GroupNorm(2, 4)  # no decay
        self.fc = nn.Linear(4, 5)  # weight decays, bias not
        self.scale = nn.Parameter(torch.ones(1))  # ndim 1: no decay
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))  # decays unless excluded
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_param_groups_counts():
    m = _Small()
    decay, no_decay = param_groups_no_weight_decay(m, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and decay["lars_exclude"] is False
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"] is True
    assert _ids(decay["params"]) == _ids([m.conv.weight, m.conv_nobias.weight, m.fc.weight, m.pos_embed])
    assert _ids(no_decay["params"]) == _ids(
        [m.conv.bias, m.bn.weight, m.bn.bias, m.ln.weight, m.ln.bias, m.gn.weight, m.gn.bias, m.fc.bias, m.scale]
    )
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable) == 13


def test_param_groups_extra_exclude_and_shared_params():
    m = _Small()
    tied = nn.ModuleDict({"a": m, "b": m})  # the same module twice: parameters appear once
    decay, no_decay = param_groups_no_weight_decay(tied, 0.1, extra_exclude=["pos_embed"])
    assert id(m.pos_embed) in _ids(no_decay["params"]) and id(m.pos_embed) not in _ids(decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == 13
    decay, no_decay = param_groups_no_weight_decay(m, 0.1, extra_exclude=("*.weight",))
    assert _ids(decay["params"]) == {id(m.pos_embed)}
    decay, _ = param_groups_no_weight_decay(m, 0.1, extra_exclude="pos_embed")
    assert id(m.pos_embed) not in _ids(decay["params"])
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # tied weights across two modules
    decay, no_decay = param_groups_no_weight_decay(nn.Sequential(a, b), 0.1)
    assert len(decay["params"]) == 1 and len(no_decay["params"]) == 2


def test_param_groups_timm_no_weight_decay_hook():
    class ViTLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
            self.proj = nn.Linear(4, 4)

        def no_weight_decay(self):
            return {"cls_token"}

    wrapper = nn.Sequential(ViTLike())
    decay, no_decay = param_groups_no_weight_decay(wrapper, 0.1)
    assert id(wrapper[0].cls_token) in _ids(no_decay["params"])
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]


def test_param_groups_feed_every_optimizer():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x = torch.randn(8, 4)
    for name in ("sgd", "adamw", "lars", "LARS", "AdamW"):
        groups = param_groups_no_weight_decay(m, 1e-4)
        opt = build_optimizer(name, groups, lr=0.01, weight_decay=1e-4)
        assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
        assert [g["lars_exclude"] for g in opt.param_groups] == [False, True]
        opt.zero_grad()
        m(x).square().mean().backward()
        opt.step()
        opt.load_state_dict(opt.state_dict())


# ------------------------------------------------------------------------------------- optimizers


def test_build_optimizer_types_and_hyperparameters():
    lin = nn.Linear(3, 3)
    sgd = build_optimizer("SGD", lin.parameters(), lr=0.1, weight_decay=1e-4, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8
    adamw = build_optimizer("adamw", lin, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["betas"] == (0.9, 0.95) and adamw.defaults["weight_decay"] == 0.05
    lars = build_optimizer("lars", lin.parameters(), lr=0.3, weight_decay=1e-6, trust_coefficient=0.02)
    assert isinstance(lars, LARS) and lars.defaults["trust_coefficient"] == 0.02


def test_build_optimizer_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="sgd, adamw, lars"):
        build_optimizer("adagrad", nn.Linear(2, 2).parameters(), lr=0.1, weight_decay=0.0)


# --------------------------------------------------------------------------------------- schedules


def test_warmup_cosine_values():
    w, t = 10, 110
    assert warmup_cosine_factor(0, w, t) == pytest.approx(0.1)
    assert warmup_cosine_factor(w - 1, w, t) == pytest.approx(1.0)
    assert warmup_cosine_factor(w, w, t) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, w, t) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine_factor(60, w, t, final_factor=0.1) == pytest.approx(0.55)
    assert warmup_cosine_factor(35, w, t) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine_factor(t, w, t, final_factor=0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(t + 50, w, t, final_factor=0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(0, w, t, start_factor=0.5) == pytest.approx(0.55)
    assert warmup_cosine_factor(0, 0, t) == pytest.approx(1.0)  # no warm-up
    assert warmup_cosine_factor(5, 10, 10, final_factor=0.2) == pytest.approx(0.6)
    assert warmup_cosine_factor(10, 10, 10, final_factor=0.2) == pytest.approx(0.2)


def test_warmup_cosine_monotonic_in_each_phase():
    w, t = 7, 50
    vals = [warmup_cosine_factor(s, w, t, final_factor=0.05) for s in range(t + 5)]
    warm, cos = vals[:w], vals[w - 1 : t + 1]
    assert all(a < b for a, b in zip(warm, warm[1:]))
    assert all(a > b for a, b in zip(cos[1:], cos[2:])) and cos[0] == cos[1] == pytest.approx(1.0)
    assert min(vals) == pytest.approx(0.05) and max(vals) == pytest.approx(1.0)


def test_warmup_cosine_invalid_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine_factor(0, 20, 10)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine_factor(0, 0, 0)


def test_warmup_cosine_schedule_drives_lr_and_resumes():
    def make():
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([{"params": [p]}, {"params": [], "lr": 2.0}], lr=1.0)
        return opt, WarmupCosineSchedule(opt, warmup_steps=4, total_steps=20, final_factor=0.1)

    opt, sched = make()
    lrs = []
    for _ in range(12):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    for s, (lr0, lr1) in enumerate(lrs):
        f = warmup_cosine_factor(s, 4, 20, final_factor=0.1)
        assert lr0 == pytest.approx(f) and lr1 == pytest.approx(2.0 * f)
    assert lrs[0][0] == pytest.approx(0.25)

    state = pickle.loads(pickle.dumps(sched.state_dict()))
    pickle.dumps(sched)  # the scheduler itself pickles (no lambda closure)
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    for _ in range(3):
        opt.step(), sched.step()
        opt2.step(), sched2.step()
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert sched2.last_epoch == 15


# ------------------------------------------------------------------------------------- LR scaling


def test_scale_learning_rate_rules():
    assert scale_learning_rate(0.3, 4096) == 0.3
    assert scale_learning_rate(0.3, 4096, "linear") == pytest.approx(0.3 * 16)
    assert scale_learning_rate(0.3, 4096, "LINEAR") == pytest.approx(4.8)
    assert scale_learning_rate(0.075, 4096, "sqrt") == pytest.approx(0.075 * 4)
    assert scale_learning_rate(1.0, 512, "linear", reference_batch_size=1024) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="none, linear, sqrt"):
        scale_learning_rate(0.1, 256, "cubic")
    with pytest.raises(ValueError, match="batch_size"):
        scale_learning_rate(0.1, 0, "linear")
