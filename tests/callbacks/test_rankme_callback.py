"""The RankMe callback in real single-process Trainer runs on PneumoniaMNIST (tiny timm encoder).

Every logged value is checked against ``rankme`` computed by the test on the embeddings it recorded
itself from the same step outputs.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_ssl.callbacks import NonFiniteEmbeddingError, RankMe
from lightning_ssl.callbacks.rankme import rankme
from lightning_ssl.methods import SimCLR
from rankme_helpers import (
    FakeModule,
    FakeTrainer,
    RecordOutputs,
    TinySSLModule,
    drive_validation,
    reference_rankme,
    tiny_trainer,
)
from ssl_method_helpers import ENCODER_OUT_DIM, PROJ_DIM, make_datamodule, make_method, make_trainer


def _fit(callbacks, model=None, **trainer_kwargs):
    model = model or make_method("SimCLR")
    trainer = make_trainer(**{"max_epochs": 1, "max_steps": -1, "limit_train_batches": 2, "limit_val_batches": 3,
                              "callbacks": callbacks, **trainer_kwargs})
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=16))
    return trainer


def test_logged_value_is_rankme_of_the_first_num_samples_val_embeddings_both_keys():
    cb = RankMe(num_samples=40, keys="both")
    rec = RecordOutputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 40 < 96 dims: tested below
        trainer = _fit([cb, rec], max_epochs=2)

    for epoch in (0, 1):
        emb, proj = rec.val_rows(epoch, "embeddings"), rec.val_rows(epoch, "projections")
        assert emb.shape == (48, ENCODER_OUT_DIM) and proj.shape == (48, PROJ_DIM["SimCLR"])
        # the value of this epoch, as EarlyStopping/ModelCheckpoint see it at the end of the epoch
        assert rec.metric_at_epoch_end[epoch] == pytest.approx(reference_rankme(emb[:40]), rel=1e-5)
        # the cap matters: all 48 rows give another value
        assert abs(reference_rankme(emb[:40]) - reference_rankme(emb)) > 1e-3
    assert rec.metric_at_epoch_end[0] != rec.metric_at_epoch_end[1], "the model trained in between"
    last = rec.val_rows(1, "projections")[:40]
    assert float(trainer.callback_metrics["rankme/projections"]) == pytest.approx(reference_rankme(last), rel=1e-5)
    assert cb.last_value["projections"] == pytest.approx(reference_rankme(last), rel=1e-9)
    assert cb.last_value["embeddings"] == pytest.approx(reference_rankme(rec.val_rows(1)[:40]), rel=1e-9)
    assert set(trainer.callback_metrics) >= {"rankme", "rankme/projections"}


def test_source_train_without_val_loop_uses_the_last_num_samples_training_embeddings():
    cb = RankMe(num_samples=40, source="train")
    rec = RecordOutputs(keys=("embeddings",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _fit([cb, rec], limit_train_batches=4, limit_val_batches=0, max_epochs=2)
    assert not rec.val, "no validation loop ran"
    for epoch in (0, 1):
        rows = rec.train_rows(epoch)
        assert rows.shape[0] == 64
        # the bank holds the last 40 rows seen (in ring order: RankMe does not depend on row order)
        assert rec.metric_at_epoch_end[epoch] == pytest.approx(reference_rankme(rows[-40:]), rel=1e-5)
        assert abs(reference_rankme(rows[-40:]) - reference_rankme(rows[:40])) > 1e-4
    assert "rankme" in trainer.callback_metrics


def test_warns_when_fewer_samples_than_dimensions():
    with pytest.warns(UserWarning, match=r"40 validation samples for 96-dimensional 'embeddings'"):
        _fit([RankMe(num_samples=40)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=r"(?!RankMe)")  # other libraries' warnings
        # 48 samples >= 16 projection dims: no warning
        _fit([RankMe(num_samples=48, keys="projections")])


class OneRowValidation(SimCLR):
    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        return {**out, "embeddings": out["embeddings"][:1]}


def test_fewer_than_two_samples_is_skipped_with_a_warning():
    model = make_method("SimCLR", cls=OneRowValidation)
    rec = RecordOutputs(keys=("embeddings",))
    with pytest.warns(UserWarning, match=r"RankMe: 1 validation sample\(s\) for 'embeddings' at epoch 0"):
        trainer = _fit([RankMe(num_samples=100), rec], model=model, limit_val_batches=1)
    assert rec.val_rows(0).shape[0] == 1
    assert "rankme" not in trainer.callback_metrics


class NaNValidation(SimCLR):
    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        emb = out["embeddings"].clone()
        if self.current_epoch == 1:
            emb[3, 5] = float("nan")
        return {**out, "embeddings": emb}


def test_non_finite_embeddings_raise_with_epoch_and_key(tmp_path):
    model = make_method("SimCLR", cls=NaNValidation)
    with pytest.raises(NonFiniteEmbeddingError, match=r"validation 'embeddings' hold NaN or inf at epoch 1"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _fit([RankMe(num_samples=40)], model=model, max_epochs=3)
    assert issubclass(NonFiniteEmbeddingError, FloatingPointError)


def test_inf_in_training_bank_raises():
    cb = RankMe(num_samples=8, source="train")
    trainer, module = FakeTrainer(current_epoch=4), FakeModule()
    z = torch.randn(8, 3)
    z[0, 0] = float("inf")
    cb.on_train_batch_end(trainer, module, {"embeddings": z}, None, 0)
    with pytest.raises(NonFiniteEmbeddingError, match=r"training 'embeddings' hold NaN or inf at epoch 4"):
        cb.on_train_epoch_end(trainer, module)


def test_width_above_max_dim_raises():
    with pytest.raises(ValueError, match=rf"'embeddings' is {ENCODER_OUT_DIM} wide, above max_dim=50"):
        _fit([RankMe(num_samples=40, max_dim=50)])
    cb = RankMe(source="train", max_dim=8)
    with pytest.raises(ValueError, match="above max_dim=8"):
        cb.on_train_batch_end(FakeTrainer(), FakeModule(), {"embeddings": torch.randn(4, 9)}, None, 0)


def test_missing_key_is_a_clear_error():
    cb = RankMe(keys="projections")
    trainer, module = FakeTrainer(), FakeModule()
    cb.on_validation_epoch_start(trainer, module)
    with pytest.raises(KeyError, match="no 'projections'"):
        cb.on_validation_batch_end(trainer, module, {"embeddings": torch.randn(4, 3)}, None, 0)


def test_spectrum_is_written_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version=0)
    cb = RankMe(num_samples=48, keys="both", spectrum_every_n_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _fit([cb], logger=logger)
    logger.experiment.flush()
    acc = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    images = acc.Tags()["images"]
    assert "rankme/spectrum/embeddings" in images and "rankme/spectrum/projections" in images
    (event,) = acc.Images("rankme/spectrum/embeddings")
    assert (event.height, event.width) == (160, 320)
    assert event.encoded_image_string[:4] == b"\x89PNG"
    (scalar,) = acc.Scalars("rankme")
    assert scalar.value == pytest.approx(cb.last_value["embeddings"], rel=1e-6)


class _ImageSink:
    def __init__(self) -> None:
        self.images: list[tuple[str, torch.Tensor, int]] = []

    def add_image(self, tag, img, step):
        self.images.append((tag, img, step))


class _FakeLogger:
    def __init__(self) -> None:
        self.experiment = _ImageSink()


def test_every_n_epochs_and_spectrum_interval():
    cb = RankMe(num_samples=16, every_n_epochs=2)
    module = FakeModule()
    z = torch.randn(16, 4)
    for epoch in range(4):
        drive_validation(cb, FakeTrainer(current_epoch=epoch), module, [{"embeddings": z}])
    assert module.values("rankme") == pytest.approx([reference_rankme(z)] * 2, rel=1e-6)  # epochs 1 and 3

    # spectrum every 3 epochs, RankMe every epoch: images at epochs 2 and 5, from rank 0 only
    cb = RankMe(num_samples=16, spectrum_every_n_epochs=3)
    loggers = {rank: _FakeLogger() for rank in (0, 1)}
    for epoch in range(6):
        for rank in (0, 1):
            trainer = FakeTrainer(current_epoch=epoch, global_rank=rank)
            trainer.global_step = 10 * epoch
            trainer.loggers = [loggers[rank]]
            drive_validation(cb, trainer, FakeModule(), [{"embeddings": z}])
    images = loggers[0].experiment.images
    tag = "rankme/spectrum/embeddings"
    assert [(t, step) for t, _, step in images] == [(tag, 20), (tag, 50)]
    assert images[0][1].shape == (3, 160, 320)
    assert loggers[1].experiment.images == []


def test_sanity_check_is_ignored():
    cb = RankMe(num_samples=16)
    trainer, module = FakeTrainer(), FakeModule()
    trainer.sanity_checking = True
    drive_validation(cb, trainer, module, [{"embeddings": torch.randn(16, 4)}])
    assert module.logged == []


def test_num_samples_cap_across_batches_and_state_round_trip():
    """Validation: the first num_samples rows over batches. Train source: the bank survives state_dict."""
    cb = RankMe(num_samples=10)
    module = FakeModule()
    batches = [torch.randn(4, 6) for _ in range(4)]
    drive_validation(cb, FakeTrainer(), module, [{"embeddings": b} for b in batches])
    assert module.values("rankme")[0] == pytest.approx(reference_rankme(torch.cat(batches)[:10]), rel=1e-6)
    kwargs = module.logged[0][2]
    assert kwargs["on_epoch"] and not kwargs["on_step"] and kwargs["sync_dist"]

    cb = RankMe(num_samples=10, source="train")
    for b in batches:
        cb.on_train_batch_end(FakeTrainer(), module, {"embeddings": b}, None, 0)
    restored = RankMe(num_samples=10, source="train")
    restored.load_state_dict(cb.state_dict())
    m1, m2 = FakeModule(), FakeModule()
    cb.on_train_epoch_end(FakeTrainer(), m1)
    restored.on_train_epoch_end(FakeTrainer(), m2)
    expected = reference_rankme(torch.cat(batches)[-10:])
    assert m1.values("rankme") == pytest.approx([expected], rel=1e-6)
    assert m2.values("rankme") == pytest.approx([expected], rel=1e-6)
    assert cb.last_value["embeddings"] == pytest.approx(expected, rel=1e-9)
    assert math.isclose(float(rankme(torch.cat(batches)[-10:])), expected, rel_tol=1e-12)


def test_a_reused_callback_measures_every_epoch_of_a_new_fit(tmp_path):
    """A RankMe instance passed to a second, fresh Trainer (a sweep loop, a notebook) must measure that
    fit's epoch 0 from that fit's model, not skip it because it measured epoch 0 of the previous fit."""
    cb = RankMe(num_samples=8, source="train")
    for run in range(2):
        rec = RecordOutputs(keys=("embeddings",))
        trainer = tiny_trainer(tmp_path, [cb, rec], max_epochs=1, limit_train_batches=2, limit_val_batches=0)
        trainer.fit(TinySSLModule())
        rows = rec.train_rows(0)
        assert rows.shape == (8, 4)
        assert "rankme" in trainer.callback_metrics, f"fit {run}: epoch 0 was not measured"
        assert cb.last_value["embeddings"] == pytest.approx(reference_rankme(rows), rel=1e-9)
