"""Point-MAE and masked feature modelling: masking, the loss over masked patches only, gradients, the EMA
teacher, and clear errors for encoders or settings that cannot work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.encoders import PointNet, PointPatchTransformer
from lightning_ssl.losses import chamfer_distance
from lightning_ssl.methods import MaskedFeatureModeling, PointMAE
from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.patch_masking import gather_rows, random_patch_mask


def tiny_encoder(**kw) -> PointPatchTransformer:
    args = dict(num_groups=8, group_size=8, embed_dim=32, depth=3, num_heads=2, drop_path_rate=0.0)
    args.update(kw)
    return PointPatchTransformer(**args)


def clouds(b: int = 4, n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)


def step(method, x):
    batch = SSLBatch(views=[x])
    extra: dict = {}
    h = method.encode_training_views([x], extra)
    out = method.compute_loss(ViewOutputs(embeddings=h, projections=h, batch=batch, extra=extra))
    return h, extra, out


def test_random_patch_mask_masks_exactly_n_per_row():
    torch.manual_seed(0)
    mask = random_patch_mask(16, 64, 38, torch.device("cpu"))
    assert mask.shape == (16, 64) and mask.dtype == torch.bool
    assert (mask.sum(1) == 38).all()
    assert not torch.equal(mask[0], mask[1])  # per cloud, not one pattern for the batch


def test_point_mae_encodes_visible_tokens_only_and_returns_pooled_embedding():
    enc = tiny_encoder()
    method = PointMAE(enc, mask_ratio=0.6, decoder_depth=1, decoder_num_heads=2)
    seen = []
    original = enc.encode_tokens
    enc.encode_tokens = lambda tokens, centers, **kw: (seen.append(tokens.shape), original(tokens, centers, **kw))[1]
    torch.manual_seed(0)
    h, extra, loss = step(method, clouds())
    assert seen == [torch.Size([4, 8 - 4, 32])]  # int(0.6 * 8) = 4 masked, 4 visible
    assert h[0].shape == (4, 64)  # mean + max of the visible tokens: 2 x width
    assert extra["mask"].sum(1).tolist() == [4] * 4
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_point_mae_loss_is_chamfer_on_masked_patches():
    method = PointMAE(tiny_encoder(), mask_ratio=0.5, decoder_depth=1, decoder_num_heads=2)
    x = clouds()
    torch.manual_seed(1)
    _, extra, loss = step(method, x)
    patches, mask = extra["patches"], extra["mask"]
    torch.manual_seed(2)  # the reconstruction is deterministic (drop path 0): same prediction again
    pred = method.reconstruct(extra["visible"], patches.centers, mask)
    target = gather_rows(patches.neighborhoods[..., :3], mask)
    assert torch.allclose(loss, chamfer_distance(pred.flatten(0, 1), target.flatten(0, 1)))
    # a perfect reconstruction of the masked patches scores 0; the visible patches do not count
    method.reconstruct = lambda visible, centers, m: gather_rows(patches.neighborhoods[..., :3], m)
    assert float(method.compute_loss(ViewOutputs([], [], SSLBatch(views=[x]), extra=extra))) == 0.0
    visible_target = gather_rows(patches.neighborhoods[..., :3], ~mask)
    method.reconstruct = lambda visible, centers, m: visible_target
    assert float(method.compute_loss(ViewOutputs([], [], SSLBatch(views=[x]), extra=extra))) > 0.0


def test_point_mae_gradients_reach_encoder_decoder_and_mask_token():
    method = PointMAE(tiny_encoder(), decoder_depth=1, decoder_num_heads=2)
    torch.manual_seed(0)
    _, _, loss = step(method, clouds())
    loss.backward()
    for name in ("mask_token", "reconstruction_head.weight", "decoder_pos_embed.0.weight",
                 "encoder.patch_embed", "encoder.blocks.0", "encoder.pos_embed.0.weight"):
        grads = [p.grad for n, p in method.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_point_mae_overfits_one_batch():
    torch.manual_seed(0)
    method = PointMAE(tiny_encoder(), decoder_depth=1, decoder_num_heads=2)
    opt = torch.optim.AdamW(method.parameters(), lr=2e-3)
    x = clouds(seed=3)
    losses = []
    for _ in range(40):
        _, _, loss = step(method, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


def test_masked_features_student_sees_mask_tokens_teacher_sees_clean_cloud():
    enc = tiny_encoder()
    method = MaskedFeatureModeling(enc, mask_ratio=0.5, target_layers=[0, 2])
    calls = []
    original = enc.encode_tokens
    enc.encode_tokens = lambda tokens, centers, **kw: (calls.append(tokens.detach().clone()), original(tokens, centers, **kw))[1]
    torch.manual_seed(0)
    h, extra, parts = step(method, clouds())
    mask = extra["mask"]
    student_tokens = calls[0]
    assert torch.equal(student_tokens[mask], method.mask_token.detach()[0].expand(int(mask.sum()), -1))
    assert torch.equal(student_tokens[~mask], extra["patches"].tokens.detach()[~mask])
    assert set(parts) == {"loss", "layer_0", "layer_2"}
    assert torch.allclose(parts["loss"], (parts["layer_0"] + parts["layer_2"]) / 2)
    assert h[0].shape == (4, 64)


def test_masked_features_targets_are_teacher_features_of_masked_patches():
    method = MaskedFeatureModeling(tiny_encoder(), mask_ratio=0.5, target_layers=[2])
    torch.manual_seed(0)
    _, extra, parts = step(method, clouds())
    patches, mask = extra["patches"], extra["mask"]
    teacher = method.teacher["encoder"]
    with torch.no_grad():
        _, levels = teacher.encode_tokens(teacher.patch_embed(patches.neighborhoods), patches.centers, return_layers=[2])
    target = nn.functional.layer_norm(levels[0], levels[0].shape[-1:])
    pred = method.predictors[0](extra["student"][0][mask])
    expected = (1 - nn.functional.cosine_similarity(pred, target[mask], dim=-1)).mean()
    assert torch.allclose(parts["layer_2"], expected, atol=1e-6)


def test_masked_features_teacher_gets_no_gradient_and_follows_the_ema():
    method = MaskedFeatureModeling(tiny_encoder(), mask_ratio=0.5)
    torch.manual_seed(0)
    _, _, parts = step(method, clouds())
    parts["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert method.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert method.predictors[0].weight.grad is not None and method.mask_token.grad is not None
    opt = torch.optim.SGD(method.parameters(), lr=1.0)
    opt.step()
    before = method.teacher["encoder"].blocks[0].attn.qkv.weight.clone()
    method.tau = 0.5
    method.update_teacher()
    student = method.encoder.blocks[0].attn.qkv.weight
    assert torch.allclose(method.teacher["encoder"].blocks[0].attn.qkv.weight, 0.5 * before + 0.5 * student)


def test_masked_features_smooth_l1_loss():
    method = MaskedFeatureModeling(tiny_encoder(), loss="smooth_l1", target_layers=[1])
    torch.manual_seed(0)
    _, _, parts = step(method, clouds())
    assert torch.isfinite(parts["loss"]) and parts["loss"] > 0


@pytest.mark.parametrize("cls", [PointMAE, MaskedFeatureModeling])
def test_masked_methods_reject_encoders_without_patch_tokens(cls):
    with pytest.raises(TypeError, match="PointPatchTransformer"):
        cls(PointNet(widths=(16, 32)))


@pytest.mark.parametrize("cls", [PointMAE, MaskedFeatureModeling])
@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.05])
def test_masked_methods_reject_mask_ratios_that_leave_nothing(cls, ratio):
    kwargs = {"decoder_num_heads": 2} if cls is PointMAE else {}
    with pytest.raises(ValueError, match="mask_ratio"):
        cls(tiny_encoder(), mask_ratio=ratio, **kwargs)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="decoder_num_heads"):
        PointMAE(tiny_encoder(), decoder_num_heads=5)
    with pytest.raises(ValueError, match="target_layers"):
        MaskedFeatureModeling(tiny_encoder(), target_layers=[7])
    with pytest.raises(ValueError, match="unknown loss"):
        MaskedFeatureModeling(tiny_encoder(), loss="l2")


def test_masked_features_teacher_targets_are_deterministic_despite_drop_path():
    method = MaskedFeatureModeling(tiny_encoder(drop_path_rate=0.5), mask_ratio=0.5)
    method.train()
    patches = method.encoder.tokenize(clouds())
    first, second = method.teacher_targets(patches), method.teacher_targets(patches)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert any(type(m).__name__ == "DropPath" for m in method.encoder.modules())  # the student keeps it


def test_point_mae_decoder_uses_xavier_init():
    method = PointMAE(tiny_encoder(), decoder_depth=1, decoder_num_heads=2)
    weight = method.decoder[0].mlp.fc1.weight
    bound = (6 / (weight.shape[0] + weight.shape[1])) ** 0.5
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert torch.all(method.decoder[0].mlp.fc1.bias == 0)
