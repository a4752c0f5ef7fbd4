"""Batch Styles Standardization (Scalbert et al., ICLR 2024): Fourier properties of the module, random draws per
view, validation, and the ImageDataModule option on real BreastMNIST (training views only)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from lightning_ssl.data import ImageDataModule
from lightning_ssl.data.image_transforms import BatchStylesStandardization, low_frequency_mask

BREAST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "medmnist" / "breastmnist.npz"


def _real_images(n: int = 12, channels: int = 1) -> torch.Tensor:
    """BreastMNIST train images in [0, 1], [n, C, 28, 28] (RGB: three differently scaled copies)."""
    with np.load(BREAST) as npz:
        x = torch.from_numpy(npz["train_images"][:n].astype(np.float32) / 255.0)[:, None]
    if channels == 3:
        x = torch.cat([x, 0.8 * x + 0.1, x.square()], dim=1)
    return x


def _unit(spec: torch.Tensor) -> torch.Tensor:
    return spec / spec.abs().clamp_min(1e-12)


@pytest.mark.parametrize("channels", [1, 3])
def test_low_frequency_amplitude_comes_from_the_chosen_image_phase_and_high_frequencies_kept(channels):
    torch.manual_seed(0)
    x = _real_images(12, channels)
    bss = BatchStylesStandardization(0.1)
    y = bss(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    j, r = bss.last_index, bss.last_ratio
    assert r == 0.1 and 0 <= j < 12
    mask = low_frequency_mask(28, 28, r)
    assert int(mask.sum()) == 49  # floor(sqrt(0.1) * 28) = 8 -> 7 frequencies per axis, centred on 0
    fx, fy = torch.fft.fft2(x.double()), torch.fft.fft2(y.double())
    scale = fx.abs().amax()
    # low frequencies: every image now has image j's amplitude
    assert torch.allclose(fy.abs()[..., mask], fx[j : j + 1].abs()[..., mask].expand(12, -1, -1), atol=1e-5 * scale)
    # ... which differed before: the standardisation did something
    assert (fx.abs()[..., mask] - fx[j : j + 1].abs()[..., mask]).abs().amax() > 1e-2 * scale
    # high frequencies: the spectrum is untouched
    assert torch.allclose(fy[..., ~mask], fx[..., ~mask], atol=1e-5 * scale)
    # phase: every image keeps its own, wherever the amplitudes are not ~0
    keep = (fx.abs() > 1e-3 * scale) & (fy.abs() > 1e-3 * scale)
    assert keep[..., mask].float().mean() > 0.9
    assert torch.allclose(_unit(fy)[keep], _unit(fx)[keep], atol=1e-4)
    # the chosen image itself is unchanged; the others are not
    assert torch.allclose(y[j], x[j], atol=1e-5)
    others = [i for i in range(12) if i != j]
    assert (y[others] - x[others]).abs().amax() > 1e-2


def test_ratio_zero_is_the_identity_and_tiny_ratios_too():
    x = _real_images(6, 3)
    for ratio in (0.0, 0.5 / 28**2):  # under one frequency per axis: nothing to replace
        y = BatchStylesStandardization(ratio)(x)
        assert torch.allclose(y, x, atol=1e-6) and y.data_ptr() != x.data_ptr()
    assert not low_frequency_mask(28, 28, 0.0).any()
    dc_only = low_frequency_mask(28, 28, 4.0 / 28**2)
    assert int(dc_only.sum()) == 1 and bool(dc_only[0, 0])  # the zero frequency (the mean) alone


def test_rectangular_images_and_symmetric_mask():
    mask = low_frequency_mask(24, 32, 0.25)
    # floor(0.5 * 24) = 12 -> 11 rows, floor(0.5 * 32) = 16 -> 15 columns, symmetric about frequency 0
    assert tuple(mask.sum(dim=0).unique().tolist()) == (0, 11) and tuple(mask.sum(dim=1).unique().tolist()) == (0, 15)
    assert torch.equal(mask, torch.roll(mask.flip(0, 1), shifts=(1, 1), dims=(0, 1)))  # k -> -k
    x = torch.nn.functional.interpolate(_real_images(5), size=(24, 32), mode="bilinear")
    torch.manual_seed(3)
    bss = BatchStylesStandardization(0.25)
    y = bss(x)
    fy = torch.fft.fft2(y.double())
    low = fy.abs()[..., mask]
    assert torch.allclose(low, low[bss.last_index : bss.last_index + 1].expand_as(low), atol=1e-4 * low.amax())


def test_style_image_and_ratio_are_drawn_per_call_reproducibly():
    x = _real_images(32)
    bss = BatchStylesStandardization((0.05, 0.3))

    def draws(seed: int) -> list[tuple[int, float]]:
        L.seed_everything(seed, verbose=False)
        out = []
        for _ in range(4):  # four views of one batch
            bss(x)
            out.append((bss.last_index, bss.last_ratio))
        return out

    first, again, other = draws(0), draws(0), draws(1)
    assert first == again  # seeded: reproducible
    assert len({j for j, _ in first}) > 1  # the views get different style images
    assert len({r for _, r in first}) == 4 and all(0.05 <= r <= 0.3 for _, r in first)  # r ~ U(0.05, 0.3)
    assert other != first


def test_normalised_input_is_standardised_in_pixel_space():
    x = _real_images(8)
    mean, std = (0.33,), (0.2,)
    L.seed_everything(5, verbose=False)
    on_normalised = BatchStylesStandardization(0.2, mean, std)((x - 0.33) / 0.2)
    L.seed_everything(5, verbose=False)
    on_pixels = (BatchStylesStandardization(0.2)(x) - 0.33) / 0.2
    assert torch.allclose(on_normalised, on_pixels, atol=1e-5)
    # swapping the amplitude of a normalised image's zero frequency (which can be negative) would not be the same
    L.seed_everything(5, verbose=False)
    naive = BatchStylesStandardization(0.2)((x - 0.33) / 0.2)
    assert (naive - on_pixels).abs().amax() > 1e-2


def test_float32_no_grad_and_autocast_off():
    x = _real_images(4, 3).double().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = BatchStylesStandardization(0.1)(x)
    assert y.dtype == torch.float32 and not y.requires_grad
    half = BatchStylesStandardization(0.1)(_real_images(4).to(torch.bfloat16))
    assert half.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_under_autocast():
    x = _real_images(8, 3)
    stats = ((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    torch.manual_seed(0)  # the draws use the CPU generator: the same style image and ratio on both devices
    cpu = BatchStylesStandardization((0.05, 0.3), *stats)(x)
    torch.manual_seed(0)
    bss = BatchStylesStandardization((0.05, 0.3), *stats).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = bss(x.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


@pytest.mark.parametrize("ratio", [1.5, -0.1, (0.3, 0.1), (0.1,), "0.1", True, (0.1, 2.0)])
def test_bad_ratios_raise(ratio):
    with pytest.raises(ValueError, match=r"ratio must be an area ratio in \[0, 1\] or a \[min, max\] pair"):
        BatchStylesStandardization(ratio)


def test_bad_inputs_and_datamodule_values_raise():
    with pytest.raises(ValueError, match="Give both mean and std"):
        BatchStylesStandardization(0.1, mean=(0.5,))
    with pytest.raises(ValueError, match=r"expects a float batch \[B, C, H, W\]"):
        BatchStylesStandardization(0.1)(torch.zeros(4, 28, 28))
    with pytest.raises(ValueError, match="expects a float batch"):
        BatchStylesStandardization(0.1)(torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"batch_styles must be an area ratio in \[0, 1\]"):
        ImageDataModule("breastmnist", root=str(BREAST.parent), batch_styles=2.0)
    with pytest.raises(ValueError, match="batch_styles must be .* got \\[0.3, 0.1\\]"):
        ImageDataModule("breastmnist", root=str(BREAST.parent), batch_styles=[0.3, 0.1])


# ------------------------------------------------------------------------------------ datamodule


class _TinyEncoder(nn.Module):
    out_dim = 8
    in_chans = 1

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Record(L.Callback):
    def __init__(self) -> None:
        self.train: list[list[torch.Tensor]] = []
        self.val: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append([v.clone() for v in batch.views])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch.views[0].clone())


def _low_amplitudes(views: torch.Tensor, dm: ImageDataModule, ratio: float) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in dm._stats())
    spec = torch.fft.fft2((views * std + mean).double())
    return spec.abs()[..., low_frequency_mask(*views.shape[-2:], ratio)]


@pytest.mark.parametrize("device_augmentation", [False, True])
def test_datamodule_standardises_training_views_only(device_augmentation):
    from lightning_ssl.methods import SimCLR

    L.seed_everything(0, verbose=False)
    ratio = 0.1
    dm = ImageDataModule("breastmnist", root=str(BREAST.parent), batch_size=8, num_workers=0,
                         device_augmentation=device_augmentation, batch_styles=ratio)
    model = SimCLR(_TinyEncoder(), proj_hidden_dim=8, proj_out_dim=4, warmup_epochs=0)
    rec = _Record()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                        num_sanity_val_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    trainer.fit(model, datamodule=dm)
    assert isinstance(dm.style_standardization, BatchStylesStandardization)
    assert len(rec.train) == 2 and len(rec.val) == 2  # sanity check + end of epoch
    for views in rec.train:
        assert len(views) == 2
        for v in views:  # every image of a training view carries one image's low-frequency amplitude
            low = _low_amplitudes(v, dm, ratio)
            assert torch.allclose(low, low[:1].expand_as(low), rtol=1e-4, atol=1e-3), (low - low[:1]).abs().amax()
    # evaluation batches are the clean views, untouched
    clean = torch.stack([dm.val_set[i][0] for i in range(8)])
    for v in rec.val:
        assert torch.equal(v, clean)
        low = _low_amplitudes(v, dm, ratio)
        assert (low - low[:1]).abs().amax() > 1.0  # without BSS the amplitudes differ


def _bss_rank(rank: int, world_size: int, x: torch.Tensor, sizes: list[int]) -> tuple:
    """Each rank styles its own rows of ``x`` (uneven shards); every rank seeds differently."""
    torch.manual_seed(100 + rank)  # rank-offset seeds, as ImageDataModule gives under DDP
    start = sum(sizes[:rank])
    bss = BatchStylesStandardization([0.05, 0.2], mean=[0.4], std=[0.3])
    out = bss(x[start : start + sizes[rank]])
    return out, bss.last_index, bss.last_ratio


def test_ddp_styles_come_from_one_image_of_the_global_batch():
    """Under DDP every rank gets the same (r, global image j), and the result equals one process on the
    concatenated batch with that draw: the style is the global batch's, as the gathered losses see it."""
    from ddp_utils import run_ddp

    x = (_real_images(10, 1) - 0.4) / 0.3
    sizes = [6, 4]
    results = run_ddp(_bss_rank, x, sizes, world_size=2)
    (out0, j0, r0), (out1, j1, r1) = results
    assert j0 == j1 and r0 == r1 and 0 <= j0 < 10 and 0.05 <= r0 <= 0.2
    # one process, same draw: amplitude of image j of the whole batch on every image's low frequencies
    pixels = x * 0.3 + 0.4
    spec = torch.fft.fft2(pixels)
    mask = low_frequency_mask(28, 28, r0)
    styled = torch.polar(spec[j0 : j0 + 1].abs().expand_as(spec), spec.angle())
    expected = (torch.fft.ifft2(torch.where(mask, styled, spec)).real - 0.4) / 0.3
    got = torch.cat([out0, out1])
    assert torch.allclose(got, expected, atol=1e-5)
    other = slice(sizes[0], None) if j0 < sizes[0] else slice(0, sizes[0])  # the rank without image j
    assert not torch.allclose(got[other], x[other], atol=1e-3)  # ... was styled too
