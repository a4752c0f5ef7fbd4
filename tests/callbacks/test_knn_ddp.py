"""OnlineKNN under DDP (2 gloo CPU processes): the gathered bank and the synchronised accuracy.

Both bank kinds are checked: ``train_batches`` (each rank's rolling bank of its training rows, gathered
in rank order) and ``clean`` (the labelled training loader's batches sharded round-robin over the ranks,
honouring ``limit_train_batches``). Validation shards have unequal sizes (12 and 8 rows); the logged
accuracy must be the single-process one on the whole validation set, on both ranks.
"""

from __future__ import annotations

import pytest
import torch

from lightning_ssl.callbacks import OnlineKNN
from lightning_ssl.evaluation import knn_classify
from probe_knn_ddp_driver import (
    CLEAN_LIMIT,
    KNN_K,
    SPLIT,
    CleanPassModule,
    clean_batches,
    clean_trainer,
    ddp_results,
    knn_bank_and_metrics,
    train_batches,
    val_batch,
)
from probe_knn_helpers import FakeModule, FakeTrainer, train_out

pytestmark = pytest.mark.ddp


def _check_metrics(ranks_metrics, single_metrics, bank, bank_y, prefix):
    vz, vy = val_batch()
    offline = knn_classify(bank, bank_y, vz, vy, k=KNN_K, temperature=0.07)["acc"]
    m0, m1 = ranks_metrics
    assert m0 == m1, "the ranks log different kNN metrics"
    assert set(m0) == {f"{prefix}/val_acc", f"{prefix}/val_balanced_acc"}
    assert m0[f"{prefix}/val_acc"] == pytest.approx(offline, abs=1e-6)
    for key, value in single_metrics.items():
        assert m0[key] == pytest.approx(value, abs=1e-6), key
    assert 0.0 < offline < 1.0  # neither trivial nor perfect: a wrong bank or vote would show


def test_train_batches_bank_is_the_concatenation_and_accuracy_matches_single_process():
    ranks = ddp_results()
    batches = train_batches()
    # rank order: rank 0's labelled rows of every batch, then rank 1's
    parts = [(z[:SPLIT], y[:SPLIT]) for z, y in batches] + [(z[SPLIT:], y[SPLIT:]) for z, y in batches]
    expected = torch.cat([z[y >= 0] for z, y in parts])
    expected_y = torch.cat([y[y >= 0] for z, y in parts])
    for rank in (0, 1):
        bank, bank_y, _ = ranks[rank]["knn_train_batches"]
        assert torch.equal(bank, expected), f"rank {rank}: gathered bank != concatenation"
        assert torch.equal(bank_y, expected_y)

    # one process fed the same rows in the same order logs the same values
    cb = OnlineKNN(bank="train_batches", k=KNN_K, bank_size=64)
    trainer = FakeTrainer()
    cb.setup(trainer, None, "fit")
    for i, (z, y) in enumerate(parts):
        cb.on_train_batch_end(trainer, FakeModule(), train_out(z, y), None, i)
    bank, bank_y, single = knn_bank_and_metrics(cb, trainer, FakeModule(), [val_batch()])
    assert torch.equal(bank, expected)
    _check_metrics([r["knn_train_batches"][2] for r in ranks], single, expected, expected_y, "knn")


def test_clean_bank_is_sharded_over_ranks_and_gathered():
    ranks = ddp_results()
    loader = clean_batches()
    # batches 0..CLEAN_LIMIT-1 only; rank r embeds the batches i with i % 2 == r
    assert ranks[0]["knn_clean"][3] == [0, 2] and ranks[1]["knn_clean"][3] == [1, 3]
    order = [0, 2, 1, 3]
    expected = torch.cat([loader[i]["z"] for i in order])
    expected_y = torch.cat([loader[i]["y"] for i in order])
    for rank in (0, 1):
        bank, bank_y, _ = ranks[rank]["knn_clean"][:3]
        assert torch.equal(bank, expected) and torch.equal(bank_y, expected_y), f"rank {rank}"

    cb = OnlineKNN(bank="clean", k=KNN_K, name="knn_clean")
    trainer = clean_trainer()
    cb.setup(trainer, None, "fit")
    module = CleanPassModule()
    bank, bank_y, single = knn_bank_and_metrics(cb, trainer, module, [val_batch()])
    assert module.steps == list(range(CLEAN_LIMIT))  # limit_train_batches honoured in one process too
    _check_metrics([r["knn_clean"][2] for r in ranks], single, bank, bank_y, "knn_clean")
