"""GraphMAE: Hou, Liu, Cen, Dong, Yang, Wang, Tang. "GraphMAE: Self-Supervised Masked Graph
Autoencoders", KDD 2022."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.encoders.graph import copy_with_features, make_conv
from lightning_ssl.losses.sce import scaled_cosine_error
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class GraphMAE(SSLMethod):
    """Masked node-feature reconstruction with a re-mask GNN decoder and the scaled cosine error.

    A ``mask_rate`` fraction of the nodes gets its features replaced by a learnable [MASK] token
    (a ``replace_rate`` share of those by the features of random nodes instead); the encoder runs on
    the masked graph; its output goes through a linear map, is zeroed again at the masked nodes
    (re-mask) and a one-layer GNN decoder reconstructs the features. The loss is the scaled cosine
    error over the masked nodes (the seed nodes among them in neighbour-sampled batches). One view.
    Paper (Cora): 2-layer GAT, 4 heads, 512 hidden, PReLU, feature dropout 0.2, attention dropout
    0.1, mask 0.5, replace 0.05, alpha 3, GAT decoder, Adam lr 1e-3, wd 2e-4, 1500 epochs, cosine.
    """

    min_views = 1
    extra_hops = 1  # the GNN decoder message-passes once more: neighbour sampling needs one more fan-out

    def __init__(
        self,
        encoder: nn.Module,
        num_features: int | None = None,
        mask_rate: float = 0.5,
        replace_rate: float = 0.05,
        alpha: float = 3.0,
        decoder: str = "gat",
        decoder_heads: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        if not 0.0 < mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate}: the fraction of nodes to mask.")
        if not 0.0 <= replace_rate < 1.0:
            raise ValueError(f"replace_rate must be in [0, 1), got {replace_rate}.")
        num_features = num_features if num_features is not None else getattr(encoder, "in_channels", None)
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError("GraphMAE needs the node feature width: give num_features or an encoder with in_channels.")
        self.mask_rate, self.replace_rate, self.alpha = mask_rate, replace_rate, alpha
        self.mask_token = nn.Parameter(torch.zeros(1, num_features))
        self.encoder_to_decoder = nn.Linear(encoder.out_dim, encoder.out_dim, bias=False)
        self.decoder = make_conv(decoder, encoder.out_dim, num_features, heads=decoder_heads)

    def check_views(self, views: list[Any]) -> None:
        if not views[0].is_identity:
            raise ValueError(
                f"GraphMAE masks and reconstructs the clean graph's features: the first view must be the unaltered "
                f"graph, got {views[0]}. Set data.init_args.views to [{{}}] (configs/graph/graphmae_cora.yaml)."
            )

    def prepare_views(self, batch: SSLBatch) -> tuple[list[Any], dict[str, Any]]:
        graph = batch.views[0]
        x = graph.x
        n = x.shape[0]
        masked = self._draw_masked(n, batch.mask, x.device)
        out_x = x.clone()
        n_noise = int(self.replace_rate * masked.numel())
        order = torch.randperm(masked.numel(), device=x.device)
        token_nodes, noise_nodes = masked[order[: masked.numel() - n_noise]], masked[order[masked.numel() - n_noise:]]
        out_x[token_nodes] = 0.0
        if n_noise:
            out_x[noise_nodes] = x[torch.randperm(n, device=x.device)[:n_noise]]
        out_x[token_nodes] = out_x[token_nodes] + self.mask_token
        return [copy_with_features(graph, out_x)], {"masked_nodes": masked}

    def _draw_masked(self, n: int, seeds: Tensor | None, device: torch.device) -> Tensor:
        """``mask_rate`` of the nodes; with a seed mask (sampled subgraph), drawn separately among the seeds
        (at least one, so the loss always has rows) and among the other nodes."""
        if seeds is None:
            return torch.randperm(n, device=device)[: max(1, int(self.mask_rate * n))]
        parts = []
        for group in (seeds.nonzero().flatten(), (~seeds).nonzero().flatten()):
            k = max(1, int(self.mask_rate * group.numel())) if group.numel() else 0
            parts.append(group[torch.randperm(group.numel(), device=device)[:k]])
        return torch.cat(parts)

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        graph, masked = out.batch.views[0], out.extra["masked_nodes"]
        rep = self.encoder_to_decoder(out.unmasked[0])
        rep = rep.index_fill(0, masked, 0.0)  # re-mask
        recon = self.decoder(rep, graph.edge_index)
        if out.batch.mask is not None:  # neighbour-sampled: only the seed nodes count
            masked = masked[out.batch.mask[masked]]
        return scaled_cosine_error(recon[masked], graph.x[masked], self.alpha)
