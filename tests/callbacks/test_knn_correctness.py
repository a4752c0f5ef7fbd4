"""OnlineKNN: the logged accuracy is the offline kNN classifier's, the clean bank honours the batch limit
and samples a class-sorted dataset evenly, and the rolling train bank keeps the last ``bank_size`` rows."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from lightning_ssl.callbacks import OnlineKNN
from lightning_ssl.data.image import collate_views
from lightning_ssl.evaluation import knn_classify
from lightning_ssl.evaluation.knn import knn_predict
from probe_knn_ddp_driver import CleanPassModule, clean_trainer
from probe_knn_helpers import FakeModule, FakeTrainer, RecordEpochMetrics, SpyKNN, clustered, train_out, val_out
from ssl_method_helpers import make_datamodule, make_method, make_trainer

K = 5
VAL_BATCHES = 2


class SpyOnlineKNN(SpyKNN, OnlineKNN):
    pass


@torch.no_grad()
def _features(model, batches):
    z, y = [], []
    for i, batch in enumerate(batches):
        out = model.validation_step(batch, i)
        z.append(out["embeddings"])
        y.append(out["target"].reshape(-1))
    return torch.cat(z), torch.cat(y)


@pytest.mark.parametrize("limit, expected_batches", [(3, 3), (0.01, 2)])
def test_clean_bank_accuracy_equals_offline_knn_classify(limit, expected_batches):
    knn = SpyOnlineKNN(bank="clean", k=K)
    record = RecordEpochMetrics()
    model = make_method("SimCLR")
    dm = make_datamodule("SimCLR", batch_size=16)
    trainer = make_trainer(max_steps=-1, max_epochs=1, limit_train_batches=limit, limit_val_batches=VAL_BATCHES,
                           callbacks=[knn, record])
    trainer.fit(model, datamodule=dm)
    logged = record.per_epoch[0]

    # offline: the same model on the evenly spaced rows the limit allows (0.01 of 295 batches: 2 batches)
    full = dm.labelled_train_dataloader()
    assert len(full) == 295  # PneumoniaMNIST train: 4708 images
    n = len(full.dataset)
    rows = expected_batches * 16
    index = (torch.arange(rows) * n // rows).tolist()
    model.eval()
    bank, bank_y = _features(model, DataLoader(Subset(full.dataset, index), batch_size=16, collate_fn=collate_views))
    val = [b for i, b in zip(range(VAL_BATCHES), dm.val_dataloader())]
    vz, vy = _features(model, val)

    used, used_y = knn.banks[0]
    assert used.shape == (rows, 96)  # honours limit_train_batches
    torch.testing.assert_close(used, bank, rtol=0, atol=1e-6)
    assert torch.equal(used_y, bank_y)
    # PneumoniaMNIST's train split is stored sorted by class: the first batches alone hold one class
    assert bank_y.unique().tolist() == [0, 1]

    offline = knn_classify(bank, bank_y, vz, vy, k=K, temperature=0.07)
    assert offline["n_train"] == rows and offline["n_test"] == 16 * VAL_BATCHES
    assert logged["knn/val_acc"] == pytest.approx(offline["acc"], abs=1e-6)
    pred = knn_predict(bank, bank_y, vz, 2, k=K, temperature=0.07)
    balanced = sum((pred[vy == c] == c).float().mean().item() for c in (0, 1)) / 2
    assert logged["knn/val_balanced_acc"] == pytest.approx(balanced, abs=1e-6)


def _knn(**kwargs) -> tuple[OnlineKNN, FakeTrainer, FakeModule]:
    trainer, module = FakeTrainer(), FakeModule()
    knn = OnlineKNN(bank="train_batches", k=3, **kwargs)
    knn.setup(trainer, module, "fit")
    return knn, trainer, module


def _sorted_rows(z: torch.Tensor) -> torch.Tensor:
    return z[z[:, 0].argsort()]


def test_train_batches_bank_is_a_ring_buffer_of_the_last_labelled_rows():
    z, y = clustered(20, seed=4)
    y = y.clone()
    y[13] = -1  # unlabelled rows never enter the bank
    knn, trainer, module = _knn(bank_size=10)
    for i, rows in enumerate((slice(0, 6), slice(6, 12), slice(12, 20))):
        knn.on_train_batch_end(trainer, module, train_out(z[rows], y[rows]), None, i)
    labelled = torch.arange(20)[y >= 0]
    last = labelled[-10:]
    rows, labels = knn._train_bank.filled()
    assert rows.shape == (10, 8)
    assert torch.equal(_sorted_rows(rows), _sorted_rows(z[last]))
    assert torch.equal(labels[rows[:, 0].argsort()], y[last][z[last][:, 0].argsort()])
    # the bank used for the votes is the same rows
    knn.on_validation_epoch_start(trainer, module)
    assert torch.equal(_sorted_rows(knn._bank[0]), _sorted_rows(z[last]))

    # one batch larger than the bank keeps its own last rows
    knn, trainer, module = _knn(bank_size=4)
    knn.on_train_batch_end(trainer, module, train_out(z[:9], y[:9].clamp_min(0)), None, 0)
    assert torch.equal(_sorted_rows(knn._train_bank.filled()[0]), _sorted_rows(z[5:9]))


def test_train_bank_state_round_trip_continues_like_the_uninterrupted_bank():
    z, y = clustered(30, seed=6)
    full, trainer, module = _knn(bank_size=12)
    for i in range(3):
        full.on_train_batch_end(trainer, module, train_out(z[5 * i : 5 * i + 5], y[5 * i : 5 * i + 5]), None, i)
    state = full.state_dict()
    restored, _, _ = _knn(bank_size=12)
    restored.load_state_dict(state)
    fresh, _, _ = _knn(bank_size=12)
    for cb in (full, restored, fresh):
        for i in range(3, 5):  # wraps around the ring
            cb.on_train_batch_end(trainer, module, train_out(z[5 * i : 5 * i + 5], y[5 * i : 5 * i + 5]), None, i)
    assert torch.equal(restored._train_bank.filled()[0], full._train_bank.filled()[0])
    assert torch.equal(restored._train_bank.filled()[1], full._train_bank.filled()[1])
    assert fresh._train_bank.filled()[0].shape[0] == 10  # without the state only the new rows


def test_knn_evaluates_only_when_due_and_outside_the_sanity_check():
    z, y = clustered(12, seed=8)
    knn, trainer, module = _knn(every_n_epochs=2)
    knn.on_train_batch_end(trainer, module, train_out(z, y), None, 0)
    vz, vy = clustered(6, seed=9)

    def epoch(epoch: int, sanity: bool = False) -> dict:
        trainer.current_epoch, trainer.sanity_checking = epoch, sanity
        module.logged.clear()
        knn.on_validation_epoch_start(trainer, module)
        knn.on_validation_batch_end(trainer, module, val_out(vz, vy), None, 0)
        knn.on_validation_epoch_end(trainer, module)
        return dict(module.logged)

    assert epoch(1, sanity=True) == {}
    assert epoch(0) == {}
    logged = epoch(1)
    expected = knn_classify(z, y, vz, vy, k=3)["acc"]
    assert set(logged) == {"knn/val_acc", "knn/val_balanced_acc"}
    assert logged["knn/val_acc"].item() == pytest.approx(expected, abs=1e-6)


def test_clean_pass_restores_training_mode_and_leaves_the_global_rng_alone():
    z, y = clustered(30, seed=12)
    loader = DataLoader([{"z": z[i], "y": y[i]} for i in range(30)], batch_size=6)  # iterating draws a seed
    trainer = clean_trainer()
    trainer.datamodule.labelled_train_dataloader = lambda: loader
    trainer.limit_train_batches = 2  # 12 of 30 rows: every 30 // 12-th, evenly spaced
    knn = OnlineKNN(bank="clean", k=3)
    knn.setup(trainer, None, "fit")
    module = CleanPassModule()
    state = torch.get_rng_state()
    knn.on_validation_epoch_start(trainer, module)
    assert module.training, "the clean pass left the module in eval mode"
    assert torch.equal(torch.get_rng_state(), state), "the clean pass drew from the global RNG"
    index = torch.arange(12) * 30 // 12
    assert torch.equal(knn._bank[0], z[index]) and torch.equal(knn._bank[1], y[index])
