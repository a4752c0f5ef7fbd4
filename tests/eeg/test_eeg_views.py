"""EEG views on the device: per-sample parameters, order-independent properties of each operation, identity
and bad input (small synthetic batches; the real recordings are covered by test_eeg_datamodule.py)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.data.eeg_views import DEFAULT_EEG_VIEWS, EEGView, apply_eeg_view

SFREQ = 100.0


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identity_view_returns_input_and_defaults_are_not_identity() -> None:
    x = torch.randn(4, 3, 50)
    assert EEGView().is_identity
    assert apply_eeg_view(x, EEGView(), SFREQ) is x
    for kwargs in ({"amplitude_scale": (0.9, 1.1)}, {"noise_std": 0.1}, {"time_shift_s": 0.1}, {"time_mask_s": 0.1},
                   {"channel_dropout": 0.1}, {"bandstop_hz": (1.0, 2.0)}, {"sign_flip": 0.5}):
        assert not EEGView(**kwargs).is_identity, kwargs
    assert all(not v.is_identity for v in DEFAULT_EEG_VIEWS) and len(DEFAULT_EEG_VIEWS) == 2


def test_default_view_keeps_shape_dtype_and_input() -> None:
    x = torch.randn(8, 5, 200)
    before = x.clone()
    out = apply_eeg_view(x, DEFAULT_EEG_VIEWS[0], SFREQ, generator=_gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)  # not modified in place
    assert not torch.allclose(out, x)
    again = apply_eeg_view(x, DEFAULT_EEG_VIEWS[0], SFREQ, generator=_gen())
    assert torch.equal(out, again)  # reproducible with a generator


def test_amplitude_scale_is_per_sample_and_in_range() -> None:
    x = torch.ones(64, 3, 20)
    out = apply_eeg_view(x, EEGView(amplitude_scale=(0.5, 2.0)), SFREQ, generator=_gen())
    gain = out[:, 0, 0]
    assert torch.allclose(out, gain[:, None, None].expand_as(out))  # one factor per sample
    assert gain.min() >= 0.5 and gain.max() <= 2.0
    assert gain.unique().numel() > 32  # different per sample


def test_time_shift_is_circular_per_sample() -> None:
    T = 100
    x = torch.arange(T, dtype=torch.float32).repeat(16, 2, 1)
    out = apply_eeg_view(x, EEGView(time_shift_s=0.2), SFREQ, generator=_gen())
    shifts = []
    for b in range(16):
        s = int((out[b, 0, 0] * -1) % T)  # out[t] = x[(t - s) mod T]
        assert torch.equal(out[b], torch.roll(x[b], s, dims=-1))
        shifts.append((s + T // 2) % T - T // 2)
    assert max(abs(s) for s in shifts) <= 20 and len(set(shifts)) > 4


def test_time_mask_zeros_one_span_on_all_channels() -> None:
    x = torch.ones(32, 4, 100)
    out = apply_eeg_view(x, EEGView(time_mask_s=0.3), SFREQ, generator=_gen())
    lengths = []
    for b in range(32):
        zero = out[b] == 0
        assert torch.equal(zero, zero[:1].expand_as(zero))  # same span on every channel
        pos = zero[0].nonzero().flatten()
        if pos.numel():
            assert pos.max() - pos.min() + 1 == pos.numel()  # contiguous
        assert torch.all(out[b][~zero] == 1)
        lengths.append(pos.numel())
    assert max(lengths) <= 30 and max(lengths) > 0 and len(set(lengths)) > 4


def test_channel_dropout_zeros_whole_channels() -> None:
    x = torch.ones(64, 10, 30)
    out = apply_eeg_view(x, EEGView(channel_dropout=0.3), SFREQ, generator=_gen())
    per_channel = out.sum(-1)
    assert set(per_channel.unique().tolist()) <= {0.0, 30.0}
    frac = (per_channel == 0).float().mean().item()
    assert 0.2 < frac < 0.4


def test_sign_flip_negates_samples() -> None:
    x = torch.randn(64, 3, 20)
    assert torch.equal(apply_eeg_view(x, EEGView(sign_flip=1.0), SFREQ), -x)
    out = apply_eeg_view(x, EEGView(sign_flip=0.5), SFREQ, generator=_gen())
    flipped = torch.tensor([torch.equal(out[b], -x[b]) for b in range(64)])
    kept = torch.tensor([torch.equal(out[b], x[b]) for b in range(64)])
    assert torch.all(flipped | kept) and 10 < int(flipped.sum()) < 54


def test_noise_has_the_requested_std() -> None:
    x = torch.zeros(16, 8, 500)
    out = apply_eeg_view(x, EEGView(noise_std=0.3), SFREQ, generator=_gen())
    assert abs(out.std().item() - 0.3) < 0.01
    assert not torch.allclose(out[0], out[1])


def test_bandstop_removes_power_in_a_random_band() -> None:
    B, C, T = 16, 2, 400  # 4 s at 100 Hz: bins every 0.25 Hz
    x = torch.randn(B, C, T, generator=_gen(1))
    out = apply_eeg_view(x, EEGView(bandstop_hz=(5.0, 10.0)), SFREQ, generator=_gen())
    X, Y = torch.fft.rfft(x, dim=-1).abs(), torch.fft.rfft(out, dim=-1).abs()
    freqs = torch.fft.rfftfreq(T, 1 / SFREQ)
    bands = []
    for b in range(B):
        gone = (Y[b] < 1e-3 * X[b].mean()).all(0)  # removed on every channel
        f = freqs[gone]
        assert f.numel() > 0
        width = (f.max() - f.min()).item()
        assert 5.0 - 0.5 <= width <= 10.0 + 0.01
        assert torch.allclose(Y[b][:, ~gone], X[b][:, ~gone], atol=1e-3, rtol=1e-3)  # the rest is untouched
        bands.append(round(f.min().item(), 2))
    assert len(set(bands)) > 8  # a different band per sample
    with pytest.raises(ValueError, match="Nyquist"):
        apply_eeg_view(x, EEGView(bandstop_hz=(5.0, 60.0)), SFREQ)


@pytest.mark.parametrize("kwargs, match", [
    ({"amplitude_scale": (1.2, 0.8)}, "amplitude_scale"),
    ({"amplitude_scale": 1.0}, "pair"),
    ({"noise_std": -1.0}, "noise_std"),
    ({"time_shift_s": -0.1}, "time_shift_s"),
    ({"channel_dropout": 1.0}, "channel_dropout"),
    ({"bandstop_hz": (0.0, 2.0)}, "bandstop_hz"),
    ({"sign_flip": 1.5}, "sign_flip"),
])
def test_bad_view_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EEGView(**kwargs)


def test_bad_input_shape_and_rate() -> None:
    with pytest.raises(ValueError, match=r"\[B, C, T\]"):
        apply_eeg_view(torch.zeros(3, 10), EEGView(noise_std=1.0), SFREQ)
    with pytest.raises(ValueError, match="sfreq"):
        apply_eeg_view(torch.zeros(2, 3, 10), EEGView(noise_std=1.0), 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_without_leaving_the_device() -> None:
    x = torch.randn(8, 4, 256, device="cuda")
    view = EEGView(amplitude_scale=(0.8, 1.2), noise_std=0.1, time_shift_s=0.5, time_mask_s=0.5, channel_dropout=0.1,
                   bandstop_hz=(2.0, 6.0), sign_flip=0.5)
    out = apply_eeg_view(x, view, 128.0, generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.device == x.device and out.shape == x.shape and torch.isfinite(out).all()
    assert not math.isclose(float((out - x).abs().sum()), 0.0)
