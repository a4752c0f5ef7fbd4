"""The online probes never change the SSL run: same seed, same data, with and without the callbacks.

The probe trains on detached embeddings with its own optimizer, and neither it nor the kNN bank pass
may draw from the global RNG (which drives the augmentations and the shuffling), so the method's
weights after training must be bitwise equal. Validation runs between the epochs, so the clean kNN
pass over ``labelled_train_dataloader`` happens in the middle of training.
"""

from __future__ import annotations

import lightning as L
import torch

from lightning_ssl.callbacks import OnlineKNN, OnlineLinearProbe
from probe_knn_helpers import RecordEpochMetrics
from ssl_method_helpers import ENCODER_OUT_DIM, make_datamodule, make_method, make_trainer


def _run(callbacks: list[L.Callback]):
    L.seed_everything(0, verbose=False)
    model = make_method("SimCLR")
    trainer = make_trainer(max_steps=-1, max_epochs=2, limit_train_batches=3, limit_val_batches=2,
                           deterministic=True, callbacks=callbacks)
    trainer.fit(model, datamodule=make_datamodule("SimCLR", batch_size=16))
    return model, trainer


def test_probe_and_knn_leave_the_method_bitwise_unchanged():
    plain, _ = _run([])
    probe = OnlineLinearProbe()
    mlp = OnlineLinearProbe(hidden_dim=16, name="mlp")
    record = RecordEpochMetrics()
    monitored, trainer = _run([probe, mlp, OnlineKNN(bank="clean", k=5),
                               OnlineKNN(bank="train_batches", k=5, name="knn_tb"), record])

    # the callbacks did their work (else the comparison below would be vacuous)
    assert trainer.global_step == 6
    assert set(record.per_epoch) == {0, 1}
    for name in ("probe/val_acc", "mlp/val_acc", "knn/val_acc", "knn_tb/val_acc"):
        assert name in record.per_epoch[0] and name in record.per_epoch[1], name

    # nothing was added to the module, and every parameter and buffer is bitwise the plain run's
    a, b = plain.state_dict(), monitored.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs when the probes are attached"

    # the probes themselves did learn: their weights moved away from the (seeded) initialisation
    for cb, hidden in ((probe, None), (mlp, 16)):
        init = OnlineLinearProbe(num_classes=2, hidden_dim=hidden, seed=cb.seed)
        init._build(ENCODER_OUT_DIM, torch.device("cpu"))
        trained = dict(cb.classifier.named_parameters())
        for name, p0 in init.classifier.named_parameters():
            assert trained[name].shape == p0.shape
            assert not torch.equal(trained[name].detach(), p0.detach()), f"{cb.name}: {name} never updated"
