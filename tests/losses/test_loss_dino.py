"""DINO loss, center update and teacher-temperature schedule against float64 numpy re-derivations."""

import numpy as np
import pytest
import torch

from lightning_ssl.losses import DINOLoss, dino_teacher_temperature


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _ref_dino(student, teacher, center, student_temp, teacher_temp) -> float:
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        q = _np_softmax((t - center) / teacher_temp)
        for j, s in enumerate(student):
            if i == j:
                continue
            logp = np.log(_np_softmax(s / student_temp))
            per_sample = [-sum(q[b, k] * logp[b, k] for k in range(q.shape[1])) for b in range(q.shape[0])]
            total += sum(per_sample) / len(per_sample)
            pairs += 1
    return total / pairs


def _crops(n_global=2, n_local=3, b=5, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(n_global + n_local)]
    teacher = [torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(n_global)]
    return student, teacher


def test_loss_and_center_match_reference_float64():
    student, teacher = _crops()
    loss_fn = DINOLoss(out_dim=7, student_temp=0.1, center_momentum=0.9).double()
    loss_fn.center.copy_(torch.linspace(-0.5, 0.5, 7, dtype=torch.float64)[None])
    center0 = loss_fn.center.clone().numpy()
    loss = loss_fn(student, teacher, teacher_temp=0.04)
    expected = _ref_dino([s.numpy() for s in student], [t.numpy() for t in teacher], center0, 0.1, 0.04)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # center updated *after* the loss, with the mean over all teacher crops and samples
    mean = np.concatenate([t.numpy() for t in teacher]).mean(axis=0, keepdims=True)
    np.testing.assert_allclose(loss_fn.center.numpy(), 0.9 * center0 + 0.1 * mean, rtol=1e-12)


def test_number_of_pairs():
    # identical uniform outputs: every pair gives log(D); dividing by the number of pairs keeps log(D)
    d = 6
    student = [torch.zeros(3, d) for _ in range(5)]
    teacher = [torch.zeros(3, d) for _ in range(2)]
    loss = DINOLoss(d)(student, teacher, teacher_temp=0.04)
    assert loss.item() == pytest.approx(np.log(d), rel=1e-6)


def test_two_crops_only_cross_pairs():
    # with 2 global crops only, the pairs are (t0, s1) and (t1, s0): swapping the students' order
    # must change the loss when teacher crops differ
    student, teacher = _crops(n_global=2, n_local=0)
    a = DINOLoss(7).double()(student, teacher, 0.04)
    expected = _ref_dino([s.numpy() for s in student], [t.numpy() for t in teacher], np.zeros((1, 7)), 0.1, 0.04)
    assert a.item() == pytest.approx(expected, rel=1e-10)


def test_gradient_only_to_student_and_center_in_state_dict():
    student, teacher = _crops(b=4, d=5)
    student = [s.clone().requires_grad_(True) for s in student]
    teacher = [t.clone().requires_grad_(True) for t in teacher]
    loss_fn = DINOLoss(5).double()
    loss_fn(student, teacher, 0.07).backward()
    assert all(s.grad is not None for s in student)
    assert all(t.grad is None for t in teacher)
    sd = loss_fn.state_dict()
    assert "center" in sd and sd["center"].shape == (1, 5)
    fresh = DINOLoss(5).double()
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.center, loss_fn.center)


def test_center_momentum_from_zero():
    teacher = [torch.full((2, 3), 2.0), torch.full((2, 3), 4.0)]
    loss_fn = DINOLoss(3, center_momentum=0.9)
    loss_fn([torch.zeros(2, 3)] * 2, teacher, 0.04)
    torch.testing.assert_close(loss_fn.center, torch.full((1, 3), 0.1 * 3.0))


def test_teacher_temperature_schedule_matches_official():
    warm, final, warm_epochs, epochs = 0.04, 0.07, 30, 100
    official = np.concatenate((np.linspace(warm, final, warm_epochs), np.ones(epochs - warm_epochs) * final))
    got = [dino_teacher_temperature(e, warm, final, warm_epochs) for e in range(epochs)]
    np.testing.assert_allclose(got, official, rtol=1e-12)
    assert dino_teacher_temperature(5) == 0.04  # defaults: constant 0.04
    assert dino_teacher_temperature(0, 0.02, 0.04, warmup_epochs=1) == 0.02  # linspace(a, b, 1) == [a]
