"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017, arXiv:1708.03888).

The form follows the official Barlow Twins implementation (Zbontar et al. 2021,
``facebookresearch/barlowtwins/main.py``), which is also the one SimCLR and BYOL use:

.. code-block:: text

    g  = grad + weight_decay * p                        (skipped for excluded groups)
    q  = trust_coefficient * ||p|| / (||g|| + eps)      if ||p|| > 0 and ||g|| > 0, else 1
    g  = q * g                                          (skipped for excluded groups)
    mu = momentum * mu + g
    p  = p - lr * mu

Norms are per parameter tensor (the "layer" of the paper). With ``eps=0`` this is exactly the
official code; the default ``eps=1e-8`` only guards the division and changes nothing measurable.

Parameter groups with ``lars_exclude=True`` (alias: ``exclude_from_adaptation=True``) get neither
weight decay nor the trust-ratio adaptation, only momentum SGD; this is what the papers do for biases
and normalisation parameters. :func:`lightning_ssl.optim.param_groups_no_weight_decay` builds such groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["LARS"]


class LARS(Optimizer):
    """Momentum SGD with layer-wise trust-ratio scaling (LARS).

    Args:
        params: parameters or parameter-group dicts. A group may set ``lars_exclude=True`` (or
            ``exclude_from_adaptation=True``) to skip weight decay and the trust-ratio adaptation.
        lr: learning rate (after any batch-size scaling, see
            :func:`lightning_ssl.optim.scale_learning_rate`; LARS never rescales it itself).
        momentum: heavy-ball momentum (no dampening, no Nesterov), as in the reference code.
        weight_decay: L2 coefficient added to the gradient before the trust ratio is computed.
        trust_coefficient: the paper's eta (0.001 in SimCLR, BYOL and Barlow Twins).
        eps: added to ``||g||`` in the trust-ratio denominator.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"LARS: invalid learning rate {lr} (must be >= 0)")
        if momentum < 0.0:
            raise ValueError(f"LARS: invalid momentum {momentum} (must be >= 0)")
        if weight_decay < 0.0:
            raise ValueError(f"LARS: invalid weight_decay {weight_decay} (must be >= 0)")
        if trust_coefficient <= 0.0:
            raise ValueError(f"LARS: invalid trust_coefficient {trust_coefficient} (must be > 0)")
        if eps < 0.0:
            raise ValueError(f"LARS: invalid eps {eps} (must be >= 0)")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _excluded(group: dict[str, Any]) -> bool:
        return bool(group.get("lars_exclude", False) or group.get("exclude_from_adaptation", False))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimisation step (``closure`` re-evaluates the loss, as in torch optimizers)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            excluded = self._excluded(group)
            lr = group["lr"]
            momentum = group["momentum"]
            weight_decay = group["weight_decay"]
            trust = group["trust_coefficient"]
            eps = group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                g = p.grad
                if not excluded:
                    if weight_decay != 0.0:
                        g = g.add(p, alpha=weight_decay)
                    p_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    one = torch.ones_like(p_norm)
                    q = torch.where(
                        (p_norm > 0.0) & (g_norm > 0.0),
                        trust * p_norm / (g_norm + eps),
                        one,
                    )
                    g = g.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                mu = state["mu"]
                mu.mul_(momentum).add_(g)
                p.add_(mu, alpha=-lr)
        return loss
