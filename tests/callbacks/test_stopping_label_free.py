"""LabelFreeEarlyStopping: warm-up, patience, collapse guard, state; and Lightning's own EarlyStopping on
the real RankMe.

The scripted runs use a tiny LightningModule and a callback that logs a fixed ``rankme`` per epoch, so
when training must stop is known in advance.
"""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from lightning_ssl.callbacks import LabelFreeEarlyStopping, RankMe, RepresentationCollapseError
from rankme_helpers import RecordOutputs, ScriptedMetric, TinyModule, reference_rankme, tiny_trainer
from ssl_method_helpers import make_datamodule, make_method, make_trainer

DECREASING = [10.0 - i for i in range(10)]


def _run(tmp_path, values, es, max_epochs=10, extra=(), **kwargs):
    script = ScriptedMetric(values)
    trainer = tiny_trainer(tmp_path, [script, es, *extra], max_epochs=max_epochs, **kwargs)
    trainer.fit(TinyModule())
    return script.epochs, trainer


@pytest.mark.parametrize("warmup", [0, 3])
def test_warmup_defers_stopping(tmp_path, warmup):
    es = LabelFreeEarlyStopping(patience=0, warmup_epochs=warmup)
    epochs, trainer = _run(tmp_path, DECREASING, es)
    # epochs 0..warmup-1 are ignored; the first epoch after warm-up sets the best, the next one stops
    assert epochs == list(range(warmup + 2))
    assert trainer.should_stop and es.stopped_epoch == warmup + 1
    assert float(es.best_score) == DECREASING[warmup]
    assert es.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED


def test_warmup_values_do_not_count_as_best(tmp_path):
    # a high value during warm-up must not become the best: otherwise training would stop at epoch 2
    values = [9.0, 1.0, 2.0, 3.0, 2.5, 2.8, 2.9, 4.0, 4.0, 4.0]
    es = LabelFreeEarlyStopping(patience=2, warmup_epochs=1)
    epochs, _ = _run(tmp_path, values, es)
    assert epochs == [0, 1, 2, 3, 4, 5]
    assert es.stopped_epoch == 5 and float(es.best_score) == 3.0 and es.wait_count == 2


def test_patience_after_warmup_and_min_delta(tmp_path):
    values = [1.0, 2.0, 3.0, 5.0, 4.0, 5.05, 4.9, 6.0, 6.0, 6.0]
    es = LabelFreeEarlyStopping(patience=3, warmup_epochs=2, min_delta=0.1)
    epochs, _ = _run(tmp_path, values, es)
    # best 5.0 at epoch 3; 5.05 is not an improvement by min_delta; epochs 4, 5, 6 use up patience
    assert epochs == list(range(7)) and es.stopped_epoch == 6 and float(es.best_score) == 5.0
    # without warm-up and with patience left, the run goes to max_epochs
    es = LabelFreeEarlyStopping(patience=5)
    epochs, _ = _run(tmp_path, values, es)
    assert epochs == list(range(10)) and float(es.best_score) == 6.0


def test_collapse_stops_at_the_first_epoch_below_threshold_even_in_warmup(tmp_path):
    values = [5.0, 4.0, 1.2, 6.0, 7.0, 8.0, 9.0, 9.5, 9.7, 9.9]
    es = LabelFreeEarlyStopping(patience=100, warmup_epochs=5, collapse_threshold=1.5, on_collapse="stop")
    match = r"Representation collapse: rankme = 1\.2 at epoch 2 is below collapse_threshold=1\.5"
    with pytest.warns(UserWarning, match=match):
        epochs, trainer = _run(tmp_path, values, es)
    assert epochs == [0, 1, 2]
    assert es.collapsed_epoch == 2 and es.stopped_epoch == 2 and trainer.should_stop
    assert "Representation collapse" in es.stopping_reason_message
    assert es.stopping_reason != EarlyStoppingReason.NOT_STOPPED


def test_collapse_threshold_in_min_mode(tmp_path):
    es = LabelFreeEarlyStopping(monitor="rankme", mode="min", patience=100, collapse_threshold=5.0)
    with pytest.warns(UserWarning, match="above collapse_threshold=5.0"):
        epochs, _ = _run(tmp_path, [1.0, 2.0, 6.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], es)
    assert epochs == [0, 1, 2] and es.collapsed_epoch == 2


def test_no_collapse_guard_without_threshold(tmp_path):
    es = LabelFreeEarlyStopping(patience=100)
    epochs, _ = _run(tmp_path, [0.5] * 10, es)
    assert epochs == list(range(10)) and es.collapsed_epoch is None


def test_collapse_raise_keeps_earlier_checkpoints(tmp_path):
    values = [5.0, 6.0, 1.1, 7.0, 7.0]
    es = LabelFreeEarlyStopping(patience=100, collapse_threshold=1.5, on_collapse="raise")
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    with pytest.raises(RepresentationCollapseError, match=r"rankme = 1\.1 at epoch 2"):
        _run(tmp_path, values, es, max_epochs=5, extra=[ckpt], enable_checkpointing=True)
    assert es.collapsed_epoch == 2
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved == ["epoch=0.ckpt", "epoch=1.ckpt"]
    model = TinyModule.load_from_checkpoint(tmp_path / "ckpt" / "epoch=1.ckpt")
    assert isinstance(model, TinyModule)
    state = torch.load(tmp_path / "ckpt" / "epoch=1.ckpt", weights_only=False)
    assert state["epoch"] == 1
    assert state["callbacks"][es.state_key]["collapsed_epoch"] is None
    assert float(state["callbacks"][es.state_key]["best_score"]) == 6.0


def test_collapsed_epoch_survives_checkpoint_and_state_dict(tmp_path):
    es = LabelFreeEarlyStopping(patience=100, collapse_threshold=1.5)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0)
    with pytest.warns(UserWarning, match="Representation collapse"):
        _run(tmp_path, [5.0, 1.0, 5.0], es, max_epochs=3, extra=[ckpt], enable_checkpointing=True)
    assert es.collapsed_epoch == 1
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    saved = state["callbacks"][es.state_key]
    assert saved["collapsed_epoch"] == 1

    restored = LabelFreeEarlyStopping(patience=100, collapse_threshold=1.5)
    restored.load_state_dict(saved)
    assert restored.collapsed_epoch == 1
    assert restored.stopped_epoch == 1 and float(restored.best_score) == 5.0
    assert restored.stopping_reason == es.stopping_reason
    # loading does not consume the checkpoint's dict: a second callback gets the same state
    again = LabelFreeEarlyStopping(patience=100, collapse_threshold=1.5)
    again.load_state_dict(saved)
    assert again.collapsed_epoch == 1
    # a plain EarlyStopping state (no collapsed_epoch) loads too
    plain = EarlyStopping(monitor="rankme", mode="max").state_dict()
    restored.load_state_dict(plain)
    assert restored.collapsed_epoch is None


def test_resume_restores_collapsed_epoch(tmp_path):
    es = LabelFreeEarlyStopping(patience=100, collapse_threshold=1.5)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0)
    with pytest.warns(UserWarning, match="Representation collapse"):
        _run(tmp_path, [5.0, 1.0], es, max_epochs=2, extra=[ckpt], enable_checkpointing=True)
    resumed = LabelFreeEarlyStopping(patience=100, collapse_threshold=1.5)
    script = ScriptedMetric([5.0, 1.0, 5.0, 5.0])
    trainer = tiny_trainer(tmp_path, [script, resumed], max_epochs=4)
    trainer.fit(TinyModule(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.collapsed_epoch == 1 and script.epochs == [2, 3]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(warmup_epochs=-1), "warmup_epochs"),
        (dict(on_collapse="ignore"), "on_collapse"),
        (dict(collapse_threshold=float("nan")), "collapse_threshold"),
        (dict(patience=-1), "patience"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabelFreeEarlyStopping(**kwargs)


def test_missing_metric_is_an_error_when_strict(tmp_path):
    es = LabelFreeEarlyStopping(monitor="not_logged")
    with pytest.raises(RuntimeError, match="not_logged"):
        _run(tmp_path, DECREASING, es)


def test_warmup_does_not_hide_a_non_finite_metric(tmp_path):
    values = [5.0, float("nan"), 5.0, 5.0, 5.0]
    es = LabelFreeEarlyStopping(patience=100, warmup_epochs=4, collapse_threshold=1.5)
    epochs, _ = _run(tmp_path, values, es, max_epochs=5)
    assert epochs == [0, 1]
    assert es.stopping_reason == EarlyStoppingReason.NON_FINITE_METRIC


def _stop_epoch(values: list[float], patience: int, warmup: int = 0) -> int | None:
    """Lightning's EarlyStopping rule (mode max, min_delta 0) replayed on recorded values."""
    best, wait = -float("inf"), 0
    for epoch, v in enumerate(values):
        if epoch < warmup:
            continue
        if v > best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


@pytest.mark.parametrize("stopper", ["lightning", "label_free"])
def test_early_stopping_on_the_real_rankme(tmp_path, stopper):
    """Lightning's EarlyStopping (and LabelFreeEarlyStopping) monitor RankMe in a single-process run."""
    cb = RankMe(num_samples=32, keys="embeddings")
    rec = RecordOutputs(keys=("embeddings",))
    if stopper == "lightning":
        es = EarlyStopping(monitor="rankme", mode="max", patience=1)
    else:
        es = LabelFreeEarlyStopping(patience=1, warmup_epochs=1)
    trainer = make_trainer(max_steps=-1, max_epochs=4, limit_train_batches=1, limit_val_batches=2,
                           callbacks=[cb, rec, es])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(make_method("SimCLR", lr=0.05), datamodule=make_datamodule("SimCLR", batch_size=16))
    values = [rec.metric_at_epoch_end[e] for e in sorted(rec.metric_at_epoch_end)]
    assert len(values) >= 2
    for epoch, value in enumerate(values):
        assert value == pytest.approx(float(torch.tensor(_ref(rec, epoch)).float()), rel=1e-5)
    if stopper == "lightning":
        expected_stop = _stop_epoch(values, patience=1)
        assert float(es.best_score) == pytest.approx(max(values[: (expected_stop or 3) + 1]), rel=1e-6)
    else:
        expected_stop = _stop_epoch(values, patience=1, warmup=1)
        assert float(es.best_score) == pytest.approx(max(values[1 : (expected_stop or 3) + 1]), rel=1e-6)
    if expected_stop is None:
        assert len(values) == 4 and not trainer.should_stop
    else:
        assert len(values) == expected_stop + 1 and es.stopped_epoch == expected_stop


def _ref(rec: RecordOutputs, epoch: int) -> float:
    return reference_rankme(rec.val_rows(epoch)[:32])


def test_label_free_stopping_with_train_source_and_no_val_loop(tmp_path):
    """source='train' logs in on_train_epoch_end; listed after RankMe, the stopper sees the value every
    epoch (strict: a missing metric would raise)."""
    cb = RankMe(num_samples=32, source="train")
    es = LabelFreeEarlyStopping(patience=10, collapse_threshold=1e6)  # any value "collapses"
    trainer = make_trainer(max_steps=-1, max_epochs=3, limit_train_batches=2, limit_val_batches=0,
                           callbacks=[cb, es])
    with pytest.warns(UserWarning, match=r"Representation collapse: rankme = [\d.]+ at epoch 0"):
        trainer.fit(make_method("SimCLR"), datamodule=make_datamodule("SimCLR", batch_size=16))
    assert es.collapsed_epoch == 0 and trainer.current_epoch == 1
    assert float(trainer.callback_metrics["rankme"]) == pytest.approx(cb.last_value["embeddings"], rel=1e-6)


def test_is_an_early_stopping():
    es = LabelFreeEarlyStopping()
    assert isinstance(es, EarlyStopping) and isinstance(es, L.Callback)
    assert es.monitor == "rankme" and es.mode == "max" and es.patience == 10
