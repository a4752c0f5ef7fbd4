"""Projection, prediction and DINO heads (MLP builders)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def mlp(
    dims: Sequence[int],
    batch_norm: bool = True,
    last_batch_norm: bool = False,
    last_bias: bool = True,
    activation: type[nn.Module] | str = nn.ReLU,
) -> nn.Sequential:
    """An MLP ``dims[0] -> ... -> dims[-1]``: Linear (+BN) + activation between layers.

    ``last_batch_norm`` adds a BatchNorm without affine parameters after the last layer, as in the
    projectors of MoCo v3 and SimSiam (official code: ``BatchNorm1d(dim, affine=False)``).
    """
    if len(dims) < 2:
        raise ValueError(f"An MLP needs at least input and output widths; got dims={list(dims)}.")
    act = _activation(activation)
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=(last_bias if last else not batch_norm)))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(act())
        elif last_batch_norm:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "prelu": nn.PReLU, "elu": nn.ELU, "gelu": nn.GELU}


def _activation(activation: type[nn.Module] | str) -> type[nn.Module]:
    if isinstance(activation, str):
        if activation.lower() not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; valid names: {', '.join(ACTIVATIONS)}.")
        return ACTIVATIONS[activation.lower()]
    return activation


def projection_head(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, **kwargs) -> nn.Module:
    """``num_layers`` linear layers ``in -> hidden (x num_layers-1) -> out``; ``num_layers=0`` is no head
    (``nn.Identity``, the output width is then ``in_dim``: GBT, CCA-SSG and BGRL's target use none)."""
    if num_layers < 0:
        raise ValueError(f"num_layers must be >= 0, got {num_layers}.")
    if num_layers == 0:
        return nn.Identity()
    return mlp([in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim], **kwargs)


def head_out_dim(in_dim: int, out_dim: int, num_layers: int) -> int:
    """Width of :func:`projection_head`'s output (``in_dim`` when it has no layers)."""
    return in_dim if num_layers == 0 else out_dim


class DINOHead(nn.Module):
    """DINO head (Caron et al. 2021): MLP -> L2-normalised bottleneck -> weight-normed linear layer.

    The last layer's weight norm (``g``) is fixed to 1 (``norm_last_layer=True``), as in the paper.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = mlp([in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim], batch_norm=batch_norm,
                       activation=nn.GELU)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad_(False)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)
