"""Bad input to OnlineLinearProbe / OnlineKNN stops the run early with a message that says what to fix."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from lightning_ssl.callbacks import MissingLabelsError, NonFiniteEmbeddingError, OnlineKNN, OnlineLinearProbe
from lightning_ssl.data import ImageDataModule
from probe_knn_helpers import FakeModule, FakeTrainer, clustered, train_out, val_out
from ssl_method_helpers import MEDMNIST_ROOT, make_datamodule, make_method, make_trainer


# ---------------------------------------------------------------------------------------- real runs
class UnlabelledPneumonia(ImageDataModule):
    """PneumoniaMNIST whose batches lose their labels (a custom collate that forgot SSLBatch.target)."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        batch.target = None
        return batch


class CountingProbe(OnlineLinearProbe):
    calls = 0

    def on_train_batch_end(self, *args, **kwargs):
        self.calls += 1
        return super().on_train_batch_end(*args, **kwargs)


class Started(L.Callback):
    started = False

    def on_train_start(self, trainer, pl_module):
        self.started = True


def test_unlabelled_training_batches_raise_once_at_the_first_batch():
    probe = CountingProbe(num_classes=2)
    trainer = make_trainer(max_steps=5, num_sanity_val_steps=0, callbacks=[probe])
    dm = UnlabelledPneumonia("pneumoniamnist", root=str(MEDMNIST_ROOT), num_workers=0, batch_size=16)
    with pytest.raises(MissingLabelsError, match=r"training batches carry no labels \(SSLBatch\.target is None\)"):
        trainer.fit(make_method("SimCLR"), datamodule=dm)
    assert probe.calls == 1 and trainer.global_step == 1  # stopped at the first batch
    assert issubclass(MissingLabelsError, ValueError)


@pytest.mark.parametrize("callback", [OnlineLinearProbe(num_classes=3), OnlineKNN(num_classes=3)],
                         ids=["probe", "knn"])
def test_num_classes_disagreeing_with_the_datamodule_fails_in_setup(callback):
    started = Started()
    trainer = make_trainer(max_steps=2, callbacks=[callback, started])
    with pytest.raises(ValueError, match=r"num_classes=3 but the datamodule's ImageDataModule has 2 classes"):
        trainer.fit(make_method("SimCLR"), datamodule=make_datamodule("SimCLR", batch_size=16))
    assert not started.started and trainer.global_step == 0


# ---------------------------------------------------------------------------------------- hooks by hand
def _probe_after_one_step(**kwargs) -> tuple[OnlineLinearProbe, FakeTrainer, FakeModule]:
    trainer, module = FakeTrainer(), FakeModule()
    probe = OnlineLinearProbe(**kwargs)
    probe.setup(trainer, module, "fit")
    probe.on_train_batch_end(trainer, module, train_out(*clustered(8)), None, 0)
    return probe, trainer, module


def _knn_with_bank(**kwargs) -> tuple[OnlineKNN, FakeTrainer, FakeModule]:
    trainer, module = FakeTrainer(), FakeModule()
    knn = OnlineKNN(bank="train_batches", k=3, **kwargs)
    knn.setup(trainer, module, "fit")
    knn.on_train_batch_end(trainer, module, train_out(*clustered(8)), None, 0)
    return knn, trainer, module


def test_unlabelled_validation_batches_raise():
    z, _ = clustered(4)
    probe, trainer, module = _probe_after_one_step()
    probe.on_validation_epoch_start(trainer, module)
    with pytest.raises(MissingLabelsError, match=r"OnlineLinearProbe: validation batches .*SSLBatch\.target"):
        probe.on_validation_batch_end(trainer, module, val_out(z, None), None, 0)

    knn, trainer, module = _knn_with_bank()
    knn.on_validation_epoch_start(trainer, module)
    with pytest.raises(MissingLabelsError, match=r"OnlineKNN: validation batches .*SSLBatch\.target"):
        knn.on_validation_batch_end(trainer, module, val_out(z, None), None, 0)

    knn = OnlineKNN(bank="train_batches")
    knn.setup(trainer, module, "fit")
    with pytest.raises(MissingLabelsError, match=r"OnlineKNN: training batches"):
        knn.on_train_batch_end(trainer, module, train_out(z, None), None, 0)


def test_labels_outside_num_classes_raise():
    z, y = clustered(8)
    y = y.clone()
    y[2] = 3  # num_classes is 3: labels are 0..2
    trainer, module = FakeTrainer(), FakeModule()
    probe = OnlineLinearProbe()
    probe.setup(trainer, module, "fit")
    with pytest.raises(ValueError, match=r"label 3 does not fit num_classes=3"):
        probe.on_train_batch_end(trainer, module, train_out(z, y), None, 0)

    probe, trainer, module = _probe_after_one_step()
    probe.on_validation_epoch_start(trainer, module)
    with pytest.raises(ValueError, match=r"label 3 does not fit num_classes=3"):
        probe.on_validation_batch_end(trainer, module, val_out(z, y), None, 0)

    knn, trainer, module = _knn_with_bank()
    with pytest.raises(ValueError, match=r"label 3 does not fit num_classes=3"):
        knn.on_train_batch_end(trainer, module, train_out(z, y), None, 1)
    knn.on_validation_epoch_start(trainer, module)
    with pytest.raises(ValueError, match=r"label 3 does not fit num_classes=3"):
        knn.on_validation_batch_end(trainer, module, val_out(z, y), None, 0)


def test_multi_label_targets_raise_and_column_labels_are_accepted():
    z, y = clustered(8)
    multi = torch.zeros(8, 3, dtype=torch.long)
    multi[:, 0] = 1
    trainer, module = FakeTrainer(), FakeModule()
    probe = OnlineLinearProbe()
    probe.setup(trainer, module, "fit")
    with pytest.raises(ValueError, match=r"targets of shape \(8, 3\) are multi-label"):
        probe.on_train_batch_end(trainer, module, train_out(z, multi), None, 0)
    knn, trainer, module = _knn_with_bank()
    with pytest.raises(ValueError, match="multi-label"):
        knn.on_train_batch_end(trainer, module, train_out(z, multi), None, 1)
    # [N, 1] labels (MedMNIST's layout) are single-label
    probe.on_train_batch_end(trainer, module, train_out(z, y[:, None]), None, 0)
    assert probe.classifier is not None


def test_non_finite_validation_embeddings_name_epoch_and_key():
    z, y = clustered(6)
    z = z.clone()
    z[4, 2] = float("nan")
    probe, trainer, module = _probe_after_one_step()
    trainer.current_epoch = 4
    probe.on_validation_epoch_start(trainer, module)
    with pytest.raises(NonFiniteEmbeddingError, match=r"validation 'embeddings' hold NaN or inf at epoch 4"):
        probe.on_validation_batch_end(trainer, module, val_out(z, y), None, 0)
    assert issubclass(NonFiniteEmbeddingError, FloatingPointError)

    trainer, module = FakeTrainer(current_epoch=7), FakeModule()
    knn = OnlineKNN(bank="train_batches", key="projections", k=3)
    knn.setup(trainer, module, "fit")
    knn.on_train_batch_end(trainer, module, train_out(*clustered(8)), None, 0)
    knn.on_validation_epoch_start(trainer, module)
    with pytest.raises(NonFiniteEmbeddingError, match=r"validation 'projections' hold NaN or inf at epoch 7"):
        knn.on_validation_batch_end(trainer, module, val_out(z, y), None, 0)
    # a diverged training bank is caught before any vote
    knn = OnlineKNN(bank="train_batches", k=3)
    knn.setup(trainer, module, "fit")
    knn.on_train_batch_end(trainer, module, train_out(z, y), None, 0)
    with pytest.raises(NonFiniteEmbeddingError, match=r"training-bank 'embeddings' .* at epoch 7"):
        knn.on_validation_epoch_start(trainer, module)


def test_clean_bank_needs_labelled_train_dataloader():
    class BareDataModule(L.LightningDataModule):
        num_classes = 2

    knn = OnlineKNN(bank="clean")
    with pytest.raises(ValueError, match=r"labelled_train_dataloader\(\)`, which BareDataModule provides.*"
                                         r"OnlineKNN\(bank='train_batches'\)"):
        knn.setup(FakeTrainer(datamodule=BareDataModule()), FakeModule(), "fit")
    with pytest.raises(ValueError, match="num_classes is not set"):
        OnlineKNN(bank="clean").setup(FakeTrainer(datamodule=None), FakeModule(), "fit")
    with pytest.raises(ValueError, match="no datamodule provides"):
        OnlineKNN(bank="clean", num_classes=2).setup(FakeTrainer(datamodule=None), FakeModule(), "fit")
    # the rolling bank has no such need
    OnlineKNN(bank="train_batches").setup(FakeTrainer(datamodule=BareDataModule()), FakeModule(), "fit")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: OnlineLinearProbe(label_fraction=0.0), r"label_fraction must be in \(0, 1\], got 0.0"),
        (lambda: OnlineLinearProbe(label_fraction=1.5), r"label_fraction must be in \(0, 1\]"),
        (lambda: OnlineLinearProbe(optimizer="adam"), r"optimizer must be 'adamw' or 'sgd', got 'adam'"),
        (lambda: OnlineKNN(bank="x"), r"bank must be 'clean' or 'train_batches', got 'x'"),
        (lambda: OnlineKNN(k=0), r"need k >= 1 .* got k=0"),
        (lambda: OnlineKNN(temperature=0.0), r"temperature > 0"),
        (lambda: OnlineKNN(bank_size=0), r"bank_size >= 1"),
        (lambda: OnlineKNN(every_n_epochs=0), r"every_n_epochs >= 1"),
    ],
)
def test_invalid_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_num_classes_unknown_or_too_small_and_missing_step_key():
    with pytest.raises(ValueError, match="num_classes is not set and the datamodule gives none"):
        OnlineLinearProbe().setup(FakeTrainer(datamodule=SimpleNamespace()), FakeModule(), "fit")
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        OnlineLinearProbe(num_classes=1).setup(FakeTrainer(datamodule=None), FakeModule(), "fit")
    probe = OnlineLinearProbe(key="projections")
    probe.setup(FakeTrainer(), FakeModule(), "fit")
    with pytest.raises(KeyError, match="has no 'projections'"):
        probe.on_train_batch_end(FakeTrainer(), FakeModule(), {"loss": 0, "embeddings": torch.zeros(2, 3)}, None, 0)
