"""Tests for lightning_ssl.evaluation.protocol: label fractions, probes over fractions x seeds, evaluation
transforms derived from pretraining, kNN OOD detection, the results table and ``evaluate-images`` end to end
on the real MedMNIST files in ../shared/data/medmnist."""

from __future__ import annotations

import csv
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from sklearn.datasets import load_digits
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

from lightning_ssl.data import ImageDataModule
from lightning_ssl.data.image import _to_channels, load_medmnist
from lightning_ssl.data.image_transforms import eval_transform
from lightning_ssl.encoders import TimmEncoder
from lightning_ssl.evaluation import (
    EvalTransformMismatchWarning,
    knn_classify,
    knn_fractions,
    knn_ood_auroc,
    knn_predict,
    linear_probe,
    linear_probe_fractions,
    pretraining_eval_datamodule,
    pretraining_eval_settings,
    pretraining_eval_transform,
    results_table,
    stratified_subset,
)
from lightning_ssl.evaluation.protocol import _kth_neighbour_distance, main
from lightning_ssl.methods import SimCLR

MEDMNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "medmnist"


@pytest.fixture(scope="module")
def digits():
    """Real 8x8 digit images as 64-d 'features' with a stratified 80/20 split."""
    data = load_digits()
    x = torch.from_numpy(data.data).float()
    y = torch.from_numpy(data.target).long()
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=data.target)
    return x[tr], y[tr], x[te], y[te]


# ----------------------------------------------------------------------------------- stratified_subset


def test_stratified_subset_sizes_classes_and_seeds():
    shuffle = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([7] * 90 + [3] * 9 + [5] * 1)[shuffle]
    state = torch.random.get_rng_state()
    idx = stratified_subset(labels, 0.1, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must be untouched"
    assert idx.dtype == torch.long and torch.equal(idx, idx.sort().values) and idx.unique().numel() == idx.numel()
    # round(0.1 * 100) = 10 samples; exact shares 9 / 0.9 / 0.1, every class at least one -> 8 / 1 / 1
    picked = labels[idx]
    assert idx.numel() == 10
    assert [int((picked == c).sum()) for c in (7, 3, 5)] == [8, 1, 1]
    assert torch.equal(stratified_subset(labels, 0.1, seed=0), idx)  # seeded
    assert not torch.equal(stratified_subset(labels, 0.1, seed=1), idx)
    # proportional when the shares are whole numbers
    big = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    assert torch.bincount(big[stratified_subset(big, 0.01, seed=3)]).tolist() == [5, 3, 2]
    # fraction 1.0 keeps everything, whatever the seed; [N, 1] labels are flattened
    for seed in (0, 5):
        assert torch.equal(stratified_subset(labels.view(-1, 1), 1.0, seed), torch.arange(100))


@pytest.mark.parametrize(
    "fraction, match",
    [(0.0, "must be > 0"), (-0.1, "must be > 0"), (1.5, r"must be <= 1.*0\.1 for 10%"), (float("nan"), "finite"),
     (float("inf"), "finite"), (True, "a number")],
)
def test_stratified_subset_rejects_bad_fractions(fraction, match):
    with pytest.raises(ValueError, match=match):
        stratified_subset(torch.arange(10) % 2, fraction)


def test_stratified_subset_too_few_samples_names_the_numbers_and_the_fix():
    labels = torch.tensor([0] * 500 + [1] * 46)  # BreastMNIST-sized: 546 samples
    with pytest.raises(ValueError, match=r"fraction 0\.001 of 546 training samples keeps 1, fewer than the 2 classes.*"
                                         r"use a fraction >= 0\.003663 \(2/546\)"):
        stratified_subset(labels, 0.001)
    assert stratified_subset(labels, 2 / 546).numel() == 2  # the suggested fraction works: one per class
    with pytest.raises(ValueError, match="multi-label"):
        stratified_subset(torch.zeros(10, 3, dtype=torch.long), 0.5)


# ------------------------------------------------------------------------------- probes over fractions


def test_linear_probe_fractions_matches_linear_probe_on_each_subset(digits):
    tx, ty, vx, vy = digits
    res = linear_probe_fractions(tx, ty, vx, vy, fractions=(0.05, 1.0), seeds=(0, 1, 2), C=0.5)
    assert set(res) == {0.05, 1.0}
    small, full = res[0.05], res[1.0]
    assert small["n_train"] == round(0.05 * len(ty)) and full["n_train"] == len(ty) and full["n_test"] == len(vy)
    assert [r["seed"] for r in small["runs"]] == [0, 1, 2] and small["seeds"] == 3
    # each run is linear_probe on the raw subset (linear_probe standardises with the subset's own statistics)
    for run in small["runs"]:
        idx = stratified_subset(ty, 0.05, run["seed"])
        expected = linear_probe(tx[idx], ty[idx], vx, vy, C=0.5, seed=run["seed"])
        assert run["acc"] == expected["acc"] and run["auroc"] == expected["auroc"]
    accs = [r["acc"] for r in small["runs"]]
    assert small["acc_mean"] == pytest.approx(np.mean(accs)) and small["acc_std"] == pytest.approx(np.std(accs))
    assert small["acc_std"] > 0  # different labelled subsets give different probes
    # fraction 1.0: the same subset for every seed and a deterministic solver -> std 0
    assert full["acc_std"] == 0.0 and full["auroc_std"] == 0.0
    assert full["acc_mean"] == linear_probe(tx, ty, vx, vy, C=0.5)["acc"]
    assert full["acc_mean"] > small["acc_mean"] > 0.5
    # standardisation is the probe's, from the training subset: an affine change of the features is invisible
    shifted = linear_probe_fractions(tx * 7.0 + 3.0, ty, vx * 7.0 + 3.0, vy, fractions=(0.05,), seeds=(0,), C=0.5)
    assert shifted[0.05]["acc_mean"] == pytest.approx(small["runs"][0]["acc"], abs=1e-9)


def test_knn_fractions_uses_knn_classify_and_standardises_on_the_subset(digits):
    tx, ty, vx, vy = digits
    raw = knn_fractions(tx, ty, vx, vy, fractions=(0.2, 1.0), seeds=(0, 1), k=10, standardize=False)
    std = knn_fractions(tx, ty, vx, vy, fractions=(0.2,), seeds=(0, 1), k=10)
    for seed, run_raw, run_std in zip((0, 1), raw[0.2]["runs"], std[0.2]["runs"]):
        idx = stratified_subset(ty, 0.2, seed)
        assert run_raw["acc"] == knn_classify(tx[idx], ty[idx], vx, vy, k=10)["acc"]
        # standardised with the subset's (not the full training set's) mean and population std
        mean, sd = tx[idx].mean(0), tx[idx].std(0, unbiased=False)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        assert run_std["acc"] == knn_classify((tx[idx] - mean) / sd, ty[idx], (vx - mean) / sd, vy, k=10)["acc"]
        pred = knn_predict(tx[idx], ty[idx], vx, 10, k=10)
        assert run_raw["balanced_acc"] == pytest.approx(balanced_accuracy_score(vy.numpy(), pred.numpy()))
        assert run_raw["k"] == 10
    assert raw[1.0]["acc_std"] == 0.0 and raw[1.0]["balanced_acc_std"] == 0.0
    assert 0.5 < raw[0.2]["auroc_mean"] <= 1.0


def test_knn_fractions_auroc_is_the_vote_share_auroc():
    g = torch.Generator().manual_seed(0)
    tx, vx = torch.randn(60, 5, generator=g), torch.randn(30, 5, generator=g)
    ty, vy = torch.arange(60) % 3, torch.arange(30) % 3
    tx[:, 0] += ty.float()  # some signal
    vx[:, 0] += vy.float()
    res = knn_fractions(tx, ty, vx, vy, fractions=(1.0,), seeds=(0,), k=7, temperature=0.5, standardize=False)
    # brute force: the normalised weighted votes of the 7 most cosine-similar training rows
    bank, q = F.normalize(tx, dim=1), F.normalize(vx, dim=1)
    shares = np.zeros((30, 3))
    for i in range(30):
        sims = (bank @ q[i]).numpy()
        for j in np.argsort(-sims)[:7]:
            shares[i, ty[j]] += np.exp((sims[j] - sims.max()) / 0.5)
        shares[i] /= shares[i].sum()
    expected = roc_auc_score(vy.numpy(), shares, multi_class="ovr", average="macro")
    assert res[1.0]["auroc_mean"] == pytest.approx(expected, abs=1e-6)


def test_fraction_grid_errors_before_fitting(digits, monkeypatch):
    import lightning_ssl.evaluation.protocol as protocol

    def must_not_fit(*args, **kwargs):
        raise AssertionError("a probe was fitted before the fractions were checked")

    monkeypatch.setattr(protocol, "linear_probe", must_not_fit)
    tx, ty, vx, vy = digits
    with pytest.raises(ValueError, match=r"fraction 0\.001 of 1437 training samples keeps 1, fewer than the 10 "):
        linear_probe_fractions(tx, ty, vx, vy, fractions=(1.0, 0.001))
    with pytest.raises(ValueError, match="seeds is empty"):
        knn_fractions(tx, ty, vx, vy, seeds=())
    with pytest.raises(ValueError, match="duplicates"):
        linear_probe_fractions(tx, ty, vx, vy, seeds=(0, 0))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        knn_fractions(tx, ty, vx, vy, k=0)


# ---------------------------------------------------------------------------------------------- OOD


def test_knn_ood_auroc_chance_separation_and_brute_force():
    g = torch.Generator().manual_seed(0)
    offset = torch.zeros(16)
    offset[0] = 4.0  # in-distribution features cluster around one direction
    train, in_test, same = (torch.randn(n, 16, generator=g) + offset for n in (1000, 400, 400))
    chance = knn_ood_auroc(train, in_test, same, k=10)
    assert abs(chance["auroc"] - 0.5) < 0.06
    assert chance["fpr95"] > 0.85  # OOD indistinguishable: nearly all kept at 95% in-distribution recall
    far = torch.randn(400, 16, generator=g) + offset.roll(1)  # around another direction
    sep = knn_ood_auroc(train, in_test, far, k=10)
    assert sep["auroc"] > 0.99 and sep["fpr95"] < 0.05
    assert (sep["k"], sep["n_train"], sep["n_in"], sep["n_ood"]) == (10, 1000, 400, 400)
    # the score is the Euclidean distance to the k-th nearest L2-normalised training feature
    for k in (1, 10):
        brute = torch.cdist(F.normalize(far, dim=1), F.normalize(train, dim=1)).sort(dim=1).values[:, k - 1]
        torch.testing.assert_close(_kth_neighbour_distance(train, far, k), brute, atol=1e-5, rtol=0)
        scores = torch.cat([torch.cdist(F.normalize(x, dim=1), F.normalize(train, dim=1)).sort(dim=1).values[:, k - 1]
                            for x in (in_test, far)])
        labels = np.r_[np.zeros(400), np.ones(400)]
        assert knn_ood_auroc(train, in_test, far, k=k)["auroc"] == pytest.approx(roc_auc_score(labels, scores.numpy()))
    assert knn_ood_auroc(train[:5], in_test, far, k=50)["k"] == 5  # clipped to the bank


def test_knn_ood_auroc_input_errors():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="widths differ"):
        knn_ood_auroc(x, x, torch.randn(10, 5))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        knn_ood_auroc(x, x, x, k=0)
    with pytest.raises(ValueError, match="ood_x is empty"):
        knn_ood_auroc(x, x, torch.zeros(0, 4))


# ---------------------------------------------------------------- evaluation transforms from pretraining


def _pretrain_dm(**kwargs) -> ImageDataModule:
    args = dict(root=str(MEDMNIST), image_size=20, mean=[0.3], std=[0.2], batch_size=8, num_workers=0)
    return ImageDataModule("breastmnist", **{**args, **kwargs})


def test_pretraining_eval_settings_from_datamodule_hparams_and_config():
    dm = _pretrain_dm()
    s = pretraining_eval_settings(dm)
    assert (s.image_size, s.channels, s.mean, s.std) == (20, 1, (0.3,), (0.2,))
    assert pretraining_eval_settings(dm.hparams) == s
    config = {"data": {"class_path": "lightning_ssl.data.ImageDataModule", "init_args": dict(dm.hparams)}}
    assert pretraining_eval_settings(config) == s
    # defaults resolved as the datamodule resolves them: native 28 px, 1 channel, 0.5 / 0.5 for MedMNIST
    native = pretraining_eval_settings({"dataset": "breastmnist", "root": str(MEDMNIST)})
    assert (native.image_size, native.channels, native.mean, native.std) == (28, 1, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="not ImageDataModule"):
        pretraining_eval_settings({"class_path": "lightning_ssl.data.GraphDataModule", "init_args": {}})
    with pytest.raises(ValueError, match="not a set of ImageDataModule arguments"):
        pretraining_eval_settings({"dataset": "breastmnist", "batchsize": 4})


def test_transfer_datamodule_uses_the_pretraining_transform():
    pre = _pretrain_dm()
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvalTransformMismatchWarning)  # no override, no warning
        dm = pretraining_eval_datamodule(pre, "retinamnist", batch_size=5)
    # RetinaMNIST is 28 px RGB with 0.5 stats by default; here it gets pretraining's 20 px, gray, 0.3 / 0.2
    own = ImageDataModule("retinamnist", root=str(MEDMNIST), num_workers=0)
    assert (own.image_size, own.num_channels, own._stats()) == (28, 3, ((0.5,) * 3, (0.5,) * 3))
    assert (dm.image_size, dm.num_channels, tuple(dm._stats()[0]), tuple(dm._stats()[1])) == (20, 1, (0.3,), (0.2,))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch.views[0].shape == (5, 1, 20, 20)
    raw = load_medmnist(MEDMNIST, "retinamnist")["test"][0][:5]
    expected = torch.stack([eval_transform(20, (0.3,), (0.2,))(_to_channels(img, 1)) for img in raw])
    torch.testing.assert_close(batch.views[0], expected)
    train = next(iter(dm.labelled_train_dataloader()))
    assert train.views[0].shape == (5, 1, 20, 20)
    # the bare transform does the same for any image
    torch.testing.assert_close(pretraining_eval_transform(pre)(raw[0]), expected[0])


def test_overrides_that_differ_from_pretraining_warn():
    pre = _pretrain_dm()
    with pytest.warns(EvalTransformMismatchWarning, match=r"image_size 20 -> 28.*Drop the override"):
        dm = pretraining_eval_datamodule(pre, "pneumoniamnist", image_size=28)
    assert dm.image_size == 28  # applied, with the warning
    with pytest.warns(EvalTransformMismatchWarning, match=r"mean \(0\.3,\) -> \(0\.5,\)"):
        dm = pretraining_eval_datamodule(pre, mean=[0.5])
    assert tuple(dm._stats()[0]) == (0.5,) and tuple(dm._stats()[1]) == (0.2,)
    with pytest.warns(EvalTransformMismatchWarning, match="std"):
        pretraining_eval_transform(pre, std=[0.25])
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvalTransformMismatchWarning)
        pretraining_eval_datamodule(pre, image_size=20, channels=1, mean=[0.3], std=(0.2,))  # same values: silent
    with pytest.warns(EvalTransformMismatchWarning), pytest.raises(ValueError, match="pass mean and std with 3 values"):
        pretraining_eval_datamodule(pre, "retinamnist", channels=3)


# --------------------------------------------------------------------------------------- results table


def test_results_table_markdown_and_csv():
    rows = [
        {"model": "last.ckpt", "task": "linear", "dataset": "breastmnist", "fraction": 0.01, "n_train": 5,
         "n_test": 156, "seeds": 3, "acc_mean": 0.8123, "acc_std": 0.0104, "balanced_acc_mean": 0.7,
         "balanced_acc_std": 0.02, "auroc_mean": 0.75, "auroc_std": 0.01, "runs": [{"seed": 0}]},
        {"model": "last.ckpt", "task": "ood-knn", "dataset": "retinamnist", "n_train": 546, "n_test": 156,
         "n_ood": 400, "k": 50, "auroc_mean": 0.9876543210123, "fpr95": 0.25},
    ]
    md, text = results_table(rows, protocol="Protocol: test.")
    lines = md.splitlines()
    assert lines[0].startswith("| model | task | dataset | fraction") and set(lines[1]) <= {"|", "-"}
    assert lines[2] == ("| last.ckpt | linear | breastmnist | 0.01 | 5 | 156 | 0.812 ± 0.010 | 0.700 ± 0.020 | "
                        "0.750 ± 0.010 |  |")
    assert lines[3] == "| last.ckpt | ood-knn | retinamnist |  | 546 | 156 + 400 OOD |  |  | 0.988 | 0.250 |"
    assert md.rstrip().endswith("Protocol: test.")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 2 and parsed[0]["acc_std"] == "0.0104" and parsed[0]["fpr95"] == ""
    assert float(parsed[1]["auroc_mean"]) == 0.9876543210123 and parsed[1]["n_ood"] == "400"
    with pytest.raises(ValueError, match="unknown keys"):
        results_table([{"model": "m", "task": "t", "dataset": "d", "accuracy": 1.0}])
    with pytest.raises(ValueError, match="no rows"):
        results_table([])


# ------------------------------------------------------------------------------------- evaluate-images


def _config(tmp_path: Path) -> Path:
    config = {
        "seed_everything": 0,
        "model": {"class_path": "lightning_ssl.methods.SimCLR", "init_args": {
            "encoder": {"class_path": "lightning_ssl.encoders.TimmEncoder",
                        "init_args": {"name": "test_resnet", "in_chans": 1, "small_stem": True}},
            "proj_hidden_dim": 32, "proj_out_dim": 16}},
        "data": {"class_path": "lightning_ssl.data.ImageDataModule", "init_args": {
            "dataset": "breastmnist", "root": str(MEDMNIST), "image_size": 16, "batch_size": 8,
            "eval_batch_size": 256, "num_workers": 0}},
        "trainer": {"max_steps": 2, "limit_train_batches": 2, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                    "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "accelerator": "cpu", "default_root_dir": str(tmp_path),
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True,
                                                 "save_top_k": 0}}]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def _in_tmp(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])
    monkeypatch.chdir(tmp_path)


def _shared_listing() -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in MEDMNIST.parent.rglob("*")}


@pytest.mark.usefixtures("_in_tmp")
def test_evaluate_images_end_to_end(tmp_path: Path, capsys) -> None:
    from lightning_ssl.cli import SSLCLI

    before = _shared_listing()
    config = _config(tmp_path)
    cli = SSLCLI(args=["--config", str(config)], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert ckpt.is_file() and cli.trainer.global_step == 2
    out = tmp_path / "results" / "x.md"
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvalTransformMismatchWarning)
        code = main(["--config", str(config), "--ckpt", str(ckpt), "--fractions", "0.1,1", "--seeds", "0,1",
                     "--knn-k", "5", "--transfer", f"retinamnist:{MEDMNIST}", "--ood", "retinamnist",
                     "--random-init", "--out", str(out)])
    assert code == 0
    md, csv_path = out.read_text(), out.with_suffix(".csv")
    assert csv_path.is_file() and md in capsys.readouterr().out
    assert "resize to 16 px, 1 channel(s), mean [0.5], std [0.5]" in md
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    keys = {(r["model"], r["task"], r["dataset"], r["fraction"]) for r in rows}
    expected = {(m, task, ds, f) for m in ("last.ckpt", "random-init")
                for task, ds, fracs in (("linear", "breastmnist", ("0.1", "1.0")),
                                        ("knn", "breastmnist", ("0.1", "1.0")),
                                        ("transfer-linear", "retinamnist", ("0.1", "1.0")),
                                        ("ood-knn", "retinamnist", ("",)))
                for f in fracs}
    assert keys == expected and len(rows) == len(expected) == 14
    by = {(r["model"], r["task"], r["fraction"]): r for r in rows}
    assert by["last.ckpt", "linear", "1.0"]["n_train"] == "546" and by["last.ckpt", "linear", "0.1"]["n_train"] == "55"
    assert by["last.ckpt", "linear", "1.0"]["n_test"] == "156" and by["last.ckpt", "knn", "1.0"]["k"] == "5"
    assert by["last.ckpt", "transfer-linear", "1.0"]["n_train"] == "1080"  # RetinaMNIST's 1080 training images
    assert float(by["last.ckpt", "linear", "1.0"]["acc_std"]) == 0.0
    ood = by["last.ckpt", "ood-knn", ""]
    assert (ood["n_ood"], ood["n_test"], ood["k"]) == ("400", "156", "50") and 0.0 <= float(ood["auroc_mean"]) <= 1.0
    for r in rows:
        assert all(0.0 <= float(r[c]) <= 1.0 for c in ("acc_mean", "balanced_acc_mean", "auroc_mean") if r[c])
    trained = [r["auroc_mean"] for r in rows if r["model"] == "last.ckpt"]
    initial = [r["auroc_mean"] for r in rows if r["model"] == "random-init"]
    assert trained != initial, "the checkpoint's weights must be the ones evaluated"
    assert _shared_listing() == before, "nothing may be written next to the shared data"


def _checkpoint_of(tmp_path: Path, encoder: TimmEncoder, spec: bool = True) -> Path:
    model = SimCLR(encoder, proj_hidden_dim=32, proj_out_dim=16)
    checkpoint = {"state_dict": model.state_dict()}
    if spec:
        model.on_save_checkpoint(checkpoint)  # records lightning_ssl_encoder as training does
    path = tmp_path / "other.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.usefixtures("_in_tmp")
def test_evaluate_images_checkpoint_of_another_encoder_names_both(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path)
    ckpt = _checkpoint_of(tmp_path, TimmEncoder("resnet18", in_chans=1, small_stem=True))
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(config), "--ckpt", str(ckpt), "--out", str(tmp_path / "r.md")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "TimmEncoder(name='resnet18', in_chans=1, small_stem=True)" in err
    assert "TimmEncoder(name='test_resnet', in_chans=1, small_stem=True)" in err and "differs in name" in err
    assert not (tmp_path / "r.md").exists()
    # without the recorded spec, loading still fails with the shared clear message
    ckpt = _checkpoint_of(tmp_path, TimmEncoder("test_resnet", in_chans=3, small_stem=True), spec=False)
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--ckpt", str(ckpt)])
    assert "does not match the config's model" in capsys.readouterr().err


@pytest.mark.usefixtures("_in_tmp")
@pytest.mark.parametrize("extra, message", [
    (["--fractions", "0,1"], "must be > 0"),
    (["--seeds", "a"], "--seeds 'a'"),
    (["--transfer", "breastmnistt"], "unknown dataset 'breastmnistt'"),
    (["--out", "x.csv"], "--out names the Markdown file"),
])
def test_evaluate_images_argument_errors(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(_config(tmp_path)), *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err


class _PixelEncoder(torch.nn.Module):
    """Frozen 'features' = the flattened pixels (the protocol's plumbing only)."""

    out_dim = 784

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_fraction_too_small_for_a_transfer_dataset_fails_before_any_probe(monkeypatch):
    """0.004 keeps 2 of BreastMNIST's 546 (2 classes: fine) but 4 of RetinaMNIST's 1080 (5 classes): the
    protocol must stop before fitting the home dataset's probes, naming the transfer dataset."""
    import lightning_ssl.evaluation.protocol as protocol

    def must_not_fit(*args, **kwargs):
        raise AssertionError("a probe was fitted before every dataset's fractions were checked")

    monkeypatch.setattr(protocol, "linear_probe_fractions", must_not_fit)
    monkeypatch.setattr(protocol, "knn_fractions", must_not_fit)
    dm = ImageDataModule("breastmnist", root=str(MEDMNIST), batch_size=32, num_workers=0, pin_memory=False)
    with pytest.raises(ValueError, match=r"\(retinamnist\): fraction 0\.004 of 1080 training samples keeps 4, fewer than the 5"):
        protocol.evaluate_image_protocol(_PixelEncoder(), dm, fractions=(0.004, 1.0), seeds=(0,),
                                         transfer=["retinamnist"], device="cpu")
