"""VICReg: Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_ssl.heads import projection_head
from lightning_ssl.losses import vicreg_loss
from lightning_ssl.methods.base import SSLMethod, ViewOutputs


class VICReg(SSLMethod):
    """Invariance (MSE), variance (hinge on the std) and covariance terms, all on the global batch.

    Paper defaults: weights 25 / 25 / 1, 3-layer projector of width 8192, LARS. The three parts are
    logged as ``train/invariance``, ``train/variance``, ``train/covariance``.
    """

    loss_is_global = True

    def __init__(
        self,
        encoder: nn.Module,
        proj_hidden_dim: int = 8192,
        proj_out_dim: int = 8192,
        proj_layers: int = 3,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        self.weights = {"sim_weight": sim_weight, "var_weight": var_weight, "cov_weight": cov_weight}
        self.projector = projection_head(encoder.out_dim, proj_hidden_dim, proj_out_dim, proj_layers)

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        z1, z2 = out.projections[:2]
        loss, parts = vicreg_loss(z1, z2, **self.weights)
        return {"loss": loss, **parts}
