"""MYOW: k-NN view mining against a brute force, the official mining-weight schedule, the EMA teacher with the
second projector, Lightning training on real data, the config, and clear errors (the global candidate pool under
DDP: test_method_myow_ddp.py)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.losses import byol_loss
from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.myow import MYOW, mine_views, myow_weight
from ssl_method_helpers import ENCODER_OUT_DIM, MEDMNIST_ROOT, REPO_ROOT, clone_params, make_datamodule, make_trainer, tiny_encoder

CONFIG = REPO_ROOT / "configs" / "image" / "myow_pneumoniamnist.yaml"
TINY = dict(proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=32, proj_m_hidden_dim=16, proj_m_out_dim=8,
            pred_m_hidden_dim=16)


def tiny_myow(**kw) -> MYOW:
    return MYOW(tiny_encoder(), **{**TINY, "myow_warmup_epochs": 0.0, "myow_rampup_epochs": 0.0, **kw})


def brute_force_knn(query: torch.Tensor, pool: torch.Tensor, k: int, self_index: list[int]) -> list[list[int]]:
    """The k nearest pool rows of every query row under 2 - 2 cos, the sample itself excluded, by loops."""
    out = []
    for i, q in enumerate(query):
        d = [(2 - 2 * F.cosine_similarity(q, p, dim=0).item(), j) for j, p in enumerate(pool) if j != self_index[i]]
        out.append([j for _, j in sorted(d)[:k]])
    return out


def test_mined_index_is_the_true_nearest_neighbour_excluding_self():
    g = torch.Generator().manual_seed(0)
    query, pool = torch.randn(6, 5, generator=g), torch.randn(20, 5, generator=g)
    self_index = [3, 7, 0, 19, 11, 5]
    pool[self_index] = query * 2.0  # each sample's own row is its exact nearest neighbour: must be skipped
    mined = mine_views(query, pool, 1, torch.tensor(self_index))
    assert mined.tolist() == [row[0] for row in brute_force_knn(query, pool, 1, self_index)]
    # k = 3: always one of the 3 true neighbours, each of them drawn (uniformly at random)
    top3 = brute_force_knn(query, pool, 3, self_index)
    draws = torch.stack([mine_views(query, pool, 3, torch.tensor(self_index)) for _ in range(200)])
    for i in range(6):
        assert set(draws[:, i].tolist()) == set(top3[i])
    # without self_index the sample itself is the nearest
    assert mine_views(query, pool, 1).tolist() == self_index


def test_method_mines_target_representations_of_the_other_samples():
    method = tiny_myow(miner_k=1)
    x = torch.randn(8, 1, 28, 28)
    views = [x, x + 0.05 * torch.randn_like(x)]  # each sample's own candidate is its nearest: it must be skipped
    views[1][5] = x[2] + 0.05 * torch.randn_like(x[2])  # sample 2's nearest other candidate is sample 5
    h = method.encode_views(views)
    z = [method.project(x) for x in h]
    torch.manual_seed(0)
    parts = method.compute_loss(ViewOutputs(embeddings=h, projections=z, batch=SSLBatch(views=views)))
    with torch.no_grad():
        y = method.teacher["encoder"](torch.cat(views))[8:]  # both views in one pass, as in training (BatchNorm)
        v = method.teacher["projector_m"](method.teacher["projector"](y))
        idx = [row[0] for row in brute_force_knn(h[0].detach(), y, 1, list(range(8)))]
    assert idx[2] == 5
    expected = byol_loss(method.predictor_m(method.projector_m(z[0])), v[idx])
    assert torch.allclose(parts["myow"], expected, atol=1e-6)
    assert float(parts["myow_weight"]) == 1.0
    assert torch.allclose(parts["loss"], (parts["byol"] + 2 * parts["myow"]) / 2)


def test_schedule_weight_at_its_boundaries():
    # official CIFAR-10 values: 0 until epoch 100, linear ramp, max 1.0 from epoch 110
    assert myow_weight(0, 100, 110, 1.0) == 0.0
    assert myow_weight(99.99, 100, 110, 1.0) == 0.0
    assert myow_weight(100, 100, 110, 1.0) == 0.0
    assert myow_weight(105, 100, 110, 1.0) == pytest.approx(0.5)
    assert myow_weight(110, 100, 110, 1.0) == 1.0
    assert myow_weight(800, 100, 110, 1.0) == 1.0
    # neural data: ramp end 110 from warm-up 10, maximum 0.1
    assert myow_weight(60, 10, 110, 0.1) == pytest.approx(0.05)
    assert myow_weight(5, 5, 5, 0.3) == 0.3  # no ramp: a step


class RecordWeight(Callback):
    def __init__(self) -> None:
        self.weights: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.weights.append(pl_module.mining_weight())


def test_trains_with_lightning_and_returns_the_contract():
    method = tiny_myow(myow_warmup_epochs=0.25, myow_rampup_epochs=0.75)
    record = RecordWeight()
    before = clone_params(method.teacher["projector_m"])
    trainer = make_trainer(max_steps=3, limit_train_batches=4, callbacks=[record])
    trainer.fit(method, datamodule=make_datamodule("BYOL", batch_size=16))
    assert trainer.global_step == 3
    assert record.weights == pytest.approx([0.0, 0.0, 0.5])  # 4 steps per epoch: epochs 0, 0.25, 0.5
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/byol", "train/myow", "train/myow_weight"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert float(metrics["train/myow_weight"]) == 0.5
    # the EMA moved the teacher's second projector
    after = clone_params(method.teacher["projector_m"])
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_step_output_contract():
    method = tiny_myow()
    outputs = []

    class Capture(Callback):
        def on_train_batch_end(self, trainer, pl_module, out, batch, batch_idx):
            outputs.append((out, batch))

    make_trainer(max_steps=2, limit_val_batches=0, callbacks=[Capture()]).fit(method, datamodule=make_datamodule("BYOL"))
    for out, batch in outputs:
        assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
        assert out["embeddings"].shape == (16, ENCODER_OUT_DIM) and out["embeddings"].grad_fn is None
        assert out["projections"].shape == (16, 16) and torch.equal(out["target"], batch.target)


def test_ema_teacher_holds_the_second_projector():
    method = tiny_myow()
    assert set(method.teacher) == {"encoder", "projector", "projector_m"}  # no predictor in the teacher
    assert all(not p.requires_grad for p in method.teacher.parameters())
    student, teacher = method.projector_m, method.teacher["projector_m"]
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))
    old = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    method.tau = 0.75
    method.update_teacher()
    for t, o, s in zip(teacher.parameters(), old, student.parameters()):
        assert torch.allclose(t, 0.75 * o + 0.25 * s)
    assert any(k.startswith("teacher.projector_m.") for k in method.state_dict())


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="miner_k"):
        tiny_myow(miner_k=0)
    with pytest.raises(ValueError, match="myow_rampup_epochs"):
        tiny_myow(myow_warmup_epochs=10.0, myow_rampup_epochs=5.0)
    with pytest.raises(ValueError, match="miner_k=8 needs 1 <= k <= 7"):
        mine_views(torch.randn(8, 4), torch.randn(8, 4), 8, torch.arange(8))


def test_config_constructs_and_trains_a_step_on_real_data(tmp_path, monkeypatch):
    from lightning_ssl.cli import SSLCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])
    root = ["--data.init_args.root", str(MEDMNIST_ROOT), "--data.init_args.num_workers", "0"]
    cli = SSLCLI(args=["--config", str(CONFIG), *root], run=False)
    model, hp = cli.model, cli.model.hparams
    assert isinstance(model, MYOW) and set(model.teacher) == {"encoder", "projector", "projector_m"}
    assert (hp.miner_k, hp.myow_warmup_epochs, hp.myow_rampup_epochs, hp.myow_max_weight) == (1, 12.5, 13.75, 1.0)
    assert cli.datamodule.hparams.recipe == "byol"
    cli = SSLCLI(args=["fit", "--config", str(CONFIG), *root, "--data.init_args.batch_size", "4",
                       "--model.init_args.encoder.init_args.name", "test_resnet", "--trainer.fast_dev_run=true",
                       "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                       "--trainer.enable_model_summary", "false"])
    assert cli.trainer.global_step == 1 and torch.isfinite(cli.trainer.callback_metrics["train/myow"])
