"""Offline evaluation on frozen features: feature extraction, linear probe, weighted kNN, and the graph
protocols (node classification, link prediction, node clustering) and the point-cloud ones
(classification, part segmentation)."""

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

__all__ = [
    "NodeSplit", "evaluate_point_classification", "evaluate_point_segmentation", "extract_features", "knn_classify", "knn_predict", "link_prediction", "linear_probe",
    "logistic_regression_probe", "masks_to_split", "node_classification", "node_clustering", "random_node_splits",
]
