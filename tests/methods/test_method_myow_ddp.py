"""MYOW under DDP (2 gloo processes): the candidate pool is the global batch and each sample's own row is
excluded by its global index; losses averaged over ranks equal one process on the concatenated batch."""

from __future__ import annotations

import pytest
import torch

from ddp_utils import run_ddp
from lightning_ssl.data.batch import SSLBatch
from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.myow import MYOW
from ssl_method_helpers import tiny_encoder

pytestmark = pytest.mark.ddp


def _ddp_worker(rank: int, world_size: int, views: list[torch.Tensor]) -> dict[str, float]:
    torch.manual_seed(0)  # the same initial weights on every rank
    method = MYOW(tiny_encoder(), proj_hidden_dim=32, proj_out_dim=16, pred_hidden_dim=32, proj_m_hidden_dim=16,
                  proj_m_out_dim=8, pred_m_hidden_dim=16, myow_warmup_epochs=0.0, myow_rampup_epochs=0.0)
    method.eval()  # BatchNorm with running statistics: a shard's outputs equal its rows of the full batch
    if world_size > 1:
        n = views[0].shape[0] // world_size
        views = [v[rank * n:(rank + 1) * n] for v in views]
    h = method.encode_views(views)
    with torch.no_grad():
        parts = method.compute_loss(ViewOutputs(h, [method.project(x) for x in h], SSLBatch(views=views)))
    return {k: float(v) for k, v in parts.items()}


def test_ddp_mines_in_the_global_batch_and_excludes_the_own_sample():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 28, 28, generator=g)
    views = [x, x.clone()]  # identical views: every sample's own candidate is at distance 0 and must be skipped
    views[1][6] = x[1] + 0.01 * torch.randn(1, 28, 28, generator=g)  # rank 0's sample 1 -> rank 1's row 2
    single = _ddp_worker(0, 1, views)
    ranks = run_ddp(_ddp_worker, views, world_size=2)
    for key in ("byol", "myow"):
        assert sum(r[key] for r in ranks) / 2 == pytest.approx(single[key], abs=1e-5), key
