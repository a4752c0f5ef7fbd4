"""MAE on timm ViTs: per-sample random masking, patchify round trip, the norm-pix target, a loss over masked
patches only, learning on a fixed batch, the step-output contract on real data, the config, and clear errors."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.data.image_transforms import make_recipe
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.losses.mae import mae_loss, norm_pix_target
from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.mae import MAE
from lightning_ssl.methods.patch_masking import patchify, unpatchify
from ssl_method_helpers import MEDMNIST_ROOT, REPO_ROOT, make_datamodule, make_trainer, tiny_encoder

CONFIG = REPO_ROOT / "configs" / "image" / "mae_pneumoniamnist.yaml"


def tiny_vit(img_size: int = 16, patch_size: int = 4, **kw) -> TimmEncoder:
    args = dict(img_size=img_size, patch_size=patch_size, depth=2, embed_dim=32, num_heads=2)
    args.update(kw)
    return TimmEncoder("vit_tiny_patch16_224", in_chans=1, model_kwargs=args)


def tiny_mae(encoder: TimmEncoder | None = None, **kw) -> MAE:
    args = dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    args.update(kw)
    return MAE(encoder or tiny_vit(), **args)


def smooth_images(b: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(b, 1, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=True)


def step(method: MAE, x: torch.Tensor):
    extra: dict = {}
    h = method.encode_training_views([x], extra)
    return h, extra, method.compute_loss(ViewOutputs(embeddings=h, projections=h, batch=SSLBatch(views=[x]), extra=extra))


@pytest.mark.parametrize(("size", "patch", "keep"), [(16, 4, 4), (28, 4, 12), (28, 7, 4)])
def test_masking_keeps_a_quarter_of_the_patches_per_sample_after_the_position_embedding(size, patch, keep):
    method = tiny_mae(tiny_vit(size, patch))
    vit, num_patches = method.encoder.model, (size // patch) ** 2
    assert keep == round(0.25 * num_patches) == num_patches - method.num_masked
    seen = []
    vit.blocks.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    x = torch.randn(6, 1, size, size)
    torch.manual_seed(0)
    h, extra, _ = step(method, x)
    mask = extra["mask"]
    assert mask.shape == (6, num_patches) and ((~mask).sum(1) == keep).all()
    assert len({tuple(row.tolist()) for row in mask}) > 1  # per sample, not one pattern for the batch
    # the blocks see cls + the visible tokens, with their own position embeddings added before the drop
    with torch.no_grad():
        full = vit._pos_embed(vit.patch_embed(x))
    expected = torch.cat([full[:, :1], full[:, 1:][~mask].reshape(6, keep, -1)], dim=1)
    assert seen[0].shape == (6, 1 + keep, 32) and torch.allclose(seen[0], expected)
    assert h[0].shape == (6, 32) and extra["tokens"].shape == (6, 1 + keep, 32)


@pytest.mark.parametrize("patch", [(4, 4), (7, 7), (4, 7)])
def test_patchify_unpatchify_round_trip(patch):
    x = torch.randn(2, 3, 28, 28)
    patches = patchify(x, patch)
    assert patches.shape == (2, (28 // patch[0]) * (28 // patch[1]), patch[0] * patch[1] * 3)
    # patch 1 is the second patch of the first grid row, pixels ordered (row, column, channel)
    assert torch.equal(patches[:, 1], x[:, :, : patch[0], patch[1] : 2 * patch[1]].permute(0, 2, 3, 1).flatten(1))
    assert torch.equal(unpatchify(patches, patch, (28, 28)), x)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        patchify(torch.randn(1, 1, 30, 30), (4, 4))


def test_norm_pix_target_equals_a_hand_computation():
    patches = torch.tensor([[[1.0, 2.0, 4.0, 7.0], [3.0, 3.0, 3.0, 3.5]]])
    target = norm_pix_target(patches)
    for i, row in enumerate(patches[0].tolist()):
        mean = sum(row) / len(row)
        var = sum((v - mean) ** 2 for v in row) / (len(row) - 1)  # unbiased, as torch.var in the official code
        for j, v in enumerate(row):
            assert abs(target[0, i, j].item() - (v - mean) / (var + 1e-6) ** 0.5) < 1e-6
    # norm_pix off: the raw pixels are the target
    mask = torch.tensor([[True, False]])
    assert mae_loss(patches, patches, mask, norm_pix=False) == 0
    assert mae_loss(target, patches, mask, norm_pix=True) < 1e-12
    assert mae_loss(patches, patches, mask, norm_pix=True) > 1


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_counts_masked_patches_only(norm_pix):
    method = tiny_mae(norm_pix_loss=norm_pix)
    torch.manual_seed(0)
    _, extra, loss = step(method, smooth_images())
    mask, patches = extra["mask"], extra["patches"]
    pred = method.decode(extra["tokens"], mask)
    target = norm_pix_target(patches) if norm_pix else patches
    per_patch = (pred - target).pow(2).mean(-1)
    assert torch.allclose(loss, (per_patch * mask).sum() / mask.sum())  # MAE's formula
    compute = method.compute_loss
    # visible-patch pixels of the target do not count ...
    extra["patches"] = torch.where(mask[..., None], patches, patches * 5 + torch.randn_like(patches))
    assert torch.equal(compute(ViewOutputs([], [], SSLBatch(views=[]), extra=extra)), loss)
    # ... the masked ones do
    extra["patches"] = torch.where(mask[..., None], patches * 5 + torch.randn_like(patches), patches)
    assert not torch.allclose(compute(ViewOutputs([], [], SSLBatch(views=[]), extra=extra)), loss)


def test_gradients_reach_encoder_decoder_and_mask_token():
    method = tiny_mae()
    torch.manual_seed(0)
    step(method, smooth_images())[2].backward()
    for name in ("mask_token", "decoder_embed", "decoder.0", "decoder_pred", "encoder.model.patch_embed",
                 "encoder.model.pos_embed", "encoder.model.cls_token", "encoder.model.blocks.1"):
        grads = [p.grad for n, p in method.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_training_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    method = tiny_mae(norm_pix_loss=False)
    opt = torch.optim.AdamW(method.parameters(), lr=2e-3)
    x = smooth_images(seed=1)

    def fixed_mask_loss() -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            return step(method, x)[2].item()

    before = fixed_mask_loss()
    for _ in range(30):
        loss = step(method, x)[2]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_mask_loss() < 0.5 * before


class CaptureOutputs(Callback):
    def __init__(self) -> None:
        self.train: list = []
        self.val: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train.append((outputs, batch))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        vit, x = pl_module.encoder.model, batch.views[0]
        with torch.no_grad():  # the plain timm forward, and the pooled visible tokens, of the same weights
            full = vit.forward_head(vit.forward_features(x))
            visible = pl_module.encode_training_views([x], {})[0]
        self.val.append((outputs, full, visible))


def test_step_output_contract_on_real_data():
    method = tiny_mae(tiny_vit(28, 7, depth=1), lr=1e-3)
    capture = CaptureOutputs()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="MAE reads one view")
        make_trainer(max_steps=2, callbacks=[capture]).fit(method, datamodule=make_datamodule(recipe="mae"))
    assert len(capture.train) == 2
    for out, batch in capture.train:
        assert len(batch.views) == 1 and batch.views[0].shape == (16, 1, 28, 28)
        assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
        assert out["embeddings"].shape == (16, 32) and out["embeddings"].grad_fn is None
        assert out["projections"].shape == (16, 32)
        assert torch.equal(out["target"], batch.target)
    assert capture.val, "validation_step never ran"
    for out, full, visible in capture.val:  # validation: the plain timm forward on the full image ...
        assert out["embeddings"].shape == full.shape == (16, 32)
        assert torch.allclose(out["embeddings"], full, atol=1e-5)
        assert not torch.allclose(visible, full, atol=1e-3)  # ... training pools the visible tokens only


def test_warns_when_the_datamodule_makes_more_than_one_view():
    method = tiny_mae(tiny_vit(28, 7, depth=1))
    with pytest.warns(UserWarning, match="MAE reads one view per image, but the datamodule makes 2"):
        make_trainer(max_steps=1, limit_val_batches=0).fit(method, datamodule=make_datamodule(recipe="simclr"))
    assert method.min_views == 1


def test_mae_recipe_is_one_crop_and_flip():
    (spec,) = make_recipe("mae", 28)
    assert spec.size == 28 and spec.scale == (0.2, 1.0) and spec.hflip_p == 0.5
    assert not spec.jitter_enabled and spec.grayscale_p == spec.blur_p == spec.solarize_p == 0


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="timm Vision Transformer"):
        MAE(tiny_encoder())
    with pytest.raises(ValueError, match="30x30 is not divisible by its patch size 4x4"):
        tiny_mae(tiny_vit(30, 4))
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_mae(mask_ratio=0.99)  # 16 patches: int(0.16) = 0 visible
    with pytest.raises(ValueError, match="decoder_num_heads"):
        tiny_mae(decoder_num_heads=5)
    with pytest.raises(ValueError, match="set model_kwargs img_size"):
        step(tiny_mae(), torch.randn(2, 1, 28, 28))


def test_betas_reach_adamw():
    method = tiny_mae()
    optimizer, _ = method.build_optimizer_and_schedule(1e-3, total_steps=10, steps_per_epoch=5)
    assert {tuple(g["betas"]) for g in optimizer.param_groups} == {(0.9, 0.95)}


def test_config_constructs_and_trains_a_step_on_real_data(tmp_path, monkeypatch):
    from lightning_ssl.cli import SSLCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])
    root = ["--data.init_args.root", str(MEDMNIST_ROOT), "--data.init_args.num_workers", "0"]
    cli = SSLCLI(args=["--config", str(CONFIG), *root], run=False)
    model, dm = cli.model, cli.datamodule
    assert isinstance(model, MAE) and model.encoder.model.patch_embed.grid_size == (7, 7)
    assert model.num_masked == 37 and model.betas == (0.9, 0.95) and model.hparams.weight_decay == 0.05
    assert dm.hparams.recipe == "mae" and len(dm.view_specs()) == 1 and model.encoder.in_chans == 1
    tiny = '{"img_size": 28, "patch_size": 7, "depth": 1, "embed_dim": 32, "num_heads": 2}'
    cli = SSLCLI(args=["fit", "--config", str(CONFIG), *root, "--data.init_args.batch_size", "4",
                       "--model.init_args.encoder.init_args.model_kwargs", tiny, "--model.init_args.decoder_depth", "1",
                       "--trainer.fast_dev_run=true", "--trainer.logger", "false",
                       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    assert cli.trainer.global_step == 1 and torch.isfinite(cli.trainer.callback_metrics["train/loss"])
