"""Tests for lightning_ssl.evaluation: extract_features, linear_probe, knn_classify."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.evaluation import extract_features, knn_classify, linear_probe

# ---------------------------------------------------------------------------------- extract_features


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 4))
        self.out_dim = 4
        self.calls_training: list[bool] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x):
        self.calls_training.append(self.training)
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.net(x).double()  # float64 on purpose: the result must come back float32


def _data(n=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.arange(n) % 3


def test_extract_features_tuple_batches_eval_mode_and_restore():
    enc = _Encoder().train()
    enc.net[1].eval()  # a submodule in a different mode must be restored as it was
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y.view(-1, 1)), batch_size=4)  # (N, 1) labels
    feats, labels = extract_features(enc, loader)
    assert feats.shape == (10, 4) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert labels.shape == (10,) and labels.dtype == torch.long and torch.equal(labels, y)
    assert enc.calls_training == [False] * 3 and enc.grad_enabled == [False] * 3
    assert enc.training and enc.net[0].training and not enc.net[1].training
    enc.eval()
    expected = enc.net(x).float()
    torch.testing.assert_close(feats, expected.detach())


def test_extract_features_sslbatch_and_dict_batches_use_first_view():
    enc = _Encoder().eval()
    x, y = _data(8)
    junk = torch.full_like(x, 1e6)  # second view must be ignored
    ssl_batches = [SSLBatch(views=[x[i : i + 4], junk[i : i + 4]], target=y[i : i + 4]) for i in (0, 4)]
    dict_batches = [{"views": [x[i : i + 4], junk[i : i + 4]], "target": y[i : i + 4]} for i in (0, 4)]
    f1, l1 = extract_features(enc, ssl_batches, device="cpu")
    f2, l2 = extract_features(enc, dict_batches)
    torch.testing.assert_close(f1, enc.net(x).float().detach())
    torch.testing.assert_close(f1, f2)
    assert torch.equal(l1, y) and torch.equal(l2, y)
    assert not enc.training


def test_extract_features_applies_mask_and_needs_labels():
    enc = _Encoder().eval()
    x, y = _data(6)
    mask = torch.tensor([True, False, True, True, False, False])
    feats, labels = extract_features(enc, [SSLBatch(views=[x], target=y, mask=mask)])
    assert feats.shape == (3, 4) and torch.equal(labels, y[mask])
    enc.train()
    with pytest.raises(ValueError, match="no target"):
        extract_features(enc, [SSLBatch(views=[x])])
    assert enc.training  # restored even after an error


# ------------------------------------------------------------------------------------- linear_probe


def _blobs(n_per_class=60, n_classes=3, dim=8, sep=8.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * sep
    x = np.concatenate([centers[c] + rng.normal(size=(n_per_class, dim)) for c in range(n_classes)])
    y = np.repeat(np.arange(n_classes), n_per_class)
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


def test_linear_probe_separable_blobs():
    x, y = _blobs()
    out = linear_probe(torch.from_numpy(x[:120]), torch.from_numpy(y[:120]), x[120:], y[120:])
    assert out["acc"] > 0.95 and out["balanced_acc"] > 0.95 and out["auroc"] > 0.95
    assert out["n_train"] == 120 and out["n_test"] == 60


def test_linear_probe_shuffled_labels_near_chance():
    x, y = _blobs(n_per_class=150, n_classes=3, sep=1.0, seed=1)
    y_shuf = np.random.default_rng(2).permutation(y)
    out = linear_probe(x[:300], y_shuf[:300], x[300:], y_shuf[300:])
    assert abs(out["acc"] - 1 / 3) < 0.15
    assert abs(out["auroc"] - 0.5) < 0.15


def test_linear_probe_digits_raw_pixels():
    digits = load_digits()
    xtr, xte, ytr, yte = train_test_split(
        digits.data, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    out = linear_probe(xtr, ytr, xte, yte, C=1.0)
    assert out["acc"] > 0.9, out
    assert out["auroc"] > 0.98


def test_linear_probe_auroc_matches_sklearn_binary_and_multiclass():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    for n_classes in (2, 4):
        x, y = _blobs(n_per_class=40, n_classes=n_classes, sep=0.7, seed=n_classes)
        n = len(y) // 2
        out = linear_probe(x[:n], y[:n], x[n:], y[n:], C=0.5)
        sc = StandardScaler().fit(x[:n].astype(np.float64))
        clf = LogisticRegression(C=0.5, max_iter=1000, random_state=0).fit(sc.transform(x[:n]), y[:n])
        proba = clf.predict_proba(sc.transform(x[n:]))
        ref = roc_auc_score(y[n:], proba[:, 1]) if n_classes == 2 else roc_auc_score(
            y[n:], proba, multi_class="ovr", average="macro"
        )
        assert out["auroc"] == pytest.approx(ref, abs=1e-6)
    # a class absent from the test split is skipped; a single-class test split gives nan
    keep = y[n:] != 3
    out = linear_probe(x[:n], y[:n], x[n:][keep], y[n:][keep], C=0.5)
    assert 0.5 < out["auroc"] <= 1.0
    out = linear_probe(x[:n], y[:n], x[n:][~keep], y[n:][~keep], C=0.5)
    assert np.isnan(out["auroc"]) and out["n_test"] == int((~keep).sum())


def test_linear_probe_input_validation():
    x, y = _blobs()
    with pytest.raises(ValueError, match="train_x has 120 rows but train_y has 119"):
        linear_probe(x[:120], y[:119], x[120:], y[120:])
    with pytest.raises(ValueError, match="test_x has 60 rows but test_y has 59"):
        linear_probe(x[:120], y[:120], x[120:], y[121:])
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x[:120], np.zeros(120, dtype=int), x[120:], y[120:])
    with pytest.raises(ValueError, match="features"):
        linear_probe(x[:120], y[:120], x[120:, :4], y[120:])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(bad[:120], y[:120], x[120:], y[120:])


# --------------------------------------------------------------------------------------------- kNN


def _knn_reference(train_x, train_y, test_x, k, t):
    """Loop-based reference: explicit cosine similarity, sort, dict of votes."""
    preds = []
    for q in test_x.tolist():
        sims = []
        qn = sum(v * v for v in q) ** 0.5
        for row, lab in zip(train_x.tolist(), train_y.tolist()):
            rn = sum(v * v for v in row) ** 0.5
            sims.append((sum(a * b for a, b in zip(q, row)) / (qn * rn), lab))
        sims.sort(key=lambda s: -s[0])
        votes: dict[int, float] = {}
        for s, lab in sims[:k]:
            votes[lab] = votes.get(lab, 0.0) + float(np.exp(s / t))
        best = max(votes.values())
        preds.append(min(lab for lab, v in votes.items() if v == best))
    return np.array(preds)


@pytest.mark.parametrize("k,t,chunk", [(5, 0.07, None), (7, 0.5, 3), (20, 0.1, 1)])
def test_knn_matches_loop_reference(k, t, chunk):
    g = torch.Generator().manual_seed(k)
    train_x, test_x = torch.randn(60, 5, generator=g), torch.randn(25, 5, generator=g)
    train_y = torch.randint(0, 4, (60,), generator=g) * 3 - 2  # non-contiguous, negative labels
    test_y = torch.randint(0, 4, (25,), generator=g) * 3 - 2
    ref = _knn_reference(train_x.double(), train_y, test_x.double(), k, t)
    out = knn_classify(train_x, train_y, test_x, test_y, k=k, temperature=t, chunk_size=chunk)
    assert out["acc"] == pytest.approx(float(np.mean(ref == test_y.numpy())))
    assert out["k"] == k and out["n_train"] == 60 and out["n_test"] == 25


def test_knn_k1_is_nearest_neighbour_and_scale_invariant():
    g = torch.Generator().manual_seed(3)
    train_x, test_x = torch.randn(50, 8, generator=g), torch.randn(30, 8, generator=g)
    train_y = torch.randint(0, 5, (50,), generator=g)
    nn_pred = train_y[(F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T).argmax(1)]
    # test labels = the nearest neighbour's label on the first 20, something else on the last 10
    test_y = torch.cat([nn_pred[:20], (nn_pred[20:] + 1) % 5])
    out = knn_classify(train_x, train_y, test_x, test_y, k=1)
    assert out["acc"] == pytest.approx(20 / 30)
    scaled = knn_classify(train_x * 7.0, train_y, test_x * 0.1, test_y, k=1)
    assert scaled["acc"] == out["acc"]


def test_knn_separable_clusters_tiny_temperature_and_validation():
    x, y = _blobs(n_per_class=40, n_classes=4, dim=16, sep=5.0)
    out = knn_classify(x[:120], y[:120], x[120:], y[120:], k=200, temperature=0.001)  # k clipped, no overflow
    assert out["acc"] > 0.95 and out["k"] == 120
    with pytest.raises(ValueError, match="k must be"):
        knn_classify(x[:120], y[:120], x[120:], y[120:], k=0)
    with pytest.raises(ValueError, match="rows but"):
        knn_classify(x[:120], y[:100], x[120:], y[120:])
