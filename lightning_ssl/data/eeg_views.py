"""EEG views made on the device, batched with per-sample random parameters.

:func:`apply_eeg_view` turns a batch of windows ``x`` ``[B, C, T]`` (channels x samples at ``sfreq`` Hz)
into one augmented view of the same shape, in this order (filters first, then gains, then additive
noise, then the masks, so masked samples stay exactly zero):

1. ``time_shift_s``: a **circular** shift (``torch.roll`` per sample) by an integer number of samples
   drawn uniformly in ``[-round(time_shift_s * sfreq), +round(time_shift_s * sfreq)]``; the same shift
   for every channel of a sample. Nothing is lost: samples pushed past one end re-enter at the other.
2. ``bandstop_hz = (min_width, max_width)``: a band of width ``w ~ U(min_width, max_width)`` Hz starting
   at ``f0 ~ U(0, nyquist - w)`` is removed from every channel of a sample by zeroing its rFFT bins
   (``f0 <= f <= f0 + w``) and transforming back (length ``T`` is kept).
3. ``amplitude_scale = (low, high)``: every sample is multiplied by one factor ``~ U(low, high)``.
4. ``sign_flip``: every sample is negated with this probability.
5. ``noise_std``: i.i.d. Gaussian noise of this standard deviation, in the unit of ``x`` (after the
   datamodule's normalisation: z-scores for ``normalize="zscore"``, microvolts for ``"none"``).
6. ``channel_dropout``: every channel of every sample is zeroed with this probability.
7. ``time_mask_s``: one span of ``L ~ U{0, ..., round(time_mask_s * sfreq)}`` samples (at most ``T``),
   starting uniformly at random inside the window, is zeroed on all channels.

Every random number is drawn on ``x.device`` (pass a ``generator`` on that device for reproducibility);
nothing loops over samples in Python or synchronises with the host, so the views run inside
``on_after_batch_transfer`` on the accelerator. ``x`` itself is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _pair(value: object, name: str, example: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"EEGView.{name} must be a pair (low, high), e.g. {example}; got {value!r}.") from None
    return lo, hi


@dataclass
class EEGView:
    """One augmented view of EEG windows (order of operations: module docstring).

    Args:
        amplitude_scale: ``(low, high)``, ``0 < low <= high``; one gain per sample ``~ U(low, high)``.
        noise_std: standard deviation of additive Gaussian noise (unit of the data), ``>= 0``.
        time_shift_s: maximum circular shift in seconds (uniform in ``[-s, s]``), ``>= 0``.
        time_mask_s: maximum length in seconds of the one zeroed time span, ``>= 0``.
        channel_dropout: probability in ``[0, 1)`` that a channel is zeroed.
        bandstop_hz: ``(min_width, max_width)`` in Hz of the removed frequency band, or ``None``.
        sign_flip: probability in ``[0, 1]`` that a sample is negated.
    """

    amplitude_scale: tuple[float, float] = (1.0, 1.0)
    noise_std: float = 0.0
    time_shift_s: float = 0.0
    time_mask_s: float = 0.0
    channel_dropout: float = 0.0
    bandstop_hz: tuple[float, float] | None = None
    sign_flip: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = _pair(self.amplitude_scale, "amplitude_scale", "[0.8, 1.2]")
        if not 0 < lo <= hi:
            raise ValueError(f"EEGView.amplitude_scale must satisfy 0 < low <= high, got {self.amplitude_scale!r}; "
                             "e.g. amplitude_scale: [0.8, 1.2].")
        self.amplitude_scale = (lo, hi)
        for name in ("noise_std", "time_shift_s", "time_mask_s"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"EEGView.{name} must be >= 0 (0 = off), got {getattr(self, name)!r}.")
            setattr(self, name, float(getattr(self, name)))
        if not 0 <= self.channel_dropout < 1:
            raise ValueError(f"EEGView.channel_dropout must be in [0, 1) (the probability a channel is zeroed), "
                             f"got {self.channel_dropout!r}; e.g. channel_dropout: 0.1.")
        if not 0 <= self.sign_flip <= 1:
            raise ValueError(f"EEGView.sign_flip must be a probability in [0, 1], got {self.sign_flip!r}.")
        if self.bandstop_hz is not None:
            blo, bhi = _pair(self.bandstop_hz, "bandstop_hz", "[2.0, 6.0] (band widths in Hz)")
            if not 0 < blo <= bhi:
                raise ValueError(f"EEGView.bandstop_hz is the (min, max) width in Hz of the removed band and must satisfy "
                                 f"0 < min <= max, got {self.bandstop_hz!r}; e.g. bandstop_hz: [2.0, 6.0], or null for none.")
            self.bandstop_hz = (blo, bhi)
        self.channel_dropout, self.sign_flip = float(self.channel_dropout), float(self.sign_flip)

    @property
    def is_identity(self) -> bool:
        """True when the view returns its input unchanged."""
        return (self.amplitude_scale == (1.0, 1.0) and self.noise_std == 0 and self.time_shift_s == 0
                and self.time_mask_s == 0 and self.channel_dropout == 0 and self.bandstop_hz is None
                and self.sign_flip == 0)


#: the default pretraining views of :class:`~lightning_ssl.data.eeg.EEGDataModule`: two independent draws
#: of gain 0.8-1.2, noise 0.1 (z-score units), circular shift up to 0.5 s, one masked span up to 0.5 s and
#: channel dropout 0.1
DEFAULT_EEG_VIEWS: tuple[EEGView, EEGView] = (
    EEGView(amplitude_scale=(0.8, 1.2), noise_std=0.1, time_shift_s=0.5, time_mask_s=0.5, channel_dropout=0.1),
    EEGView(amplitude_scale=(0.8, 1.2), noise_std=0.1, time_shift_s=0.5, time_mask_s=0.5, channel_dropout=0.1),
)


def apply_eeg_view(x: Tensor, view: EEGView, sfreq: float, generator: torch.Generator | None = None) -> Tensor:
    """One augmented view of ``x`` ``[B, C, T]`` sampled at ``sfreq`` Hz, on ``x``'s device (same shape
    and dtype; ``x`` is not modified). Per-sample parameters; see the module docstring for the order."""
    if x.dim() != 3:
        raise ValueError(f"apply_eeg_view expects windows [B, C, T] (batch, channels, samples), got shape {tuple(x.shape)}.")
    if not sfreq > 0:
        raise ValueError(f"apply_eeg_view needs the sampling rate sfreq > 0 Hz, got {sfreq!r}.")
    if view.is_identity:
        return x
    B, C, T = x.shape
    dev = x.device
    dtype = x.dtype if x.is_floating_point() else torch.float32
    x = x.to(dtype)

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=dev, dtype=dtype)

    t = torch.arange(T, device=dev)
    max_shift = int(round(view.time_shift_s * sfreq))
    if max_shift > 0:
        shift = (rand(B) * (2 * max_shift + 1)).long().clamp_max(2 * max_shift) - max_shift  # U{-m, ..., m}
        src = (t[None, :] - shift[:, None]) % T  # circular: out[t] = x[t - shift]
        x = x.gather(2, src[:, None, :].expand(B, C, T))
    if view.bandstop_hz is not None:
        nyq = sfreq / 2
        lo, hi = view.bandstop_hz
        if hi >= nyq:
            raise ValueError(f"EEGView.bandstop_hz widths {view.bandstop_hz} Hz must stay below the Nyquist frequency "
                             f"{nyq} Hz of sfreq={sfreq} Hz; lower bandstop_hz.")
        spec = torch.fft.rfft(x.float(), dim=-1)
        freqs = torch.fft.rfftfreq(T, d=1.0 / sfreq, device=dev)
        width = lo + (hi - lo) * rand(B).float()
        f0 = (nyq - width) * rand(B).float()
        stop = (freqs[None, :] >= f0[:, None]) & (freqs[None, :] <= (f0 + width)[:, None])  # [B, F]
        spec = spec * (~stop)[:, None, :]
        x = torch.fft.irfft(spec, n=T, dim=-1).to(dtype)
    lo, hi = view.amplitude_scale
    if (lo, hi) != (1.0, 1.0):
        x = x * (lo + (hi - lo) * rand(B, 1, 1))
    if view.sign_flip > 0:
        x = x * torch.where(rand(B, 1, 1) < view.sign_flip, -1.0, 1.0).to(dtype)
    if view.noise_std > 0:
        x = x + view.noise_std * torch.randn((B, C, T), generator=generator, device=dev, dtype=dtype)
    if view.channel_dropout > 0:
        x = x * (rand(B, C, 1) >= view.channel_dropout).to(dtype)
    max_len = min(T, int(round(view.time_mask_s * sfreq)))
    if max_len > 0:
        length = (rand(B) * (max_len + 1)).long().clamp_max(max_len)  # U{0, ..., max_len}
        start = (rand(B) * (T - length + 1).to(dtype)).long().clamp_max(T - length)  # U{0, ..., T - L}
        span = (t[None, :] >= start[:, None]) & (t[None, :] < (start + length)[:, None])  # [B, T]
        x = x.masked_fill(span[:, None, :], 0.0)
    return x


__all__ = ["DEFAULT_EEG_VIEWS", "EEGView", "apply_eeg_view"]
