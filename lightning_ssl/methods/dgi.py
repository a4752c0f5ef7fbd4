"""DGI: Velickovic, Fedus, Hamilton, Lio, Bengio, Hjelm. "Deep Graph Infomax", ICLR 2019."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl import distributed as dist
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class DGI(SSLMethod):
    """Local-global mutual information: a bilinear discriminator tells real node embeddings from
    corrupted ones, given the graph summary.

    ``views[0]`` is the clean graph and ``views[1]`` the corrupted one (GraphView(shuffle_features=True):
    the feature rows permuted, the structure kept). The summary is ``s = sigmoid(mean_i h_i)`` over the
    global batch; ``D(h, s) = h^T W s``; the loss is the binary cross-entropy of real (1) vs corrupted
    (0) scores averaged over all 2N of them. Paper (Cora): 1-layer GCN, 512 units, PReLU, Adam lr 1e-3,
    early stopping on the training loss with patience 20.
    """

    def __init__(self, encoder: nn.Module, **kwargs: Any) -> None:
        super().__init__(encoder, **kwargs)
        self.discriminator = nn.Bilinear(encoder.out_dim, encoder.out_dim, 1)
        nn.init.xavier_uniform_(self.discriminator.weight)
        nn.init.zeros_(self.discriminator.bias)

    def check_views(self, views: list[Any]) -> None:
        if not (len(views) >= 2 and views[0].is_identity and views[1].shuffle_features):
            raise ValueError(
                f"DGI needs the clean graph and its corruption as views, got {views}. Set data.init_args.views to "
                "[{}, {shuffle_features: true}] (configs/graph/dgi_cora.yaml)."
            )

    def readout(self, h: Tensor) -> Tensor:
        """The graph summary ``sigmoid(mean of h)`` over the rows of every rank (differentiable)."""
        total = dist.gather_with_grad(h.sum(0, keepdim=True)).sum(0)
        count = dist.all_reduce_sum(torch.tensor(float(h.shape[0]), device=h.device))
        return torch.sigmoid(total / count)

    def discriminate(self, h: Tensor, summary: Tensor) -> Tensor:
        """Bilinear scores ``h_i^T W s + b`` for one summary vector: ``h @ (W s)``, which avoids the
        ``[N, D, D]`` intermediate that ``nn.Bilinear`` with an expanded summary builds in backward."""
        return h @ (self.discriminator.weight[0] @ summary) + self.discriminator.bias

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        h_real, h_fake = out.embeddings[:2]
        s = self.readout(h_real)
        logits = torch.cat([self.discriminate(h_real, s), self.discriminate(h_fake, s)])
        labels = torch.cat([torch.ones(h_real.shape[0]), torch.zeros(h_fake.shape[0])]).to(logits)
        # sum / global count (x world size: DDP averages gradients) = the one-process mean over all rows
        n_global = dist.all_reduce_sum(torch.tensor(float(logits.shape[0]), device=logits.device))
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / n_global * dist.world_size()
        with torch.no_grad():
            acc = ((logits > 0).float() == labels).float().mean()
        return {"loss": bce, "disc_acc": acc}
