"""EEG encoders (EEGNet, ShallowConvNet, channel x time patch transformer): shapes, out_dim, window-length
handling, gradients, the masked-modelling tokenizer API and the input-shape errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_ssl.encoders.eeg import (
    EEG_ENCODERS,
    EEGNetEncoder,
    EEGPatchTransformer,
    ShallowConvNetEncoder,
    check_eeg_window,
)


def _x(b=2, c=4, t=128, seed=0):
    return torch.randn(b, c, t, generator=torch.Generator().manual_seed(seed))


def _make(name, c, t, **kw):
    if name == "eegnet":
        return EEGNetEncoder(c, t, F1=4, D=2, F2=8, kernel_length=16, dropout=0.0, **kw)
    if name == "shallow":
        return ShallowConvNetEncoder(c, t, n_filters=8, dropout=0.0, **kw)
    return EEGPatchTransformer(c, t, patch_size=32, embed_dim=16, depth=2, num_heads=2, **kw)


NAMES = ["eegnet", "shallow", "transformer"]


@pytest.mark.parametrize("c,t", [(3, 128), (8, 256), (22, 160)])
def test_eegnet_shapes(c, t):
    flat, mean = _make("eegnet", c, t), _make("eegnet", c, t, pooling="mean")
    assert (flat.in_channels, flat.num_samples) == (c, t)
    assert flat.out_dim == 8 * (t // 4 // 8) and mean.out_dim == 8
    assert flat(_x(3, c, t)).shape == (3, flat.out_dim)
    assert mean(_x(3, c, t)).shape == (3, 8)
    assert EEGNetEncoder(c, t).out_dim == 16 * (t // 32)  # EEGNet-8,2 defaults


@pytest.mark.parametrize("c,t", [(3, 128), (8, 256), (22, 160)])
def test_shallow_convnet_shapes(c, t):
    flat, mean = _make("shallow", c, t), _make("shallow", c, t, pooling="mean")
    assert flat.out_dim == 8 * ((t - 25 + 1 - 75) // 15 + 1) and mean.out_dim == 8
    assert flat(_x(2, c, t)).shape == (2, flat.out_dim)
    assert mean(_x(2, c, t)).shape == (2, 8)
    assert ShallowConvNetEncoder(c, t).out_dim == 40 * ((t - 99) // 15 + 1)


@pytest.mark.parametrize("c,t", [(3, 128), (8, 256), (5, 96)])
def test_patch_transformer_shapes(c, t):
    enc = _make("transformer", c, t)
    assert (enc.in_channels, enc.num_samples, enc.patch_size, enc.num_patches) == (c, t, 32, t // 32)
    assert enc.embed_dim == enc.out_dim == 16
    assert enc(_x(2, c, t)).shape == (2, 16)


def test_mean_pooling_accepts_other_window_lengths():
    for name in ["eegnet", "shallow"]:
        mean = _make(name, 4, 128, pooling="mean").eval()
        for t in (mean.min_samples, 100, 200, 333):
            assert mean(_x(2, 4, t)).shape == (2, mean.out_dim)
        with pytest.raises(ValueError, match=f"needs at least {mean.min_samples}"):
            mean(_x(2, 4, mean.min_samples - 1))
        flat = _make(name, 4, 128)
        with pytest.raises(ValueError, match="num_samples=128.*pooling='mean'"):
            flat(_x(2, 4, 200))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_all_parameters(name):
    enc = _make(name, 4, 128).train()
    enc(_x(4, 4, 128)).square().mean().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_patchify_is_a_reshape_and_tokenizer_shapes():
    enc = _make("transformer", 3, 128).eval()
    x = _x(2, 3, 128)
    patches = enc.patchify(x)
    assert patches.shape == (2, 3, 4, 32)
    assert torch.equal(patches.reshape(2, 3, 128), x)  # reconstruct x exactly
    assert torch.equal(patches[1, 2, 3], x[1, 2, 96:128])
    tokens = enc.embed_patches(patches)
    assert tokens.shape == (2, 12, 16)
    # channel-major token order: token c * P + p is channel c, patch p
    single = enc.patch_embed(patches[0, 2, 1]) + enc.channel_embed[2] + enc.pos_embed[1]
    torch.testing.assert_close(tokens[0, 2 * 4 + 1], single)
    h, layers = enc.encode_tokens(tokens, return_layers=(1, 0))
    assert h.shape == (2, 12, 16) and [f.shape for f in layers] == [(2, 12, 16)] * 2
    torch.testing.assert_close(h.mean(dim=1), enc(x))
    torch.testing.assert_close(layers[1], h)  # the last block's normed output is the output
    visible, _ = enc.encode_tokens(tokens[:, :5])  # any subset of tokens (masked modelling)
    assert visible.shape == (2, 5, 16)


def test_channel_embedding_makes_output_depend_on_channel_order():
    enc = _make("transformer", 4, 128).eval()
    x = _x(2, 4, 128)
    swapped = x[:, [1, 0, 2, 3]]
    assert not torch.allclose(enc(x), enc(swapped), atol=1e-5)
    with torch.no_grad():  # without it the mean over tokens would be invariant to channel order
        enc.channel_embed.zero_()
    torch.testing.assert_close(enc(x), enc(swapped), atol=1e-5, rtol=1e-5)


def test_max_channels_sizes_the_table_and_transfers_between_montages():
    a = EEGPatchTransformer(4, 64, patch_size=32, embed_dim=16, depth=1, num_heads=2, max_channels=10)
    b = EEGPatchTransformer(7, 64, patch_size=32, embed_dim=16, depth=1, num_heads=2, max_channels=10)
    assert a.channel_embed.shape == (10, 16)
    b.load_state_dict(a.state_dict())
    assert b(_x(2, 7, 64)).shape == (2, 16)
    with pytest.raises(ValueError, match="max_channels=3 is smaller than in_channels=4"):
        EEGPatchTransformer(4, 64, max_channels=3)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_shapes(name):
    enc = _make(name, 64, 640)
    x = _x(2, 64, 640)
    with pytest.raises(ValueError, match=r"expected \[B, C=64, T=640\], got \[B, 640, 64\].*x\.transpose\(1, 2\)"):
        enc(x.transpose(1, 2))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        enc(x[0])
    with pytest.raises(ValueError, match=r"squeeze\(1\)"):
        enc(x.unsqueeze(1))
    with pytest.raises(ValueError, match="C=32 channels but the encoder was built with in_channels=64"):
        enc(x[:, :32])
    with pytest.raises(ValueError, match="window has T=320 samples but the encoder was built with num_samples=640"):
        enc(x[..., :320])
    with pytest.raises(ValueError, match="floating-point"):
        enc(x.long())
    with pytest.raises(ValueError, match="torch.Tensor"):
        enc(x.numpy())


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_samples=20 is too short for EEGNet's pools.*at least 32"):
        EEGNetEncoder(4, 20)
    with pytest.raises(ValueError, match="num_samples=50 is too short for ShallowConvNet"):
        ShallowConvNetEncoder(4, 50)
    with pytest.raises(ValueError, match="num_samples=100 is not divisible by patch_size=64.*num_samples=64 or 128"):
        EEGPatchTransformer(4, 100)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        EEGPatchTransformer(4, 128, embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="pooling must be one of"):
        EEGNetEncoder(4, 128, pooling="max")
    with pytest.raises(ValueError, match="dropout"):
        ShallowConvNetEncoder(4, 128, dropout=1.5)


def test_tokenizer_bad_inputs():
    enc = _make("transformer", 3, 128)
    with pytest.raises(ValueError, match=r"\[B, 3, 4, 32\].*patchify"):
        enc.embed_patches(torch.zeros(2, 3, 4, 16))
    with pytest.raises(ValueError, match="embed_dim = 16"):
        enc.encode_tokens(torch.zeros(2, 12, 8))
    with pytest.raises(ValueError, match="return_layers"):
        enc.encode_tokens(torch.zeros(2, 12, 16), return_layers=(2,))
    check_eeg_window(_x(1, 3, 128), 3, 128)  # a good window passes


@pytest.mark.parametrize("name", NAMES)
def test_forward_has_no_data_dependent_host_sync(name):
    """On the meta device there is no data to read: any ``.item()`` / ``bool(tensor)`` in forward would raise."""
    with torch.device("meta"):
        enc = _make(name, 4, 128)
        out = enc(torch.empty(2, 4, 128))
    assert out.shape == (2, enc.out_dim)


def test_registry_and_config_construction():
    assert set(EEG_ENCODERS) == {"eegnet", "shallow_convnet", "patch_transformer"}
    for cls in EEG_ENCODERS.values():
        enc = cls(in_channels=2, num_samples=128)  # LightningCLI passes init_args as keywords
        assert isinstance(enc, nn.Module) and enc(_x(1, 2, 128)).shape == (1, enc.out_dim)
