"""Graph views made on the device: edge dropping, feature masking, feature-shuffling corruption.

- Edge dropping and feature masking (GRACE, Zhu et al. 2020; BGRL, Thakoor et al. 2022; GBT, Bielak et
  al. 2022; CCA-SSG, Zhang et al. 2021) use PyG's ``dropout_edge`` (each directed edge removed
  independently with probability ``drop_edge``) and ``mask_feature`` (``mode="col"``: the same feature
  columns zeroed for every node, with probability ``mask_feature``).
- DGI's corruption (Velickovic et al. 2019) shuffles the rows of the feature matrix, keeping the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch_geometric.utils import dropout_edge, mask_feature


@dataclass
class GraphView:
    """One augmented view of a graph.

    Args:
        drop_edge: probability of removing each edge, in [0, 1).
        mask_feature: probability of zeroing each feature column, in [0, 1).
        shuffle_features: permute the node feature rows (DGI's corruption).
    """

    drop_edge: float = 0.0
    mask_feature: float = 0.0
    shuffle_features: bool = False

    def __post_init__(self) -> None:
        for name in ("drop_edge", "mask_feature"):
            rate = getattr(self, name)
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(
                    f"GraphView.{name} must be in [0, 1), got {rate}: it is the probability of removing an "
                    f"edge / masking a feature column (1 would remove everything)."
                )

    @property
    def is_identity(self) -> bool:
        return self.drop_edge == 0 and self.mask_feature == 0 and not self.shuffle_features


def shuffle_node_features(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DGI's corruption function: a random permutation of the rows of ``x``."""
    return x[torch.randperm(x.shape[0], device=x.device, generator=generator)]


def make_view(data: Any, spec: GraphView) -> Any:
    """Apply ``spec`` to a PyG ``Data`` (on its device) and return a new ``Data``; ``data`` is untouched.

    Edge attributes and weights follow the kept edges.
    """
    if spec.is_identity:
        return data
    out = data.__copy__()
    if spec.drop_edge > 0:
        edge_index, kept = dropout_edge(data.edge_index, p=spec.drop_edge, training=True)
        out.edge_index = edge_index
        for key in ("edge_attr", "edge_weight", "e_id"):
            value = getattr(data, key, None)
            if isinstance(value, Tensor) and value.shape[0] == kept.shape[0]:
                setattr(out, key, value[kept])
    x = data.x
    if spec.mask_feature > 0:
        x, _ = mask_feature(x, p=spec.mask_feature, mode="col", training=True)
    if spec.shuffle_features:
        x = shuffle_node_features(x)
    out.x = x
    return out


__all__ = ["GraphView", "make_view", "shuffle_node_features"]
