"""Image encoders (timm, torchvision, small-image stem) and the LogAugmentedViews callback."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from lightning_ssl.callbacks import LogAugmentedViews
from lightning_ssl.data import ImageDataModule
from lightning_ssl.encoders import TimmEncoder, TorchvisionEncoder, apply_small_stem, build_bare_model
from lightning_ssl.methods import SimCLR

MEDMNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "medmnist"



@pytest.mark.parametrize(
    "make, size, expected",
    [
        (lambda: TimmEncoder("resnet18", in_chans=3), 32, 512),
        (lambda: TimmEncoder("resnet18", in_chans=1, small_stem=True), 28, 512),
        (lambda: TimmEncoder("test_resnet", in_chans=1, small_stem=True), 28, None),
        (lambda: TimmEncoder("test_vit", in_chans=3, model_kwargs={"img_size": 32}), 32, 64),
        (lambda: TorchvisionEncoder("resnet18", in_chans=3), 32, 512),
        (lambda: TorchvisionEncoder("resnet18", in_chans=1, small_stem=True), 28, 512),
    ],
    ids=["timm-resnet18", "timm-resnet18-small", "timm-test_resnet", "timm-test_vit", "tv-resnet18", "tv-resnet18-small"],
)
def test_out_dim_matches_forward(make, size: int, expected: int | None) -> None:
    enc = make().eval()
    if expected is not None:
        assert enc.out_dim == expected
    x = torch.randn(3, enc.in_chans, size, size)
    with torch.no_grad():
        out = enc(x)
    assert out.shape == (3, enc.out_dim)
    assert torch.isfinite(out).all()


def _layer1_size(encoder: nn.Module, size: int) -> tuple[int, int]:
    seen: list[torch.Size] = []
    handle = encoder.model.layer1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        encoder.eval()(torch.randn(2, encoder.in_chans, size, size))
    handle.remove()
    return tuple(seen[0][-2:])


@pytest.mark.parametrize("kind", ["timm", "torchvision"])
def test_small_stem_keeps_32px_resolution(kind: str) -> None:
    cls = TimmEncoder if kind == "timm" else TorchvisionEncoder
    small = cls("resnet18", in_chans=3, small_stem=True)
    conv = small.model.conv1
    assert isinstance(conv, nn.Conv2d)
    assert conv.stride == (1, 1) and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    assert isinstance(small.model.maxpool, nn.Identity)
    assert _layer1_size(small, 32) == (32, 32)
    # the standard stem downsamples by 4 before layer1
    assert _layer1_size(cls("resnet18", in_chans=3), 32) == (8, 8)


def test_small_stem_on_a_deep_stem_model() -> None:
    enc = TimmEncoder("test_resnet", in_chans=1, small_stem=True)
    assert enc.model.conv1[0].stride == (1, 1)
    assert isinstance(enc.model.maxpool, nn.Identity)
    assert _layer1_size(enc, 32) == (32, 32)


def test_small_stem_on_a_model_without_resnet_stem_is_an_error() -> None:
    with pytest.raises(ValueError, match="small_stem=False"):
        TimmEncoder("test_vit", small_stem=True)


def test_build_bare_model_matches_the_encoder_network() -> None:
    for kind, cls in (("timm", TimmEncoder), ("torchvision", TorchvisionEncoder)):
        enc = cls("resnet18", in_chans=1, small_stem=True)
        bare = build_bare_model(kind, "resnet18", in_chans=1, small_stem=True)
        bare.load_state_dict(enc.model.state_dict(), strict=True)
        x = torch.randn(2, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(bare.eval()(x), enc.eval()(x))
    with pytest.raises(ValueError, match="'timm', 'torchvision'"):
        build_bare_model("keras", "resnet18")


@pytest.mark.parametrize("cls", [TimmEncoder, TorchvisionEncoder])
def test_wrong_channel_count_at_forward(cls) -> None:
    enc = cls("resnet18", in_chans=1)
    with pytest.raises(ValueError, match=r"1 input channel.*has 3.*in_chans: 3"):
        enc(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        enc(torch.randn(3, 32, 32))


def test_apply_small_stem_rejects_non_resnets() -> None:
    with pytest.raises(ValueError, match="conv1"):
        apply_small_stem(nn.Sequential(nn.Conv2d(3, 8, 3)))


@pytest.mark.parametrize("user_callback", [True, False], ids=["configured", "added-by-default"])
def test_log_augmented_views_writes_a_tensorboard_image(tmp_path: Path, user_callback: bool) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dm = ImageDataModule("breastmnist", root=str(MEDMNIST), batch_size=4, num_workers=0, recipe="byol")
    model = SimCLR(TimmEncoder("test_resnet", in_chans=1, small_stem=True), proj_hidden_dim=32, proj_out_dim=16)
    logger = TensorBoardLogger(str(tmp_path), name="views")
    trainer = L.Trainer(
        max_steps=1, limit_train_batches=1, limit_val_batches=0, num_sanity_val_steps=0, logger=logger,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[LogAugmentedViews(num_samples=3)] if user_callback else [], accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    logger.experiment.flush()
    events = list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert events, f"no event file in {logger.log_dir}"
    acc = EventAccumulator(str(logger.log_dir), size_guidance={"images": 0})
    acc.Reload()
    assert "train/views" in acc.Tags()["images"]
    (image,) = acc.Images("train/views")
    # make_grid with padding 1: 2 views side by side, samples stacked, 28 px tiles. The user's callback
    # (3 samples) is kept; without one, the method adds the default (8 samples, here the batch of 4).
    rows = 3 if user_callback else 4
    assert (image.width, image.height) == (2 * 29 + 1, rows * 29 + 1)
    assert sum(isinstance(cb, LogAugmentedViews) for cb in trainer.callbacks) == 1
    assert image.step <= 1  # logged at the end of the first training batch
