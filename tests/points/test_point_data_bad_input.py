"""Bad input to the point-cloud data: every error says what is wrong and how to fix it."""

import numpy as np
import pytest
from torch import nn

from lightning_ssl.data import PointCloudDataModule, PointView, read_point_file


def _folder(tmp_path, n=50, name="s.xyz"):
    (tmp_path / "c").mkdir(exist_ok=True)
    np.savetxt(tmp_path / "c" / name, np.random.default_rng(0).normal(size=(n, 3)))
    return tmp_path


def test_unknown_dataset_suggests():
    with pytest.raises(ValueError, match=r"Unknown point dataset 'modelnet41'.*Did you mean 'modelnet40'"):
        PointCloudDataModule("modelnet41", root=".")
    with pytest.raises(ValueError, match="Valid names: synthetic"):
        PointCloudDataModule("zzzz")


def test_unknown_extension(tmp_path):
    (tmp_path / "a.stl").write_text("solid")
    with pytest.raises(ValueError, match=r"a\.stl.*unsupported.*'\.stl'.*\.off, \.ply, \.npy"):
        read_point_file(tmp_path / "a.stl")
    _folder(tmp_path)
    (tmp_path / "c" / "b.obj").write_text("v 0 0 0")
    with pytest.raises(ValueError, match=r"b\.obj.*supported"):
        PointCloudDataModule("folder", root=str(tmp_path), num_points=16).setup()


def test_nan_coordinates_name_the_file(tmp_path):
    arr = np.random.default_rng(0).normal(size=(20, 3))
    arr[3, 1] = np.nan
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(ValueError, match=r"bad\.npy has NaN/Inf coordinates.*Remove those points"):
        read_point_file(tmp_path / "bad.npy")
    (tmp_path / "inf.xyz").write_text("0 0 0\n1 inf 0\n")
    with pytest.raises(ValueError, match=r"inf\.xyz has NaN/Inf"):
        read_point_file(tmp_path / "inf.xyz")


def test_empty_files(tmp_path):
    (tmp_path / "e.off").write_text("OFF\n0 0 0\n")
    with pytest.raises(ValueError, match=r"e\.off.*(empty|no vertices)"):
        read_point_file(tmp_path / "e.off")
    (tmp_path / "z.off").write_text("")
    with pytest.raises(ValueError, match=r"z\.off"):
        read_point_file(tmp_path / "z.off")
    (tmp_path / "e.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                                    "property float z\nend_header\n")
    with pytest.raises(ValueError, match=r"e\.ply is empty"):
        read_point_file(tmp_path / "e.ply")
    (tmp_path / "e.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match=r"e\.txt is empty"):
        read_point_file(tmp_path / "e.txt")
    np.save(tmp_path / "w.npy", np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"w\.npy.*\[N, 3\].*\[4, 5\]"):
        read_point_file(tmp_path / "w.npy")


def test_too_few_points_warn_or_error(tmp_path):
    _folder(tmp_path, n=10, name="small.xyz")
    with pytest.warns(UserWarning, match=r"fewer than num_points=32.*small\.xyz"):
        dm = PointCloudDataModule("folder", root=str(tmp_path), num_points=32, val_fraction=0, test_fraction=0)
        dm.setup()
    assert dm.points.shape == (1, 32, 3)
    with pytest.raises(ValueError, match=r"small\.xyz has 10 points, fewer than num_points=32.*too_few_points"):
        PointCloudDataModule("folder", root=str(tmp_path), num_points=32, too_few_points="error").setup()
    with pytest.raises(ValueError, match="too_few_points must be"):
        PointCloudDataModule(too_few_points="skip")


def test_missing_root(tmp_path):
    with pytest.raises(ValueError, match="needs `root`"):
        PointCloudDataModule("modelnet40")
    with pytest.raises(FileNotFoundError, match=r"does not exist.*ModelNet40\.zip"):
        PointCloudDataModule("modelnet40", root=str(tmp_path / "nope")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No ModelNet10 data.*ModelNet10\.zip.*nothing is downloaded"):
        PointCloudDataModule("modelnet10", root=str(tmp_path / "empty")).setup()
    with pytest.raises(FileNotFoundError, match=r"ShapeNet.*lacks raw.*shapenetcore"):
        PointCloudDataModule("shapenet", root=str(tmp_path / "empty")).setup()
    with pytest.raises(FileNotFoundError, match="No class folders"):
        PointCloudDataModule("folder", root=str(tmp_path / "empty")).setup()


def test_features_not_available(tmp_path):
    with pytest.raises(ValueError, match=r"'colors'.*synthetic dataset has no colors"):
        PointCloudDataModule(features=["colors"]).setup()
    with pytest.raises(ValueError, match=r"Unknown feature.*'normal'.*Did you mean 'normals'"):
        PointCloudDataModule(features=["normal"])
    _folder(tmp_path)
    with pytest.raises(ValueError, match=r"s\.xyz has no normals.*Remove 'normals'"):
        PointCloudDataModule("folder", root=str(tmp_path), num_points=16, features=["normals"]).setup()
    dm = PointCloudDataModule(num_points=16, synthetic_samples_per_class=2, test_fraction=0.5)
    dm.setup()
    dm.parts = None
    with pytest.raises(ValueError, match="no per-point part labels; use dataset shapenet or synthetic"):
        dm.segmentation_dataloader("train")


@pytest.mark.parametrize("kwargs", [dict(val_fraction=1.2), dict(test_fraction=-0.1),
                                    dict(val_fraction=0.5, test_fraction=0.5)])
def test_fraction_out_of_range(kwargs):
    with pytest.raises(ValueError, match=r"val_fraction .* and test_fraction .* must be in \[0, 1\)"):
        PointCloudDataModule(**kwargs)


def test_check_encoder_mismatch():
    dm = PointCloudDataModule(num_points=64, features=["normals"])

    class Enc(nn.Module):
        out_dim, in_channels, min_points = 8, 0, 0

    with pytest.raises(ValueError, match=r"features \['normals'\] = 3 extra channels.*in_channels=0.*in_channels: 3"):
        dm.check_encoder(Enc())
    enc = Enc()
    enc.in_channels, enc.min_points = 3, 128
    with pytest.raises(ValueError, match=r"min_points=128.*num_points=64"):
        dm.check_encoder(enc)
    enc.min_points = 64
    dm.check_encoder(enc)  # fits
    dm.check_encoder(nn.Linear(3, 3))  # no in_channels attribute: nothing to check


@pytest.mark.parametrize("kwargs, match", [
    (dict(rotate="z"), r"rotate must be one of \('none', 'up', 'so3'\)"),
    (dict(scale=(1.5, 0.5)), r"0 < low <= high"),
    (dict(scale=(0.0, 1.0)), r"0 < low <= high"),
    (dict(scale=(1.0,)), r"pair \(low, high\)"),
    (dict(jitter_sigma=-0.1), r"must be >= 0"),
    (dict(translate=-1.0), r"translate must be >= 0"),
    (dict(point_dropout=1.0), r"point_dropout must be in \[0, 1\)"),
    (dict(crop=0.0), r"crop must be in \(0, 1\]"),
    (dict(crop=1.5), r"crop must be in \(0, 1\]"),
])
def test_wrong_view_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PointView(**kwargs)


def test_bad_options():
    with pytest.raises(ValueError, match="up_axis must be"):
        PointCloudDataModule(up_axis="w")
    with pytest.raises(ValueError, match="subsample must be"):
        PointCloudDataModule(subsample="grid")
    with pytest.raises(ValueError, match=r"Unknown ShapeNet categories \['Plane'\]"):
        PointCloudDataModule("shapenet", root=".", shapenet_categories=["Plane"])
    from lightning_ssl.data import apply_point_view
    import torch

    with pytest.raises(ValueError, match=r"\[B, N, 3 \+ C\]"):
        apply_point_view(torch.zeros(4, 3), PointView(translate=0.1))
    with pytest.raises(ValueError, match="normals=True needs channels 3:6"):
        apply_point_view(torch.zeros(1, 4, 3), PointView(translate=0.1), normals=True)


def test_mesh_whose_faces_all_have_zero_area(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "line.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")
    dm = PointCloudDataModule("folder", root=str(tmp_path), num_points=16, val_fraction=0, test_fraction=0)
    with pytest.raises(ValueError, match=r"line\.off.*zero area"):
        dm.setup()
