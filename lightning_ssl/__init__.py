"""lightning_ssl: self-supervised pretraining on PyTorch Lightning for images, graphs, points and EEG."""

__version__ = "0.1.0"
