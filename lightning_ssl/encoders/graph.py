"""Graph encoders: message-passing GNNs from ``torch_geometric.nn`` behind the ``.out_dim`` contract.

:class:`GNNEncoder` stacks GCN (Kipf & Welling 2017), GAT (Velickovic et al. 2018), GraphSAGE
(Hamilton et al. 2017) or GIN (Xu et al. 2019) layers, with dropout -> conv -> norm -> activation per
layer (the activation after the last layer is optional: DGI, GRACE, BGRL and GraphMAE keep it,
CCA-SSG drops it). ``forward(view)`` takes a PyG ``Data``/``Batch`` (anything with ``x`` and
``edge_index``) and returns node embeddings ``[num_nodes, out_dim]``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv
from torch_geometric.nn.resolver import activation_resolver, normalization_resolver

GNN_LAYERS = ("gcn", "gat", "sage", "gin")


def make_conv(kind: str, in_dim: int, out_dim: int, heads: int = 1, attn_dropout: float = 0.0,
              residual: bool = False) -> nn.Module:
    """One ``torch_geometric.nn`` layer ``in_dim -> out_dim``.

    GAT concatenates ``heads`` heads of width ``out_dim // heads`` (so the output is ``out_dim`` wide);
    GIN uses a 2-layer MLP with a learnable epsilon (GIN-eps).
    """
    kind = kind.lower()
    if kind == "gcn":
        return GCNConv(in_dim, out_dim, cached=False)
    if kind == "gat":
        if out_dim % heads:
            raise ValueError(f"GAT width {out_dim} is not divisible by heads={heads}; pick widths that are multiples of heads.")
        extra = {"residual": True} if residual else {}  # the argument exists from PyG 2.6
        return GATConv(in_dim, out_dim // heads, heads=heads, concat=True, dropout=attn_dropout, **extra)
    if kind == "sage":
        return SAGEConv(in_dim, out_dim)
    if kind == "gin":
        return GINConv(nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim)), train_eps=True)
    raise ValueError(f"Unknown GNN layer {kind!r}; valid names: {', '.join(GNN_LAYERS)}.")


class GNNEncoder(nn.Module):
    """A stack of message-passing layers; node embeddings of width ``out_dim``.

    Args:
        conv: ``"gcn"``, ``"gat"``, ``"sage"`` or ``"gin"``.
        in_channels: node feature width (the datamodule's ``num_features``; a mismatch is reported in
            ``setup`` with the value to set).
        hidden_channels: width of the hidden layers.
        out_channels: embedding width (``out_dim``); defaults to ``hidden_channels``.
        num_layers: number of message-passing layers (= hops; neighbour sampling needs one fan-out each).
        activation: any ``torch_geometric.nn.resolver`` name (``relu``, ``prelu``, ``elu``, ...).
        norm: ``None``, ``"batch_norm"``, ``"layer_norm"``, ... applied before the activation.
        dropout: feature dropout before every layer.
        act_last: apply norm + activation after the last layer too.
        heads, attn_dropout, residual: GAT options.
    """

    def __init__(
        self,
        conv: str = "gcn",
        in_channels: int = 1433,
        hidden_channels: int = 512,
        out_channels: int | None = None,
        num_layers: int = 2,
        activation: str = "prelu",
        norm: str | None = None,
        dropout: float = 0.0,
        act_last: bool = True,
        heads: int = 1,
        attn_dropout: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if conv.lower() not in GNN_LAYERS:
            raise ValueError(f"Unknown GNN layer {conv!r}; valid names: {', '.join(GNN_LAYERS)}.")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        out_channels = hidden_channels if out_channels is None else out_channels
        self.conv_type, self.in_channels, self.num_layers = conv.lower(), in_channels, num_layers
        self.out_dim = out_channels
        self.act_last = act_last
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(
            make_conv(conv, a, b, heads=heads, attn_dropout=attn_dropout, residual=residual)
            for a, b in zip(dims[:-1], dims[1:])
        )
        n_post = num_layers if act_last else num_layers - 1
        self.norms = nn.ModuleList(
            normalization_resolver(norm, b) if norm else nn.Identity() for b in dims[1 : n_post + 1]
        )
        # PReLU has parameters: one per layer, as in DGI/BGRL
        self.acts = nn.ModuleList(activation_resolver(activation) for _ in range(n_post))
        self.dropout = nn.Dropout(dropout)

    def forward(self, view: Any) -> Tensor:
        x, edge_index = _features_and_edges(view)
        for i, conv in enumerate(self.convs):
            x = conv(self.dropout(x), edge_index)
            if i < len(self.acts):
                x = self.acts[i](self.norms[i](x))
        return x


def _features_and_edges(view: Any) -> tuple[Tensor, Tensor]:
    x, edge_index = getattr(view, "x", None), getattr(view, "edge_index", None)
    if not isinstance(x, Tensor) or not isinstance(edge_index, Tensor):
        raise TypeError(
            f"Graph encoders take a torch_geometric Data/Batch with `x` and `edge_index`; got {type(view).__name__}. "
            "Use GraphDataModule, or pass node features (structural_features) for graphs without them."
        )
    return x, edge_index


def copy_with_features(view: Any, x: Tensor) -> Any:
    """A shallow copy of the graph ``view`` with node features replaced (masking, corruption)."""
    out = view.clone() if not hasattr(view, "__copy__") else view.__copy__()
    out.x = x
    return out


__all__ = ["GNN_LAYERS", "GNNEncoder", "copy_with_features", "make_conv"]

