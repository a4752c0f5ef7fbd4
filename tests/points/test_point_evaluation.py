"""Point-cloud evaluation: the ShapeNet-part IoU by hand, classification and segmentation probes end to end on
the synthetic shapes (plumbing: shapes, ranges, sizes, errors; learning is tests/learning/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_ssl.data import PointCloudDataModule
from lightning_ssl.encoders import PointNet, PointPatchTransformer
from lightning_ssl.evaluation import evaluate_point_classification, evaluate_point_segmentation
from lightning_ssl.evaluation.points import shape_part_iou

MODELNET_SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "modelnet_sample"


def test_shape_part_iou_by_hand():
    # category 0 owns parts {0, 1}; category 1 owns {2, 3}
    category_parts = torch.tensor([[True, True, False, False], [False, False, True, True]])
    parts = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    labels = torch.tensor([0, 1])
    logits = torch.full((2, 4, 4), -1.0)
    # shape 0 predicts 0,1,1,1 -> part 0: 1/2, part 1: 2/3; part 3's logit is highest but not its category's
    for i, p in enumerate([0, 1, 1, 1]):
        logits[0, i, p] = 1.0
    logits[0, :, 3] = 5.0
    # shape 1 predicts 2,2,2,2 -> part 2: 1, part 3 absent from prediction and truth -> 1
    logits[1, :, 2] = 1.0
    iou = shape_part_iou(logits, parts, labels, category_parts)
    assert torch.allclose(iou, torch.tensor([(1 / 2 + 2 / 3) / 2, 1.0]))


@pytest.fixture(scope="module")
def synthetic_dm():
    dm = PointCloudDataModule(dataset="synthetic", num_points=128, batch_size=16, synthetic_samples_per_class=12)
    dm.setup("fit")
    return dm


def test_classification_probe_on_frozen_global_features(synthetic_dm):
    torch.manual_seed(0)
    encoder = PointNet(widths=(16, 32, 64))
    encoder.train()
    out = evaluate_point_classification(encoder, synthetic_dm)
    assert set(out) == {"linear", "knn"}
    assert out["linear"]["n_test"] == len(synthetic_dm.test_dataloader().dataset)
    assert out["linear"]["n_train"] == len(synthetic_dm.labelled_train_dataloader().dataset)
    for result in out.values():
        assert 0.0 <= result["acc"] <= 1.0
    assert encoder.training  # the train/eval flags are restored


def test_segmentation_probe_scores_every_test_cloud(synthetic_dm):
    torch.manual_seed(0)
    encoder = PointPatchTransformer(num_groups=8, group_size=16, embed_dim=32, depth=3, num_heads=2)
    out = evaluate_point_segmentation(encoder, synthetic_dm, points_per_cloud=32, epochs=3)
    assert out["n_test_clouds"] == len(synthetic_dm.test_dataloader().dataset)
    assert out["n_train_points"] == 32 * len(synthetic_dm.labelled_train_dataloader().dataset)
    for key in ("miou", "instance_miou", "class_miou", "acc"):
        assert 0.0 <= out[key] <= 1.0, key
    # two parts per synthetic class: an instance mIoU below 1/4 would mean the category restriction is broken
    assert out["instance_miou"] > 0.25


def test_segmentation_needs_part_labels(tmp_path):
    assert MODELNET_SAMPLE.is_dir(), f"real data missing: {MODELNET_SAMPLE}"
    dm = PointCloudDataModule(dataset="folder", root=str(MODELNET_SAMPLE), num_points=64, batch_size=4,
                              cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="part labels"):
        evaluate_point_segmentation(PointNet(widths=(8, 16)), dm)


def test_segmentation_rejects_bad_probe_settings(synthetic_dm):
    with pytest.raises(ValueError, match="points_per_cloud"):
        evaluate_point_segmentation(PointNet(widths=(8, 16)), synthetic_dm, points_per_cloud=0)


def test_classification_picks_C_on_validation_and_probes_few_labels(synthetic_dm):
    torch.manual_seed(0)
    encoder = PointNet(widths=(16, 32))
    out = evaluate_point_classification(encoder, synthetic_dm, C_grid=(0.1, 1.0), labels_per_class=2, draws=3)
    assert out["linear"]["C"] in (0.1, 1.0)
    few = out["linear_few"]
    assert few["labels_per_class"] == 2 and few["draws"] == 3 and few["C"] == out["linear"]["C"]
    assert 0.0 <= few["acc"] <= 1.0 and few["acc_std"] >= 0.0
    fixed = evaluate_point_classification(encoder, synthetic_dm, C=0.5)
    assert fixed["linear"]["C"] == 0.5 and "linear_few" not in fixed
    with pytest.raises(ValueError, match="lower labels_per_class"):
        evaluate_point_classification(encoder, synthetic_dm, labels_per_class=10_000)


def test_synthetic_category_parts_table(synthetic_dm):
    table = synthetic_dm.category_parts
    assert table.shape == (6, 12) and table.sum() == 12
    assert all(table[c].nonzero().flatten().tolist() == [2 * c, 2 * c + 1] for c in range(6))
