"""EEG baselines on windows: log band power per channel, the classic feature for motor imagery and
rest-vs-task decoding (e.g. Pfurtscheller & Lopes da Silva 1999, event-related (de)synchronisation in the
mu/alpha and beta bands). Used as the non-learned reference next to SSL encoders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: theta, alpha (mu) and beta bands in Hz
DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((4.0, 8.0), (8.0, 13.0), (13.0, 30.0))


def band_power_features(windows: Tensor, sfreq: float, bands: Sequence[tuple[float, float]] = DEFAULT_BANDS) -> Tensor:
    """``log`` of the mean periodogram power in each band, per channel: ``[N, C, T] -> [N, C * len(bands)]``
    (channel-major: all bands of channel 0 first). Bands must lie in ``(0, sfreq / 2]`` and contain at
    least one frequency bin of the window."""
    if windows.dim() != 3:
        raise ValueError(f"windows must be [N, C, T], got shape {tuple(windows.shape)}.")
    n, c, t = windows.shape
    freqs = torch.fft.rfftfreq(t, d=1.0 / sfreq, device=windows.device)
    power = torch.fft.rfft(windows.double(), dim=-1).abs().square()
    feats = []
    for low, high in bands:
        if not 0 <= low < high <= sfreq / 2:
            raise ValueError(f"band ({low}, {high}) Hz must satisfy 0 <= low < high <= {sfreq / 2} (Nyquist).")
        sel = (freqs >= low) & (freqs < high)
        if not bool(sel.any()):
            raise ValueError(f"band ({low}, {high}) Hz holds no frequency bin of a {t}-sample window at {sfreq} Hz; "
                             "use longer windows or a wider band.")
        feats.append(power[..., sel].mean(-1).clamp_min(1e-12).log())
    return torch.stack(feats, dim=-1).reshape(n, c * len(bands)).float()


__all__ = ["DEFAULT_BANDS", "band_power_features"]
