"""Datamodules per modality, the batch type and view transforms."""

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.data.eeg import EEGDataModule
from lightning_ssl.data.eeg_views import DEFAULT_EEG_VIEWS, EEGView, apply_eeg_view
from lightning_ssl.data.graph import GRAPH_DATASETS, GraphDataModule, load_graph_dataset
from lightning_ssl.data.graph_views import GraphView
from lightning_ssl.data.image import DATASETS, MEDMNIST_FLAGS, ImageDataModule, collate_views, load_medmnist
from lightning_ssl.data.point_io import read_point_file
from lightning_ssl.data.point_views import PointView, apply_point_view
from lightning_ssl.data.points import POINT_DATASETS, SYNTHETIC_SHAPES, PointCloudDataModule, make_synthetic_shapes
from lightning_ssl.data.image_transforms import RECIPES, DeviceAugmentation, ViewSpec, make_recipe

__all__ = [
    "DATASETS", "GRAPH_DATASETS", "GraphDataModule", "GraphView", "load_graph_dataset", "MEDMNIST_FLAGS", "RECIPES", "DeviceAugmentation", "ImageDataModule", "SSLBatch", "ViewSpec",
    "collate_views", "load_medmnist", "make_recipe",
    "POINT_DATASETS", "PointCloudDataModule", "PointView", "SYNTHETIC_SHAPES", "apply_point_view", "make_synthetic_shapes",
    "read_point_file", "DEFAULT_EEG_VIEWS", "EEGDataModule", "EEGView", "apply_eeg_view",
]
