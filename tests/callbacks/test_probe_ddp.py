"""OnlineLinearProbe under DDP (2 gloo CPU processes): one step equals one process on the whole batch.

Each rank holds half of a fixed batch, with *different* numbers of labelled rows (target -1 marks an
unlabelled row; in one step rank 1 has none at all). Gradients, summed losses and labelled-row counts
are all-reduced and divided by the global count, so the probe must equal a single-process probe stepped
on the concatenated batch and be identical on both ranks. Averaging per-rank mean gradients (what DDP's
gradient averaging would do) gives another step whenever the counts differ, so these comparisons fail
for that bug. Validation metrics are synchronised (torchmetrics), and the validation loss is weighted
by count across shards of unequal size (12 and 8 rows).
"""

from __future__ import annotations

import pytest
import torch

from lightning_ssl.callbacks import OnlineLinearProbe
from probe_knn_ddp_driver import PROBE_CONFIGS, SPLIT, ddp_results, step_and_validate, train_batches, val_batch
from probe_knn_helpers import FakeModule, FakeTrainer

pytestmark = pytest.mark.ddp


@pytest.mark.parametrize("name", list(PROBE_CONFIGS))
def test_probe_steps_and_metrics_equal_single_process_on_the_whole_batch(name):
    ranks = ddp_results()
    cb = OnlineLinearProbe(name=name, **PROBE_CONFIGS[name])
    trainer = FakeTrainer()
    cb.setup(trainer, None, "fit")
    ref_params, ref_losses, ref_val = step_and_validate(cb, trainer, FakeModule(), train_batches(), [val_batch()])

    (p0, l0, v0), (p1, l1, v1) = ranks[0]["probe"][name], ranks[1]["probe"][name]
    for step, ref in enumerate(ref_params):
        for a, b, r in zip(p0[step], p1[step], ref):
            assert torch.equal(a, b), f"{name}: the ranks' probes differ after step {step}"
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"{name} step {step}: DDP != single process\n{m}")
    assert l0 == l1, "the ranks log different probe/train_loss"
    assert l0 == pytest.approx(ref_losses, rel=1e-5)
    assert v0 == v1, "the ranks log different validation metrics"
    assert set(v0) == {f"{name}/{k}" for k in ("val_acc", "val_balanced_acc", "val_auroc", "val_loss")}
    for key, value in ref_val.items():
        assert v0[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_the_data_tells_count_weighting_from_averaging_per_rank_means():
    """Guard on the data above: with these label counts the naive average of per-rank means differs."""
    z, y = train_batches()[0]
    assert (y[:SPLIT] >= 0).sum() != (y[SPLIT:] >= 0).sum()
    w = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def grad(rows: slice) -> torch.Tensor:
        keep = y[rows] >= 0
        loss = torch.nn.functional.cross_entropy(z[rows][keep] @ w.T, y[rows][keep])
        return torch.autograd.grad(loss, w)[0]

    naive = (grad(slice(0, SPLIT)) + grad(slice(SPLIT, None))) / 2
    assert not torch.allclose(grad(slice(None)), naive, rtol=1e-3, atol=1e-5)
