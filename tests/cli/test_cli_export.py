"""``lightning-ssl export``: trained encoders load into the bare timm/torchvision model with strict=True."""

from __future__ import annotations

import re

import json
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_ssl.cli import main
from lightning_ssl.export import export_encoder
from lightning_ssl.data import ImageDataModule
from lightning_ssl.encoders import TimmEncoder, TorchvisionEncoder, build_bare_model
from lightning_ssl.methods import BYOL, SimCLR

MEDMNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "medmnist"



def _datamodule() -> ImageDataModule:
    # 16 px keeps the small-stem ResNet-18 cheap on CPU
    return ImageDataModule("breastmnist", root=str(MEDMNIST), batch_size=4, num_workers=0, image_size=16)


def _train(model: L.LightningModule, tmp_path: Path, steps: int = 2) -> Path:
    """Fit ``steps`` optimizer steps on BreastMNIST and return the path of ``last.ckpt``."""
    ckpt_dir = tmp_path / "checkpoints"
    trainer = L.Trainer(
        max_steps=steps, limit_train_batches=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0)],
    )
    trainer.fit(model, datamodule=_datamodule())
    assert trainer.global_step == steps
    last = ckpt_dir / "last.ckpt"
    assert last.is_file(), sorted(p.name for p in ckpt_dir.iterdir())
    return last


def _clean_batch() -> torch.Tensor:
    dm = _datamodule()
    dm.setup("validate")
    return next(iter(dm.val_dataloader())).views[0]


def _export(ckpt: Path, out: Path, *extra: str) -> dict:
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), *extra]) == 0
    assert out.is_file()
    sidecar = out.with_suffix(out.suffix + ".json")
    assert sidecar.is_file()
    return json.loads(sidecar.read_text())


def _same_outputs(bare: torch.nn.Module, encoder: torch.nn.Module) -> None:
    x = _clean_batch()
    with torch.no_grad():
        expected = encoder.eval()(x)
        got = bare.eval()(x)
    assert got.shape == expected.shape == (4, encoder.out_dim)
    torch.testing.assert_close(got, expected)


def test_export_plain_timm_resnet_loads_into_timm_create_model(tmp_path: Path, capsys) -> None:
    model = SimCLR(TimmEncoder("resnet18", in_chans=1, small_stem=False), proj_hidden_dim=64, proj_out_dim=32)
    initial = {k: v.clone() for k, v in model.encoder.model.state_dict().items()}
    ckpt = _train(model, tmp_path)
    out = tmp_path / "export" / "encoder.pt"
    spec = _export(ckpt, out)
    assert "wrote" in capsys.readouterr().out
    assert spec["kind"] == "timm" and spec["name"] == "resnet18"
    assert spec["in_chans"] == 1 and spec["small_stem"] is False and spec["teacher"] is False

    bare = timm.create_model("resnet18", num_classes=0, in_chans=1)
    state = torch.load(out)
    bare.load_state_dict(state, strict=True)
    # trained weights, not the initial ones
    assert any(not torch.equal(state[k], initial[k]) for k in initial if initial[k].is_floating_point())
    _same_outputs(bare, model.encoder)


@pytest.mark.parametrize("kind", ["timm", "torchvision"])
def test_export_small_stem_and_torchvision_load_with_build_bare_model(tmp_path: Path, kind: str) -> None:
    if kind == "timm":
        encoder = TimmEncoder("resnet18", in_chans=1, small_stem=True)
    else:
        encoder = TorchvisionEncoder("resnet18", in_chans=1)
    model = SimCLR(encoder, proj_hidden_dim=64, proj_out_dim=32)
    ckpt = _train(model, tmp_path)
    out = tmp_path / "encoder.pt"
    spec = _export(ckpt, out)
    assert spec["kind"] == kind and spec["name"] == "resnet18" and spec["in_chans"] == 1
    assert spec["small_stem"] is (kind == "timm")

    bare = build_bare_model(spec["kind"], spec["name"], in_chans=spec["in_chans"], small_stem=spec["small_stem"])
    bare.load_state_dict(torch.load(out), strict=True)
    _same_outputs(bare, model.encoder)
    if kind == "timm":
        # the plain timm model has a 7x7 stem: the sidecar is what makes the weights loadable
        with pytest.raises(RuntimeError, match="conv1"):
            timm.create_model("resnet18", num_classes=0, in_chans=1).load_state_dict(torch.load(out), strict=True)


def test_export_teacher_of_byol(tmp_path: Path) -> None:
    model = BYOL(
        TimmEncoder("test_resnet", in_chans=1, small_stem=True), proj_hidden_dim=32, proj_out_dim=16,
        pred_hidden_dim=32, tau_base=0.9,
    )
    ckpt = _train(model, tmp_path)
    teacher_out, student_out = tmp_path / "teacher.pt", tmp_path / "student.pt"
    spec = _export(ckpt, teacher_out, "--teacher")
    assert spec["teacher"] is True and spec["prefix"] == "teacher.encoder.model."
    _export(ckpt, student_out)

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    expected = {k[len("teacher.encoder.model."):]: v for k, v in state.items() if k.startswith("teacher.encoder.model.")}
    teacher = torch.load(teacher_out)
    assert teacher.keys() == expected.keys() and len(teacher) > 0
    for k in expected:
        assert torch.equal(teacher[k], expected[k]), k
    student = torch.load(student_out)
    assert student.keys() == teacher.keys()
    assert any(not torch.equal(student[k], teacher[k]) for k in teacher if teacher[k].is_floating_point()), (
        "after 2 EMA steps the teacher must differ from the student"
    )
    bare = build_bare_model(spec["kind"], spec["name"], in_chans=spec["in_chans"], small_stem=spec["small_stem"])
    bare.load_state_dict(teacher, strict=True)
    _same_outputs(bare, model.teacher["encoder"])


def test_export_teacher_of_simclr_is_a_clear_error(tmp_path: Path, capsys) -> None:
    model = SimCLR(TimmEncoder("test_resnet", in_chans=1, small_stem=True), proj_hidden_dim=32, proj_out_dim=16)
    ckpt = _train(model, tmp_path, steps=1)
    out = tmp_path / "teacher.pt"
    with pytest.raises(SystemExit) as exc:
        main(["export", "--ckpt", str(ckpt), "--out", str(out), "--teacher"])
    assert exc.value.code == 2
    assert re.search(r"no EMA teacher.*without --teacher", capsys.readouterr().err)
    assert not out.exists()
    with pytest.raises(ValueError, match=r"no EMA teacher.*without --teacher"):  # the Python API raises
        export_encoder(ckpt, out, teacher=True)


def test_export_missing_checkpoint(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--ckpt", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "e.pt")])
    assert exc.value.code == 2 and "Checkpoint not found" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        export_encoder(tmp_path / "nope.ckpt", tmp_path / "e.pt")


def test_export_requires_ckpt_and_out(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--out", "e.pt"])
    assert exc.value.code != 0
    assert "--ckpt" in capsys.readouterr().err
