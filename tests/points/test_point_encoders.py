"""Point-cloud encoders (PointNet, PointNet++, DGCNN, Point-MAE patch transformer) and feature_knn."""

import pytest
import torch
from torch import nn

from lightning_ssl.encoders import (
    DGCNN,
    POINT_ENCODERS,
    PatchTokens,
    PointLevel,
    PointNet,
    PointNetPlusPlus,
    PointPatchEmbed,
    PointPatchTransformer,
    dense_point_features,
    split_points,
)
from lightning_ssl.encoders.point import DenseEdgeConv
from lightning_ssl.encoders.point_ops import feature_knn

N = 64


def _x(b=2, n=N, c=0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 3 + c, generator=g, dtype=dtype)


def _make(name, c=0):
    if name == "pointnet":
        return PointNet(c, widths=(8, 8, 8, 16))
    if name == "pointnet++":
        return PointNetPlusPlus(c, npoints=(32, 8), radii=(0.3, 0.6), nsamples=(8, 8), mlps=((16, 16), (16, 32)), global_mlp=(32, 48))
    if name == "dgcnn":
        return DGCNN(c, k=8, widths=(8, 8, 16), emb_dim=24)
    return PointPatchTransformer(c, num_groups=8, group_size=8, embed_dim=32, depth=3, num_heads=2, drop_path_rate=0.0)


NAMES = ["pointnet", "pointnet++", "dgcnn", "patch_transformer"]
# expected (M, C) per level for B=2, N=64 with the small configs above
LEVELS = {
    "pointnet": [(N, 8), (N, 8), (N, 16)],
    "pointnet++": [(32, 16), (8, 32), (1, 48)],
    "dgcnn": [(N, 8), (N, 8), (N, 16)],
    "patch_transformer": [(8, 32), (8, 32), (8, 32)],
}
OUT = {"pointnet": 16, "pointnet++": 48, "dgcnn": 48, "patch_transformer": 64}


def test_registry_and_defaults():
    assert POINT_ENCODERS == {"pointnet": PointNet, "pointnet++": PointNetPlusPlus, "dgcnn": DGCNN, "patch_transformer": PointPatchTransformer}
    assert (PointNet().out_dim, PointNetPlusPlus().out_dim, DGCNN().out_dim) == (1024, 1024, 2048)
    assert (PointNetPlusPlus().min_points, DGCNN().min_points) == (512, 20)
    t = PointPatchTransformer()
    assert (t.out_dim, t.min_points, t.level_layers, len(t.blocks)) == (768, 64, (3, 7, 11), 12)
    dpr = [float(b.drop_path1.drop_prob) if hasattr(b.drop_path1, "drop_prob") else 0.0 for b in t.blocks]
    assert dpr[0] == 0.0 and abs(dpr[-1] - 0.1) < 1e-6 and dpr == sorted(dpr)
    assert torch.equal(t.pos_embed[0].bias, torch.zeros(128)) and abs(float(t.pos_embed[0].weight.detach().std()) - 0.02) < 0.005


@pytest.mark.parametrize("c", [0, 3])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_levels_and_dense_features(name, c):
    torch.manual_seed(0)
    enc, x = _make(name, c), _x(c=c)
    assert (enc.in_channels, enc.out_dim) == (c, OUT[name])
    assert enc(x).shape == (2, OUT[name])
    levels = enc.forward_levels(x)
    assert all(isinstance(lv, PointLevel) for lv in levels)
    assert [(lv.xyz.shape, lv.features.shape) for lv in levels] == [((2, m, 3), (2, m, ch)) for m, ch in LEVELS[name]]
    dense = dense_point_features(enc, x)
    assert dense.shape == (2, N, sum(ch for _, ch in LEVELS[name]))
    assert bool(torch.isfinite(dense).all())


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_all_parameters(name):
    torch.manual_seed(1)
    enc, x = _make(name, 3), _x(c=3, seed=1)
    enc(x).square().sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_global_feature_invariant_to_point_permutation(name):
    torch.manual_seed(2)
    enc = _make(name, 3).double().eval()
    x = _x(c=3, seed=2, dtype=torch.float64)
    perm = torch.randperm(N)
    torch.testing.assert_close(enc(x[:, perm]), enc(x))
    # dense features follow the points
    torch.testing.assert_close(dense_point_features(enc, x[:, perm]), dense_point_features(enc, x)[:, perm])


def test_dense_features_use_levels_at_inputs_and_interpolate_others():
    torch.manual_seed(3)
    x = _x(c=0, seed=3)
    pn = _make("pointnet").eval()
    assert torch.equal(dense_point_features(pn, x), torch.cat([lv.features for lv in pn.forward_levels(x)], -1))
    pp = _make("pointnet++").eval()
    sa1, _, glob = pp.forward_levels(x)
    dense = dense_point_features(pp, x)
    # SA centres are input points: interpolation returns their own level-1 feature there
    idx = (x.unsqueeze(2) - sa1.xyz.unsqueeze(1)).square().sum(-1).argmin(1)  # [B, 32] input index of each centre
    got = dense[torch.arange(2).unsqueeze(1), idx, :16]
    torch.testing.assert_close(got, sa1.features)
    torch.testing.assert_close(dense[..., -48:], glob.features.expand(-1, N, -1))  # the global level everywhere


def test_patch_tokens_translation_invariant_and_centres_move():
    torch.manual_seed(4)
    enc = _make("patch_transformer", 3).double().eval()
    x = _x(c=3, seed=4, dtype=torch.float64)
    shift = torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)
    moved = x.clone()
    moved[..., :3] += shift
    a, b = enc.tokenize(x), enc.tokenize(moved)
    assert isinstance(a, PatchTokens)
    assert a.centers.shape == (2, 8, 3) and a.neighborhoods.shape == (2, 8, 8, 6) and a.tokens.shape == (2, 8, 32)
    torch.testing.assert_close(b.centers, a.centers + shift)
    torch.testing.assert_close(b.neighborhoods, a.neighborhoods)
    torch.testing.assert_close(b.tokens, a.tokens)
    # neighbourhoods: xyz relative to the centre (the centre itself is its nearest point), normals raw
    assert torch.equal(a.neighborhoods[:, :, 0, :3], torch.zeros(2, 8, 3, dtype=torch.float64))
    assert bool((a.neighborhoods[..., 3:].unsqueeze(3) == x[:, None, None, :, 3:]).all(-1).any(-1).all())


def test_encode_tokens_on_a_subset_and_forward_readout():
    torch.manual_seed(5)
    enc = _make("patch_transformer").double().eval()
    x = _x(seed=5, dtype=torch.float64)
    t = enc.tokenize(x)
    keep = torch.tensor([5, 0, 3])
    h, feats = enc.encode_tokens(t.tokens[:, keep], t.centers[:, keep], return_layers=(0, 2))
    assert h.shape == (2, 3, 32) and [f.shape for f in feats] == [(2, 3, 32)] * 2
    torch.testing.assert_close(feats[-1], h)  # the last block's normed output is the output
    # attention is permutation-equivariant over tokens: order of the visible subset does not matter
    h2, _ = enc.encode_tokens(t.tokens[:, keep.flip(0)], t.centers[:, keep.flip(0)])
    torch.testing.assert_close(h2.flip(1), h)
    full, _ = enc.encode_tokens(t.tokens, t.centers)
    assert not torch.allclose(full[:, keep], h)  # the other tokens are attended to when present
    torch.testing.assert_close(enc(x), torch.cat([full.mean(1), full.max(1).values], -1))
    levels = enc.forward_levels(x)
    _, want = enc.encode_tokens(t.tokens, t.centers, enc.level_layers)
    for lv, f in zip(levels, want):
        assert torch.equal(lv.xyz, t.centers)
        torch.testing.assert_close(lv.features, f)
    with pytest.raises(ValueError, match=r"tokens must be \[B, M, D\] and centers \[B, M, 3\]"):
        enc.encode_tokens(t.tokens, t.centers[:, :3])


def test_patch_embed_is_pointnet_over_each_patch():
    torch.manual_seed(6)
    emb = PointPatchEmbed(0, 16).eval()
    nb = torch.randn(2, 4, 8, 3)
    out = emb(nb)
    assert out.shape == (2, 4, 16)
    torch.testing.assert_close(emb(nb[:, :, torch.randperm(8)]), out)  # max-pooled over the K points
    torch.testing.assert_close(emb(nb[:1, 2:3]), out[:1, 2:3])  # patches are independent
    with pytest.raises(ValueError, match=r"\[B, G, K, 3 \+ in_channels\]"):
        emb(nb[..., :2])


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_name_the_fix(name):
    enc = _make(name, 3)
    x = _x(c=3)
    with pytest.raises(ValueError, match=r"looks like \[B, 3 \+ C, N\].*transpose with x.transpose\(1, 2\)"):
        enc(x.transpose(1, 2))
    with pytest.raises(ValueError, match=r"built with in_channels=3 .*make the datamodule.s `features` match"):
        enc(_x(c=0))
    too_few = r"needs at least min_points=\d+; use more points per cloud \(datamodule num_points\) or fewer groups"
    with pytest.raises(ValueError, match=too_few):
        if enc.min_points > 1:
            enc(x[:, : enc.min_points - 1])
        else:  # PointNet takes any N >= 1
            split_points(x, 3, min_points=N + 1)
    with pytest.raises(ValueError, match=r"add a batch dimension"):
        enc.forward_levels(x[0])


def test_split_points():
    x = _x(c=3)
    xyz, feats = split_points(x, 3)
    assert torch.equal(xyz, x[..., :3]) and torch.equal(feats, x[..., 3:])
    xyz, feats = split_points(x[..., :3], 0)
    assert feats is None and xyz.shape == (2, N, 3)
    with pytest.raises(ValueError, match=r"set the encoder's in_channels to 3"):
        split_points(x, 0)
    with pytest.raises(ValueError, match="floating-point"):
        split_points(x.long(), 3)


def test_constructor_errors():
    with pytest.raises(ValueError, match="one entry per set-abstraction level"):
        PointNetPlusPlus(npoints=(32, 8), radii=(0.2,))
    with pytest.raises(ValueError, match="npoints must be non-increasing"):
        PointNetPlusPlus(npoints=(8, 32))
    with pytest.raises(ValueError, match=r"level_layers must be block indices in \[0, depth=3\)"):
        PointPatchTransformer(embed_dim=32, depth=3, num_heads=2, level_layers=(3,))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        PointPatchTransformer(embed_dim=30, num_heads=4)


# ------------------------------------------------------------------------------------- feature_knn


@pytest.mark.parametrize("chunk_size", [1, 5, 4096])
def test_feature_knn_matches_brute_force(chunk_size):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 40, 7, generator=g, dtype=torch.float64)
    idx = feature_knn(x, 6, chunk_size=chunk_size)
    assert idx.shape == (3, 40, 6) and idx.dtype == torch.long
    d2 = ((x[:, :, None] - x[:, None]) ** 2).sum(-1)
    want = d2.argsort(-1)[..., :6]
    assert torch.equal(idx, want)
    assert torch.equal(idx[..., 0], torch.arange(40).expand(3, -1))  # the point itself first


def test_feature_knn_errors():
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match=r"k must be in \[1, N=10\]"):
        feature_knn(x, 11)
    with pytest.raises(ValueError, match=r"k must be in \[1, N=10\]"):
        feature_knn(x, 0)
    with pytest.raises(ValueError, match=r"add a batch dimension"):
        feature_knn(x[0], 2)
    with pytest.raises(ValueError, match="floating-point"):
        feature_knn(x.long(), 2)
    with pytest.raises(ValueError, match="empty"):
        feature_knn(x[:, :, :0], 1)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        feature_knn(x, 2, chunk_size=0)


def test_dense_edgeconv_equals_torch_geometric_edgeconv():
    from torch_geometric.nn import EdgeConv

    torch.manual_seed(8)
    B, n, c, k, w = 2, 30, 5, 6, 7
    x = torch.randn(B, n, c, dtype=torch.float64)
    ours = DenseEdgeConv(c, w).double().eval()
    bn = ours.mlp[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    idx = feature_knn(x, k)
    lin, pyg_bn = nn.Linear(2 * c, w, bias=False).double(), nn.BatchNorm1d(w).double().eval()
    conv = EdgeConv(nn.Sequential(lin, pyg_bn, nn.LeakyReLU(0.2)), aggr="max")  # resets the MLP: copy weights after
    weight = ours.mlp[0].weight.detach().reshape(w, 2 * c)  # ours: [x_j - x_i, x_i]; PyG: [x_i, x_j - x_i]
    with torch.no_grad():
        lin.weight.copy_(torch.cat([weight[:, c:], weight[:, :c]], dim=1))
    pyg_bn.load_state_dict(bn.state_dict())
    src = (idx + (torch.arange(B) * n).view(B, 1, 1)).reshape(-1)  # neighbour j
    dst = torch.arange(B * n).repeat_interleave(k)  # centre i
    want = conv(x.reshape(B * n, c), torch.stack([src, dst])).reshape(B, n, w)
    torch.testing.assert_close(ours(x, idx), want)


def test_dgcnn_graph_is_dynamic():
    """Later layers use a kNN graph in feature space: the output changes when that graph changes."""
    torch.manual_seed(9)
    enc = DGCNN(0, k=4, widths=(8, 8), emb_dim=8).double().eval()
    x = _x(n=16, seed=9, dtype=torch.float64)
    levels = enc.forward_levels(x)
    h1 = levels[0].features
    want = enc.convs[1](h1, feature_knn(h1, 4))
    torch.testing.assert_close(levels[1].features, want)
    xyz_graph = enc.convs[1](h1, feature_knn(x, 4))
    assert not torch.allclose(levels[1].features, xyz_graph)
