"""PointCloudDataModule: real ModelNet meshes, PyG ModelNet/ShapeNet layouts, file formats, synthetic shapes."""

import json
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lightning_ssl.data import (
    POINT_DATASETS,
    SYNTHETIC_SHAPES,
    PointCloudDataModule,
    PointView,
    SSLBatch,
    make_synthetic_shapes,
    read_point_file,
)

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "modelnet_sample"


def _listing(root: Path) -> list[tuple[str, int, float]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1, p.stat().st_mtime)
                  for p in root.rglob("*"))


def _check_unit_sphere(points: torch.Tensor) -> None:
    xyz = points[..., :3]
    assert torch.allclose(xyz.norm(dim=-1).amax(dim=1), torch.ones(xyz.shape[0]), atol=1e-5)
    assert xyz.mean(dim=1).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------- real meshes
@pytest.fixture(scope="module")
def sample_dm(tmp_path_factory):
    assert SAMPLE.is_dir(), f"real data missing: the ModelNet sample should be at {SAMPLE} (../shared/data)"
    before = _listing(SAMPLE)
    cache = tmp_path_factory.mktemp("cache")
    dm = PointCloudDataModule("folder", root=str(SAMPLE), num_points=128, batch_size=4, features=["normals"],
                              cache_dir=str(cache), sample_seed=3)
    dm.setup()
    return dm, before


def test_real_modelnet_sample_loads_as_folder(sample_dm):
    dm, before = sample_dm
    assert dm.class_names == ["airplane", "bathtub", "bed"] and dm.num_classes == 3
    assert dm.points.shape == (9, 128, 6) and dm.in_channels == 3 and dm.up_axis == "z"
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 9 and sizes == {"train": 6, "val": 1, "test": 2}
    all_idx = torch.cat(list(dm.splits.values())).sort().values
    assert torch.equal(all_idx, torch.arange(9))  # disjoint and complete
    airplane = int((dm.labels == 0).nonzero())
    assert airplane in dm.splits["train"].tolist()  # a class with one sample stays in train
    assert torch.equal(torch.bincount(dm.labels), torch.tensor([1, 5, 3]))
    _check_unit_sphere(dm.points)
    assert torch.allclose(dm.points[..., 3:].norm(dim=-1), torch.ones(9, 128), atol=1e-5)
    assert dm.num_part_classes is None
    assert _listing(SAMPLE) == before  # nothing written next to the data
    b = next(iter(dm.val_dataloader()))
    assert isinstance(b, SSLBatch) and len(b.views) == 1 and b.views[0].shape == (1, 128, 6)


def test_real_sample_is_deterministic_and_seeded(sample_dm, tmp_path):
    dm, before = sample_dm
    files = sorted((SAMPLE / "bed").glob("*.off"))[:1]
    root = tmp_path / "one"
    (root / "bed").mkdir(parents=True)
    os.symlink(files[0], root / "bed" / files[0].name)
    a = PointCloudDataModule("folder", root=str(root), num_points=128, sample_seed=3, val_fraction=0, test_fraction=0)
    b = PointCloudDataModule("folder", root=str(root), num_points=128, sample_seed=3, val_fraction=0, test_fraction=0)
    c = PointCloudDataModule("folder", root=str(root), num_points=128, sample_seed=4, val_fraction=0, test_fraction=0)
    a.setup(), b.setup(), c.setup()
    assert torch.equal(a.points, b.points)
    assert not torch.equal(a.points, c.points)
    assert a.points.shape == (1, 128, 3)
    assert _listing(SAMPLE) == before


# ---------------------------------------------------------------------------------------- PyG ModelNet
MODELNET10 = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


def _write_off(path: Path, scale: float = 1.0, glued_header: bool = False) -> None:
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]) * scale
    quads = [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 5, 4], [2, 3, 7, 6], [1, 2, 6, 5], [0, 3, 7, 4]]
    head = f"OFF{len(v)} {len(quads)} 0\n" if glued_header else f"OFF\n{len(v)} {len(quads)} 0\n"
    body = "".join(" ".join(f"{x:g}" for x in r) + "\n" for r in v) + "".join("4 " + " ".join(map(str, q)) + "\n" for q in quads)
    path.write_text(head + body)


def _chmod_tree(root: Path, writable: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_modelnet10_through_pyg_with_read_only_root(tmp_path):
    root = tmp_path / "ModelNet10"
    for i, c in enumerate(MODELNET10):
        for split, k in (("train", 3), ("test", 1)):
            d = root / "raw" / c / split
            d.mkdir(parents=True)
            for j in range(k):
                _write_off(d / f"{c}_{j + 1:04d}.off", scale=1 + i + j, glued_header=j == 1)
    _chmod_tree(root, writable=False)
    before = _listing(root)
    try:
        dm = PointCloudDataModule("modelnet10", root=str(root), num_points=64, batch_size=4, features=["normals"],
                                  cache_dir=str(tmp_path / "cache"))
        dm.prepare_data()  # once per node under DDP: PyG processes into the cache here, before any rank's setup
        assert any((tmp_path / "cache").rglob("training.pt")) and dm.points is None
        dm.setup()
        assert dm.num_classes == 10 and dm.class_names == MODELNET10 and dm.up_axis == "z"
        assert dm.points.shape == (40, 64, 6)
        assert len(dm.splits["test"]) == 10 and len(dm.splits["train"]) + len(dm.splits["val"]) == 30
        assert len(dm.splits["val"]) == 1  # round(3 * 0.1) = 0 per class, so one training sample moves to val
        assert set(dm.labels[dm.splits["test"]].tolist()) == set(range(10))
        _check_unit_sphere(dm.points)
        # sampled on the cube's surface: every point lies on a face of its cloud's bounding box
        xyz = dm.points[..., :3]
        lo, hi = xyz.amin(1, keepdim=True), xyz.amax(1, keepdim=True)
        gap = torch.minimum((xyz - lo).abs(), (xyz - hi).abs()).amin(-1)
        assert gap.max() < 1e-5 and torch.allclose(dm.points[..., 3:].abs().amax(-1), torch.ones(40, 64))
        assert (tmp_path / "cache").is_dir() and any((tmp_path / "cache").rglob("training.pt"))
        assert _listing(root) == before
    finally:
        _chmod_tree(root, writable=True)


def test_modelnet_unzipped_layout_is_read_like_folder(tmp_path):
    root = tmp_path / "ModelNet40"
    for c in ("airplane", "bed"):
        for split in ("train", "test"):
            (root / c / split).mkdir(parents=True)
            _write_off(root / c / split / f"{c}_0001.off")
    dm = PointCloudDataModule("modelnet40", root=str(root), num_points=32, val_fraction=0.0)
    dm.setup()
    assert dm.class_names == ["airplane", "bed"] and dm.up_axis == "z"
    assert len(dm.splits["train"]) == 2 and len(dm.splits["test"]) == 2


# ---------------------------------------------------------------------------------------- PyG ShapeNet
def test_shapenet_through_pyg_fake_layout(tmp_path):
    from torch_geometric.datasets import ShapeNet

    root = tmp_path / "shapenet"
    raw = root / "raw"
    for synset in ShapeNet.category_ids.values():
        (raw / synset).mkdir(parents=True)
    (raw / "train_test_split").mkdir()
    rng = np.random.default_rng(0)
    lists = {"train": [], "val": [], "test": []}
    for cat, n_pts in (("Airplane", 100), ("Mug", 40)):
        synset = ShapeNet.category_ids[cat]
        for split, k in (("train", 2), ("val", 1), ("test", 1)):
            for j in range(k):
                name = f"{split}{j}"
                xyz = rng.normal(size=(n_pts, 3))
                nrm = rng.normal(size=(n_pts, 3))
                nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
                part = rng.choice(ShapeNet.seg_classes[cat], n_pts)
                np.savetxt(raw / synset / f"{name}.txt", np.column_stack([xyz, nrm, part]), fmt="%.6f")
                lists[split].append(f"shape_data/{synset}/{name}")
    for split, names in lists.items():
        (raw / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(names))
    _chmod_tree(root, writable=False)
    before = _listing(root)
    try:
        with pytest.warns(UserWarning, match="fewer than num_points=64"):  # the 40-point mugs are resampled
            dm = PointCloudDataModule("shapenet", root=str(root), num_points=64, batch_size=2, features=["normals"],
                                      shapenet_categories=["Airplane", "Mug"], cache_dir=str(tmp_path / "cache"))
            dm.setup()
        assert dm.class_names == ["Airplane", "Mug"] and dm.num_part_classes == 50 and dm.up_axis == "y"
        assert {k: len(v) for k, v in dm.splits.items()} == {"train": 4, "val": 2, "test": 2}
        assert dm.points.shape == (8, 64, 6)
        for lab, cat in enumerate(("Airplane", "Mug")):
            rows = dm.labels == lab
            assert set(dm.parts[rows].unique().tolist()) <= set(ShapeNet.seg_classes[cat])
        table = dm.category_parts  # the ShapeNet-part protocol's fixed category -> parts table
        assert table.shape == (2, 50) and table[0].nonzero().flatten().tolist() == ShapeNet.seg_classes["Airplane"]
        assert table[1].nonzero().flatten().tolist() == ShapeNet.seg_classes["Mug"]
        batch = next(iter(dm.segmentation_dataloader("val")))
        assert batch["points"].shape == (2, 64, 6) and batch["parts"].shape == (2, 64) and batch["labels"].shape == (2,)
        assert _listing(root) == before
    finally:
        _chmod_tree(root, writable=True)


# ---------------------------------------------------------------------------------------- file formats
def _ply_ascii(path: Path, xyz: np.ndarray, faces=None, normals=None, colors=None) -> None:
    props = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals is not None else [])
    lines = ["ply", "format ascii 1.0", "comment test", f"element vertex {len(xyz)}"]
    lines += [f"property float {p}" for p in props]
    if colors is not None:
        lines += ["property uchar red", "property uchar green", "property uchar blue"]
    if faces is not None:
        lines += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    lines.append("end_header")
    for i in range(len(xyz)):
        row = list(xyz[i]) + (list(normals[i]) if normals is not None else [])
        lines.append(" ".join(f"{v:.6f}" for v in row) + ("" if colors is None else " " + " ".join(str(int(c)) for c in colors[i])))
    for f in faces or []:
        lines.append(f"{len(f)} " + " ".join(map(str, f)))
    path.write_text("\n".join(lines) + "\n")


def _ply_binary(path: Path, xyz: np.ndarray, colors: np.ndarray, faces, big: bool = False) -> None:
    end = ">" if big else "<"
    head = (f"ply\nformat binary_{'big' if big else 'little'}_endian 1.0\nelement vertex {len(xyz)}\n"
            "property float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\n"
            f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n").encode()
    body = b"".join(struct.pack(end + "fffBBB", *map(float, xyz[i]), *map(int, colors[i])) for i in range(len(xyz)))
    body += b"".join(struct.pack(end + "B" + "i" * len(f), len(f), *f) for f in faces)
    path.write_bytes(head + body)


def test_ply_readers_ascii_and_binary(tmp_path):
    xyz = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [51, 102, 204]])
    _ply_ascii(tmp_path / "a.ply", xyz, faces=[[0, 1, 2, 3]], normals=np.tile([0, 0, 1.0], (4, 1)), colors=colors)
    _ply_binary(tmp_path / "b.ply", xyz, colors, [[0, 1, 2, 3]])
    _ply_binary(tmp_path / "c.ply", xyz, colors, [[0, 1, 2], [0, 2, 3]], big=True)
    for name in ("a.ply", "b.ply", "c.ply"):
        rec = read_point_file(tmp_path / name)
        assert torch.allclose(rec["pos"], torch.from_numpy(xyz))
        assert torch.allclose(rec["colors"], torch.from_numpy(colors / 255.0).float())
        assert rec["faces"].tolist() == [[0, 0], [1, 2], [2, 3]]  # the quad as a fan of two triangles
    assert torch.allclose(read_point_file(tmp_path / "a.ply")["normals"], torch.tensor([0, 0, 1.0]).expand(4, 3))
    assert read_point_file(tmp_path / "b.ply")["normals"] is None


def test_folder_of_mixed_point_files(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir(parents=True)
    d = tmp_path / "data"
    cloud = lambda n: np.column_stack([rng.normal(size=(n, 3)), np.tile([0, 1.0, 0], (n, 1))])  # noqa: E731
    np.save(d / "a" / "s1.npy", cloud(80))
    np.savetxt(d / "a" / "s2.xyz", cloud(90), fmt="%.5f")
    np.savetxt(d / "a" / "s3.txt", cloud(70), fmt="%.5f", delimiter=",")
    _ply_ascii(d / "b" / "s4.ply", rng.normal(size=(100, 3)), normals=np.tile([0, 1.0, 0], (100, 1)))
    _ply_binary(d / "b" / "s5.ply", rng.normal(size=(100, 3)).astype(np.float32), rng.integers(0, 255, (100, 3)), [])
    _ply_ascii(d / "b" / "s6.ply", rng.normal(size=(64, 3)), normals=np.tile([0, 1.0, 0], (64, 1)))
    with pytest.raises(ValueError, match=r"s5\.ply has no normals"):
        PointCloudDataModule("folder", root=str(d), num_points=64, features=["normals"]).setup()
    (d / "b" / "s5.ply").unlink()
    for sub in ("random", "fps"):
        dm = PointCloudDataModule("folder", root=str(d), num_points=64, features=["normals"], subsample=sub,
                                  val_fraction=0.2, test_fraction=0.2)
        dm.setup()
        assert dm.points.shape == (5, 64, 6) and dm.class_names == ["a", "b"] and dm.up_axis == "y"
        _check_unit_sphere(dm.points)
        # normals (0, 1, 0) survive: normalisation is a translation and a uniform scale
        assert torch.allclose(dm.points[..., 3:], torch.tensor([0, 1.0, 0]).expand(5, 64, 3), atol=1e-4)
        assert sum(len(v) for v in dm.splits.values()) == 5


def test_seven_column_txt_has_parts(tmp_path):
    rng = np.random.default_rng(1)
    for c in ("x", "y"):
        (tmp_path / c).mkdir()
        for j in range(3):
            arr = np.column_stack([rng.normal(size=(50, 3)), np.tile([1.0, 0, 0], (50, 1)), rng.integers(0, 4, 50)])
            np.savetxt(tmp_path / c / f"{j}.txt", arr, fmt="%.5f")
    dm = PointCloudDataModule("folder", root=str(tmp_path), num_points=32)
    dm.setup()
    assert dm.num_part_classes == 4 and dm.parts.shape == (6, 32) and dm.parts.dtype == torch.long


# ---------------------------------------------------------------------------------------- synthetic
def test_make_synthetic_shapes_contract():
    assert len(SYNTHETIC_SHAPES) >= 6 and "synthetic" in POINT_DATASETS
    d = make_synthetic_shapes(4, 256, noise=0.0, seed=1)
    M = 4 * len(SYNTHETIC_SHAPES)
    assert d["points"].shape == (M, 256, 3) and d["normals"].shape == (M, 256, 3)
    assert torch.equal(torch.bincount(d["labels"]), torch.full((len(SYNTHETIC_SHAPES),), 4))
    assert torch.allclose(d["normals"].norm(dim=-1), torch.ones(M, 256), atol=1e-5)
    # two parts per class, global ids 2c, 2c+1, both present in every shape
    for c in range(len(SYNTHETIC_SHAPES)):
        rows = d["parts"][d["labels"] == c]
        assert set(rows.unique().tolist()) == {2 * c, 2 * c + 1}
    e = make_synthetic_shapes(4, 256, noise=0.0, seed=1)
    assert all(torch.equal(d[k], e[k]) for k in d)
    f = make_synthetic_shapes(4, 256, noise=0.0, seed=2)
    assert not torch.equal(d["points"], f["points"])
    # sphere (class 0) without noise: an ellipsoid, normals outward
    assert ((d["points"] * d["normals"]).sum(-1)[d["labels"] == 0] > 0).all()
    sub = make_synthetic_shapes(2, 16, classes=["torus", "cube"])
    assert sub["labels"].tolist() == [0, 0, 1, 1] and set(sub["parts"].unique().tolist()) <= {0, 1, 2, 3}


def test_synthetic_datamodule_splits_and_unit_sphere():
    dm = PointCloudDataModule(num_points=64, batch_size=8, synthetic_samples_per_class=10, features=["normals"])
    dm.setup()
    assert dm.num_classes == 6 and dm.class_names == list(SYNTHETIC_SHAPES) and dm.num_part_classes == 12
    assert dm.points.shape == (60, 64, 6) and dm.up_axis == "y" and dm.in_channels == 3
    _check_unit_sphere(dm.points)
    for split, per_class in (("train", 7), ("val", 1), ("test", 2)):
        assert torch.equal(torch.bincount(dm.labels[dm.splits[split]], minlength=6), torch.full((6,), per_class))
    train = next(iter(dm.train_dataloader()))
    assert train.views[0].shape == (8, 64, 6) and train.target.shape == (8,)
    assert len(dm.train_dataloader()) == 42 // 8  # drop_last
    seg = next(iter(dm.segmentation_dataloader("test")))
    assert seg["parts"].shape == (8, 64) and int(seg["parts"].max()) < 12
    bank = list(dm.labelled_train_dataloader())
    assert sum(len(b) for b in bank) == 42 and torch.equal(torch.cat([b.index for b in bank]), dm.splits["train"])


# ---------------------------------------------------------------------------------------- Lightning smoke
class TinyPointEncoder(nn.Module):
    """Per-point Linear(3, 16) + ReLU, max over points."""

    def __init__(self) -> None:
        super().__init__()
        self.out_dim, self.in_channels = 16, 0
        self.lin = nn.Linear(3, 16)

    def forward(self, x):
        return torch.relu(self.lin(x[..., :3])).amax(dim=1)


def test_lightning_fast_dev_run_views_on_device():
    import lightning as L

    from lightning_ssl.methods import SimCLR

    seen = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["train"] = batch

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen["val"] = batch

    dm = PointCloudDataModule(num_points=64, batch_size=8, synthetic_samples_per_class=8,
                              views=[PointView(rotate="up", scale=(0.8, 1.2)), PointView(jitter_sigma=0.01, translate=0.1)])
    model = SimCLR(encoder=TinyPointEncoder(), proj_hidden_dim=16, proj_out_dim=8, warmup_epochs=0)
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Spy()])
    trainer.fit(model, datamodule=dm)
    train, val = seen["train"], seen["val"]
    assert len(train.views) == 2 and all(v.shape == (8, 64, 3) for v in train.views)
    raw = dm.points[train.index]
    assert not torch.allclose(train.views[0], raw) and not torch.allclose(train.views[1], raw)
    assert not torch.allclose(train.views[0], train.views[1])
    assert len(val.views) == 1 and torch.equal(val.views[0], dm.points[val.index])
