"""MYOW: Azabou, Gheshlaghi Azar, Liu, Lin, Johnson, Bhaskaran-Nair, Dabagia, Avila-Pires, Kitchell, Hengen,
Gray-Roncal, Valko, Dyer. "Mine Your Own vieW: Self-Supervised Learning Through Across-Sample Prediction",
arXiv:2102.10106, 2021. https://arxiv.org/abs/2102.10106, official code https://github.com/nerdslab/myow"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl import distributed as dist
from lightning_ssl.heads import head_out_dim, projection_head
from lightning_ssl.losses import byol_loss
from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.byol import BYOL


def myow_weight(epoch: float, warmup_epochs: float, rampup_epochs: float, max_weight: float) -> float:
    """Weight of the mined-view loss (official ``MYOWTrainer.update_mined_loss_weight``): 0 before
    ``warmup_epochs``, linear from 0 to ``max_weight`` between ``warmup_epochs`` and ``rampup_epochs`` (the epoch,
    counted from the start of training, at which the ramp *ends*: not its length), ``max_weight`` after."""
    if epoch < warmup_epochs:
        return 0.0
    if epoch >= rampup_epochs:
        return float(max_weight)
    return float(max_weight) * (epoch - warmup_epochs) / (rampup_epochs - warmup_epochs)


@torch.no_grad()
def mine_views(query: Tensor, pool: Tensor, k: int, self_index: Tensor | None = None) -> Tensor:
    """For every row of ``query`` ``[B, D]``, the index of a mined view in ``pool`` ``[P, D]``: one of its ``k``
    nearest pool rows under the official distance ``2 - 2 cos`` (``MYOW._knn``), drawn uniformly at random.
    ``self_index`` ``[B]`` (optional) is the pool row of each query's own sample, which is never chosen."""
    available = pool.shape[0] - (self_index is not None)
    if not 1 <= k <= available:
        raise ValueError(f"MYOW: miner_k={k} needs 1 <= k <= {available} candidates (the pool minus the sample "
                         "itself); lower miner_k or raise the (global) batch size.")
    distance = 2 - 2 * F.normalize(query.float(), dim=-1) @ F.normalize(pool.float(), dim=-1).T
    if self_index is not None:
        distance[torch.arange(query.shape[0], device=query.device), self_index] = float("inf")
    knn = distance.topk(k, dim=1, largest=False).indices
    return knn.gather(1, torch.randint(k, (query.shape[0], 1), device=query.device)).squeeze(1)


class MYOW(BYOL):
    """BYOL plus across-sample prediction: the online network also predicts the target's representation of a
    *mined* view, a nearby other sample.

    Heads follow the official "cascaded" layout: a second projector ``projector_m`` on top of the BYOL
    projection and a second predictor ``predictor_m``; the EMA teacher holds ``encoder``, ``projector`` and
    ``projector_m``. Mining, per step: the query is the online encoder output of view 1, the candidate pool is
    the target encoder output of view 2 of every *other* sample of the global batch (gathered over DDP ranks
    without gradient; the sample itself is excluded), the distance is ``2 - 2 cos``, and one of the ``miner_k``
    nearest candidates is drawn at random. The mined loss is BYOL's cosine loss between
    ``predictor_m(projector_m(z_1))`` and the target's ``projector_m(projector(y))`` of the mined candidate
    (computed on the candidate's own rank, then gathered). Loss: ``(byol + 2 w mined) / (1 + w)`` with
    :func:`myow_weight` ``w``: the official ``(byol_mean + w mined) / (1 + w)`` scaled by 2, so that it equals
    this library's :class:`BYOL` loss (a sum over both directions) while ``w = 0``. Logged: ``train/byol``,
    ``train/myow`` (mined loss) and ``train/myow_weight``.

    Differences from the official code: its CIFAR-10 script mines in a separate batch of milder views (crop
    scale (0.8, 1) + flip) drawn from a second iterator over the training loader, without excluding the sample
    itself, and applies the target heads to the mined rows only; the neural-data scripts use a separate pool of
    512 random samples. Here the pool is the batch's second view, so mining costs no extra forward pass.

    Official CIFAR-10 values (``scripts/cifar-train.py``): ResNet-18, projector 512 -> 4096 -> 256, second
    projector 256 -> 1024 -> 64 (predictors the same widths), ``miner_k`` 1, weight 0 for 100 epochs then a
    linear ramp to ``myow_max_weight`` 1.0 at epoch 110 (``myow_warmup_epochs=100, myow_rampup_epochs=110``) of
    800, batch 256 per GPU, EMA 0.99 (``docs/cifar.md``: SGD lr 2.0 x B/256, tau 0.98, weight decay 5e-5, 30 warm-up
    epochs). Monkey reach data (``scripts/monkey-train.py``): warm-up 10, ramp end 110, max weight 0.1, k 3.
    """

    def __init__(
        self,
        encoder: nn.Module,
        proj_m_hidden_dim: int = 1024,
        proj_m_out_dim: int = 64,
        pred_m_hidden_dim: int = 1024,
        miner_k: int = 1,
        myow_warmup_epochs: float = 100.0,
        myow_rampup_epochs: float = 110.0,
        myow_max_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        if miner_k < 1 or not 0 <= myow_warmup_epochs <= myow_rampup_epochs or myow_max_weight < 0:
            raise ValueError(f"MYOW: need miner_k >= 1, 0 <= myow_warmup_epochs <= myow_rampup_epochs (the epoch the "
                             f"ramp ends) and myow_max_weight >= 0; got {miner_k}, {myow_warmup_epochs}, "
                             f"{myow_rampup_epochs}, {myow_max_weight}.")
        hp = self.hparams
        heads = dict(activation=hp.head_activation, batch_norm=hp.head_batch_norm)
        z_dim = head_out_dim(encoder.out_dim, hp.proj_out_dim, hp.proj_layers)
        self.projector_m = projection_head(z_dim, proj_m_hidden_dim, proj_m_out_dim, 2, **heads)
        self.predictor_m = projection_head(proj_m_out_dim, pred_m_hidden_dim, proj_m_out_dim, 2, **heads)
        self.build_teacher("encoder", "projector", "projector_m")

    def mining_weight(self) -> float:
        """:func:`myow_weight` at the current fractional epoch (optimizer steps / steps per epoch)."""
        hp = self.hparams
        epoch = 0.0
        if self._trainer is not None:
            batches = self.trainer.num_training_batches
            finite = math.isfinite(batches) and batches > 0
            per_epoch = batches / self.trainer.accumulate_grad_batches if finite else None
            epoch = self.global_step / (per_epoch or self.total_steps())
        return myow_weight(epoch, hp.myow_warmup_epochs, hp.myow_rampup_epochs, hp.myow_max_weight)

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        batch = out.batch
        with torch.no_grad():
            y = [self.apply_mask(x, batch) for x in self.encode_views(batch.views[:2], module=self.teacher["encoder"])]
            t = [self.teacher["projector"](x) for x in y]
            v = self.teacher["projector_m"](t[1])
            n, rank = y[1].shape[0], dist.rank()
            rows = torch.cat([y[1].float(), v.float(), y[1].new_full((n, 1), float(rank), dtype=torch.float)], dim=1)
            gather = dist.gather_variable if batch.mask is not None else dist.gather_no_grad  # masked: uneven rows
            pool_y, pool_v, owner = gather(rows).split([y[1].shape[1], v.shape[1], 1], dim=1)
            self_index = (owner.squeeze(1) < rank).sum() + torch.arange(n, device=owner.device)
            mined = mine_views(out.embeddings[0], pool_y, self.hparams.miner_k, self_index)
        p1, p2 = (self.predict(z) for z in out.projections[:2])
        byol = byol_loss(p1, t[1]) + byol_loss(p2, t[0])
        mined_loss = byol_loss(self.predictor_m(self.projector_m(out.projections[0])), pool_v[mined])
        w = self.mining_weight()
        return {"loss": (byol + 2 * w * mined_loss) / (1 + w), "byol": byol, "myow": mined_loss,
                "myow_weight": byol.new_tensor(w)}
