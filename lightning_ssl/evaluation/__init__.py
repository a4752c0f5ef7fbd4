"""Offline evaluation on frozen features: feature extraction, linear probe, weighted kNN, and the graph
protocols (node classification, link prediction, node clustering) and the point-cloud ones
(classification, part segmentation), and the image protocols (label fractions x seeds, transfer with the
pretraining's evaluation transforms, kNN OOD detection)."""

from lightning_ssl.evaluation.features import extract_features
from lightning_ssl.evaluation.graph import (
    NodeSplit,
    link_prediction,
    logistic_regression_probe,
    masks_to_split,
    node_classification,
    node_clustering,
    random_node_splits,
)
from lightning_ssl.evaluation.knn import knn_classify, knn_predict
from lightning_ssl.evaluation.linear import linear_probe
from lightning_ssl.evaluation.points import evaluate_point_classification, evaluate_point_segmentation
from lightning_ssl.evaluation.protocol import (
    EvalTransformMismatchWarning,
    EvalTransformSettings,
    evaluate_image_protocol,
    knn_fractions,
    knn_ood_auroc,
    linear_probe_fractions,
    pretraining_eval_datamodule,
    pretraining_eval_settings,
    pretraining_eval_transform,
    results_table,
    stratified_subset,
)

__all__ = [
    "NodeSplit", "evaluate_point_classification", "evaluate_point_segmentation", "extract_features", "knn_classify", "knn_predict", "link_prediction", "linear_probe",
    "logistic_regression_probe", "masks_to_split", "node_classification", "node_clustering", "random_node_splits",
    "EvalTransformMismatchWarning", "EvalTransformSettings", "evaluate_image_protocol", "knn_fractions", "knn_ood_auroc",
    "linear_probe_fractions", "pretraining_eval_datamodule", "pretraining_eval_settings", "pretraining_eval_transform",
    "results_table", "stratified_subset",
]
