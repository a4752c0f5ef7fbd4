"""label_fraction: the probe learns from a fixed, id-hashed subset of the training labels."""

from __future__ import annotations

import pytest
import torch

from lightning_ssl.callbacks import OnlineLinearProbe
from lightning_ssl.callbacks._common import labelled_subset
from probe_knn_helpers import FakeModule, FakeTrainer, clustered, probe_params, train_out


def test_labelled_subset_is_a_deterministic_function_of_the_index_and_seed():
    index = torch.arange(10_000)
    mask = labelled_subset(index, len(index), 0.25, seed=0, caller="t")
    assert mask.dtype == torch.bool and mask.shape == (10_000,)
    assert abs(mask.float().mean().item() - 0.25) < 0.02
    assert torch.equal(mask, labelled_subset(index.clone(), len(index), 0.25, seed=0, caller="t"))
    # membership depends on the sample id only, not on its position in the batch (same in every epoch)
    perm = torch.randperm(10_000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(labelled_subset(index[perm], 10_000, 0.25, seed=0, caller="t"), mask[perm])
    # other seeds label other subsets of about the same size (not seed 0's subset with a few changes)
    shared = []
    for seed in range(1, 5):
        other = labelled_subset(index, 10_000, 0.25, seed=seed, caller="t")
        assert abs(other.float().mean().item() - 0.25) < 0.02
        shared.append((other & mask).sum().item() / mask.sum().item())
    assert sum(shared) / len(shared) < 0.8, shared
    # a larger fraction keeps every sample of a smaller one (labelled sets are nested)
    half = labelled_subset(index, 10_000, 0.5, seed=0, caller="t")
    assert abs(half.float().mean().item() - 0.5) < 0.02 and bool((half | ~mask).all())
    assert labelled_subset(None, 5, 1.0, seed=0, caller="t") is None  # all labels: no ids needed


def test_probe_with_label_fraction_sees_only_the_subset_rows():
    z, y = clustered(64, seed=5)
    index = torch.arange(1000, 1064)
    subset = labelled_subset(index, 64, 0.25, seed=0, caller="t")
    y = y.clone()
    y[1] = -1  # an unlabelled row stays out even if it hashes into the subset
    expected_rows = subset & (y >= 0)
    assert 5 < int(expected_rows.sum()) < 30

    trainer, module = FakeTrainer(), FakeModule()
    probe = OnlineLinearProbe(label_fraction=0.25, lr=0.1)
    probe.setup(trainer, module, "fit")
    seen: list[int] = []
    probe.on_train_batch_end(trainer, module, train_out(z, y, index), None, 0)  # builds the classifier
    probe.classifier.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    probe.on_train_batch_end(trainer, module, train_out(z, y, index), None, 1)
    assert seen == [int(expected_rows.sum())]

    # the same steps as a full-label probe fed exactly those rows
    reference = OnlineLinearProbe(label_fraction=1.0, lr=0.1)
    reference.setup(trainer, module, "fit")
    for i in range(2):
        reference.on_train_batch_end(trainer, FakeModule(), train_out(z[expected_rows], y[expected_rows]), None, i)
    for a, b in zip(probe_params(probe), probe_params(reference)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    everything = OnlineLinearProbe(lr=0.1)
    everything.setup(trainer, module, "fit")
    everything.on_train_batch_end(trainer, FakeModule(), train_out(z, y, index), None, 0)
    assert not torch.allclose(probe_params(everything)[0], probe_params(reference)[0])


def test_label_fraction_without_index_raises_naming_index():
    z, y = clustered(8)
    probe = OnlineLinearProbe(label_fraction=0.5)
    trainer = FakeTrainer()
    probe.setup(trainer, FakeModule(), "fit")
    with pytest.raises(ValueError, match=r"label_fraction=0\.5.*`index`"):
        probe.on_train_batch_end(trainer, FakeModule(), train_out(z, y, index=None), None, 0)
    # with all labels, batches without ids are fine
    full = OnlineLinearProbe()
    full.setup(trainer, FakeModule(), "fit")
    full.on_train_batch_end(trainer, FakeModule(), train_out(z, y, index=None), None, 0)
    assert full.classifier is not None
