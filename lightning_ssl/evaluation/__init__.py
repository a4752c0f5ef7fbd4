"""Offline evaluation on frozen features: feature extraction, linear probe, weighted kNN."""

from lightning_ssl.evaluation.features import extract_features
from lightning_ssl.evaluation.knn import knn_classify, knn_predict
from lightning_ssl.evaluation.linear import linear_probe

__all__ = ["extract_features", "knn_classify", "knn_predict", "linear_probe"]
