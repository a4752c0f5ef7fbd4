"""Callbacks: monitoring reads the documented step outputs and never reaches into a method."""

from lightning_ssl.callbacks.view_grid import LogAugmentedViews, view_grid

__all__ = ["LogAugmentedViews", "view_grid"]
