"""EEGFormer: a training step through the base-class flow, the reconstruction loss over masked patches only, the
spectral target, position-aware mask tokens, tokenize, gradient flow, constructor checks, a short Lightning fit
and a 2-process gloo DDP fit that keeps parameters (codebook restarts included) identical on both ranks."""

from __future__ import annotations

import os
import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ddp_utils import free_port, run_ddp
from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.encoders import EEGNetEncoder, EEGPatchTransformer
from lightning_ssl.methods import EEGFormer
from lightning_ssl.methods.base import ViewOutputs

pytestmark = pytest.mark.filterwarnings("ignore")


def _encoder() -> EEGPatchTransformer:
    return EEGPatchTransformer(4, 64, patch_size=16, embed_dim=32, depth=1, num_heads=2)


def _method(**kwargs) -> EEGFormer:
    torch.manual_seed(0)
    return EEGFormer(_encoder(), **{"num_codes": 16, "code_dim": 8, "decoder_num_heads": 2, "warmup_epochs": 0, **kwargs})


def _windows(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 4, 64, generator=torch.Generator().manual_seed(seed))


def _step_parts(method: EEGFormer, x: torch.Tensor, seed: int = 7) -> tuple[dict, dict]:
    """The base flow (prepare_views -> encode_training_views -> compute_loss) with the mask fixed by ``seed``."""
    batch = SSLBatch(views=[x])
    torch.manual_seed(seed)
    views, extra = method.prepare_views(batch)
    h = method.encode_training_views(views, extra)
    parts = method.compute_loss(ViewOutputs(embeddings=h, projections=h, batch=batch, extra=extra, unmasked=h))
    return parts, extra


def test_training_step_returns_finite_loss_and_parts() -> None:
    method = _method()
    x = _windows()
    out = method.training_step(SSLBatch(views=[x], target=torch.zeros(4, dtype=torch.long), index=torch.arange(4)), 0)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    assert out["embeddings"].shape == (4, 32) and torch.equal(out["index"], torch.arange(4))
    parts, extra = _step_parts(method, x)
    assert {"loss", "reconstruction", "vq_codebook", "vq_commitment", "codebook_perplexity", "codebook_usage",
            "codebook_restarted"} <= parts.keys()
    assert all(torch.isfinite(v) for v in parts.values())
    expected = parts["reconstruction"] + method.vq_weight * (parts["vq_codebook"] + 0.25 * parts["vq_commitment"])
    assert torch.allclose(parts["loss"], expected)
    assert 1.0 <= parts["codebook_perplexity"].item() <= 16.0 and 0 < parts["codebook_usage"].item() <= 1.0
    assert extra["mask"].shape == (4, 16) and torch.equal(extra["mask"].sum(1), torch.full((4,), 8))
    assert extra["patches"].shape == (4, 4, 4, 16) and extra["tokens"].shape == (4, 16, 32)


def test_reconstruction_counts_masked_patches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    method = _method(dead_code_steps=0)
    x = _windows()
    base, extra = _step_parts(method, x)
    mask = extra["mask"]

    # targets of visible patches changed: the reconstruction term does not move
    original = method.reconstruction_target
    monkeypatch.setattr(method, "reconstruction_target", lambda p: original(p) + 100.0 * (~mask)[..., None].float())
    visible_changed, extra2 = _step_parts(method, x)
    assert torch.equal(extra2["mask"], mask)
    assert torch.allclose(visible_changed["reconstruction"], base["reconstruction"], rtol=1e-6)
    monkeypatch.setattr(method, "reconstruction_target", lambda p: original(p) + 100.0 * mask[..., None].float())
    masked_target_changed, _ = _step_parts(method, x)
    assert masked_target_changed["reconstruction"] > base["reconstruction"] + 1000
    monkeypatch.undo()

    # the input of one masked patch changed: the encoder never sees it (same tokens), but its target differs
    b, t = torch.nonzero(mask)[0].tolist()
    c, p = divmod(t, 4)
    x2 = x.clone()
    x2[b, c, p * 16 : (p + 1) * 16] += 5.0
    masked_input, extra3 = _step_parts(method, x2)
    assert torch.equal(extra3["mask"], mask)
    assert torch.allclose(extra3["tokens"], extra["tokens"], atol=1e-6)
    assert masked_input["reconstruction"] > base["reconstruction"] + 0.1

    # the input of a visible patch changed: the encoder sees it
    b, t = torch.nonzero(~mask)[0].tolist()
    c, p = divmod(t, 4)
    x3 = x.clone()
    x3[b, c, p * 16 : (p + 1) * 16] += 5.0
    _, extra4 = _step_parts(method, x3)
    assert not torch.allclose(extra4["tokens"], extra["tokens"], atol=1e-4)


def test_fft_amplitude_target() -> None:
    method = _method(target="fft_amplitude")
    assert method.head.out_features == 16 // 2 + 1
    patches = method.encoder.patchify(_windows())
    target = method.reconstruction_target(patches)
    assert target.shape == (4, 16, 9)
    flat = patches.reshape(4, 16, 16).double()
    manual = torch.stack([torch.log1p(torch.fft.rfft(row).abs()) for row in flat.reshape(-1, 16)]).reshape(4, 16, 9)
    assert torch.allclose(target.double(), manual, atol=1e-5)
    dft = torch.exp(-2j * torch.pi * torch.outer(torch.arange(9.0), torch.arange(16.0)) / 16).to(torch.complex128)
    assert torch.allclose(target.double(), torch.log1p((flat.to(torch.complex128) @ dft.T).abs()), atol=1e-5)
    parts, _ = _step_parts(method, _windows())
    assert torch.isfinite(parts["loss"])
    assert torch.equal(_method().reconstruction_target(patches), patches.reshape(4, 16, 16))  # "signal"


def test_masked_tokens_keep_channel_and_position() -> None:
    enc = _encoder()
    patches = enc.patchify(_windows(2))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, 6] = mask[1, 13] = True
    mask_token = torch.randn(32)
    tokens = enc.embed_patches(patches, mask, mask_token)
    plain = enc.embed_patches(patches)
    for b, t in ((0, 6), (1, 13)):
        c, p = divmod(t, 4)
        assert torch.allclose(tokens[b, t], mask_token + enc.channel_embed[c] + enc.pos_embed[p], atol=1e-6)
    assert torch.equal(tokens[~mask], plain[~mask])
    assert not torch.allclose(tokens[0, 6], tokens[1, 13])  # different channel/position, same mask token
    with pytest.raises(ValueError, match="mask_token"):
        enc.embed_patches(patches, mask)


def test_tokenize_codes() -> None:
    method = _method()
    method.eval()
    x = _windows(3)
    codes = method.tokenize(x)
    assert codes.shape == (3, 4, 4) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    assert torch.equal(method.tokenize(x), codes)
    with torch.no_grad():
        tokens, _ = method.encoder.encode_tokens(method.encoder.embed_patches(method.encoder.patchify(x)))
        expected = method.quantizer.nearest(method.to_code(tokens).reshape(-1, 8)).reshape(3, 4, 4)
        q = method.quantize(tokens)
    assert torch.equal(codes, expected) and torch.equal(codes, q.codes.reshape(3, 4, 4))
    assert torch.equal(method.tokenize(x[1:2]), codes[1:2])  # per-window, no batch coupling


def test_gradients_reach_every_part() -> None:
    method = _method()
    out = method.training_step(SSLBatch(views=[_windows()]), 0)
    out["loss"].backward()
    for name in ("encoder.patch_embed.weight", "encoder.channel_embed", "encoder.pos_embed", "mask_token",
                 "to_code.weight", "quantizer.codebook.weight", "from_code.weight", "decoder_channel_embed",
                 "decoder_pos_embed", "decoder.0.attn.qkv.weight", "head.weight"):
        grad = method.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_constructor_checks() -> None:
    with pytest.raises(TypeError, match="EEGPatchTransformer"):
        EEGFormer(EEGNetEncoder(4, 64))
    with pytest.raises(ValueError, match="unknown target 'stft'"):
        EEGFormer(_encoder(), target="stft", decoder_num_heads=2)
    for ratio in (0.0, 1.0):
        with pytest.raises(ValueError, match="mask_ratio"):
            EEGFormer(_encoder(), mask_ratio=ratio, decoder_num_heads=2)
    with pytest.raises(ValueError, match="decoder_num_heads=3 must divide the encoder width 32"):
        EEGFormer(_encoder(), decoder_num_heads=3)
    with pytest.raises(ValueError, match="decoder_depth"):
        EEGFormer(_encoder(), decoder_num_heads=2, decoder_depth=0)
    with pytest.raises(ValueError, match="num_codes >= 2"):
        EEGFormer(_encoder(), decoder_num_heads=2, num_codes=1)


def _collate(rows: list) -> SSLBatch:
    x = torch.stack([r[0] for r in rows])
    return SSLBatch(views=[x], index=torch.stack([r[1] for r in rows]))


def _loader(n: int = 12, batch_size: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(_windows(n, seed=5), torch.arange(n)), batch_size=batch_size, collate_fn=_collate,
                      drop_last=True)


def test_lightning_fit_logs_codebook_metrics() -> None:
    method = _method(dead_code_steps=1)
    before = method.quantizer.codebook.weight.detach().clone()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(method, train_dataloaders=_loader())
    metrics = trainer.logged_metrics
    assert trainer.global_step == 3
    assert {"train/codebook_perplexity", "train/reconstruction", "train/codebook_usage", "train/loss"} <= metrics.keys()
    assert 1.0 <= float(metrics["train/codebook_perplexity"]) <= 16.0
    assert torch.isfinite(metrics["train/reconstruction"])
    assert not torch.equal(method.quantizer.codebook.weight.detach(), before)


# ---------------------------------------------------------------------------------------------- DDP


def _fit_worker(rank: int, world: int, port: int) -> dict:
    from lightning.pytorch.strategies import DDPStrategy

    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    L.seed_everything(0, verbose=False)
    method = _method(dead_code_steps=1)
    seen: list = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(batch.index.clone())

    trainer = L.Trainer(accelerator="cpu", devices=world, strategy=DDPStrategy(process_group_backend="gloo"),
                        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Record()])
    trainer.fit(method, train_dataloaders=_loader(n=24))
    return {
        "world": trainer.world_size,
        "seen": torch.cat(seen),
        "params": {k: v.detach().clone() for k, v in method.named_parameters()},
        "buffers": {k: v.detach().clone() for k, v in method.named_buffers()},
        "logged": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }


@pytest.mark.ddp
def test_ddp_fit_keeps_ranks_identical() -> None:
    # "fork": the ranks inherit the imported lightning / lightning_ssl (a fresh forkserver child spends ~15 s on
    # 2 shared cores importing them); safe here because every rank runs torch with one thread and only its own gloo
    r0, r1 = run_ddp(_fit_worker, free_port(), world_size=2, timeout=120, start_method="fork")
    assert r0["world"] == r1["world"] == 2
    assert not set(r0["seen"].tolist()) & set(r1["seen"].tolist())  # different windows on each rank
    assert int(r0["buffers"]["quantizer.restarted"]) > 0  # restarts happened during the run
    for key in r0["buffers"]:
        assert torch.equal(r0["buffers"][key], r1["buffers"][key]), key
    assert r0["params"].keys() == r1["params"].keys()
    for key in r0["params"]:
        assert torch.allclose(r0["params"][key], r1["params"][key], atol=1e-6), key
    for key in ("train/loss", "train/codebook_perplexity", "train/codebook_usage", "train/reconstruction"):
        assert r0["logged"][key] == pytest.approx(r1["logged"][key]), key
