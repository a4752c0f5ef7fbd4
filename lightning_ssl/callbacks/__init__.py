"""Callbacks: monitoring reads the documented step outputs and never reaches into a method.

- :class:`RankMe`: effective rank of the embeddings (Garrido et al. 2022), identical on every rank.
- :class:`OnlineLinearProbe`, :class:`OnlineKNN`: online evaluation with labels, outside the SSL loss.
- :class:`LabelFreeEarlyStopping`: ``EarlyStopping`` on ``rankme`` with a warm-up and a collapse guard.
- :class:`LogAugmentedViews`: a grid of the training views in TensorBoard.
"""

from lightning_ssl.callbacks._common import MissingLabelsError, NonFiniteEmbeddingError
from lightning_ssl.callbacks.codebook import LogCodebookPatterns
from lightning_ssl.callbacks.probes import OnlineKNN, OnlineLinearProbe
from lightning_ssl.callbacks.rankme import RankMe, rankme, rankme_from_singular_values, spectrum_image
from lightning_ssl.callbacks.stopping import LabelFreeEarlyStopping, RepresentationCollapseError
from lightning_ssl.callbacks.view_grid import LogAugmentedViews, view_grid

__all__ = [
    "LabelFreeEarlyStopping",
    "LogAugmentedViews",
    "LogCodebookPatterns",
    "MissingLabelsError",
    "NonFiniteEmbeddingError",
    "OnlineKNN",
    "OnlineLinearProbe",
    "RankMe",
    "RepresentationCollapseError",
    "rankme",
    "rankme_from_singular_values",
    "spectrum_image",
    "view_grid",
]
