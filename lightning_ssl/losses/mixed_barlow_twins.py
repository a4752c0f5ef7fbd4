"""Mixed Barlow Twins: Barlow Twins plus a regulariser on mixed (MixUp) samples.

Bandara, De Melo, Patel. "Guarding Barlow Twins Against Overfitting with Mixed Samples."
arXiv 2312.02151, 2023. https://arxiv.org/abs/2312.02151 (official code: https://github.com/wgcban/mix-bt)
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_ssl.distributed import gather_no_grad, gather_with_grad, rank
from lightning_ssl.losses.barlow_twins import _batch_norm, redundancy_reduction

__all__ = ["mix_images", "mixed_barlow_twins_loss", "MixedBarlowTwinsLoss"]


def mix_images(x1: Tensor, x2: Tensor, mix_lambda: float, perm: Tensor) -> Tensor:
    """MixUp of two views: ``x_m = lambda * x1 + (1 - lambda) * x2[perm]``.

    ``x1`` and ``x2`` must be tensors of the same shape (two augmented views of the same samples);
    ``perm`` is a permutation of the ``N`` rows (each rank's own, under DDP).
    """
    if not isinstance(x1, Tensor) or not isinstance(x2, Tensor):
        raise ValueError(
            f"Mixed Barlow Twins mixes the first two views, which must be tensors; got {type(x1).__name__} and "
            f"{type(x2).__name__}. Use an image datamodule (or tensor views) with this method."
        )
    if x1.shape != x2.shape:
        raise ValueError(
            f"Mixed Barlow Twins mixes the first two views, which must have the same shape; got {tuple(x1.shape)} "
            f"and {tuple(x2.shape)}. Give both global views the same size (multi-crop: put the two global crops first)."
        )
    _check_lambda(mix_lambda)
    if perm.shape != (x1.shape[0],):
        raise ValueError(f"perm must be a permutation of the {x1.shape[0]} rows, got shape {tuple(perm.shape)}.")
    return mix_lambda * x1 + (1.0 - mix_lambda) * x2[perm]


def _check_lambda(mix_lambda: float) -> None:
    if not 0.0 <= float(mix_lambda) <= 1.0:
        raise ValueError(
            f"The mixing weight lambda must lie in [0, 1], got {mix_lambda}. It is a MixUp coefficient drawn from "
            "Beta(alpha, beta); pass the drawn value, not a weight of the loss."
        )


def mixed_barlow_twins_loss(
    z1: Tensor,
    z2: Tensor,
    z_mixed: Tensor,
    perm: Tensor,
    mix_lambda: float,
    lambda_offdiag: float = 0.0051,
    lambda_reg: float = 4.0,
    eps: float = 1e-5,
    gather: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mixed Barlow Twins loss (Bandara et al. 2023) of ``z1, z2, z_mixed`` ``[N, D]``.

    ``z_mixed`` is the projection of the mixed images ``lambda * x1 + (1 - lambda) * x2[perm]``
    (:func:`mix_images`). With ``z1n, z2n, zmn`` the batch-normalised projections (batch mean,
    biased variance, eps 1e-5, no affine: the same normalisation as :func:`barlow_twins_loss`)::

        C_m1    = zmn^T z1n / N
        C_m1_gt = lambda * z1n^T z1n / N + (1 - lambda) * z2n[perm]^T z1n / N
        C_m2    = zmn^T z2n / N
        C_m2_gt = lambda * z1n^T z2n / N + (1 - lambda) * z2n[perm]^T z2n / N
        reg     = lambda_reg * lambda_offdiag * (||C_m1 - C_m1_gt||_F^2 + ||C_m2 - C_m2_gt||_F^2)
        loss    = barlow_twins_loss(z1, z2, lambda_offdiag) + reg

    This is ``main.py`` of the official code (the CIFAR-10/100, TinyImageNet and STL-10 runs):
    ``mixup_loss_scale * lmbda * (...)``, gradients through the targets too. The official code
    normalises with the unbiased std and no eps; here BN's biased variance + eps is used, as in
    :func:`barlow_twins_loss` (a factor ``(N - 1) / N`` on the variance). The ImageNet script
    (``main_imagenet.py``) differs: it multiplies by an extra 0.5, warms ``lambda_reg`` up linearly
    over 10 epochs and uses ``z2n^T z2n`` instead of ``z1n^T z2n`` in ``C_m2_gt``.

    Per-dataset values (official README, ResNet-18/50, projector width 1024): ``lambda_offdiag`` =
    1/128 = 0.0078125 and ``lambda_reg`` = 4.0 (CIFAR-10, CIFAR-100), 1/1024 and 4.0 (TinyImageNet),
    1/128 and 2.0 (STL-10). ImageNet (ResNet-50, width 8192): ``lambda_offdiag`` 0.0051 and
    ``lambda_reg`` 1.0 in the ImageNet script's convention (= 0.5 here, without its warm-up).

    With ``gather=True`` the three projections are gathered from all ranks with gradient, so every
    batch statistic and ``N`` are those of the global batch and every rank computes the same, full
    loss. ``perm`` is each rank's **local** permutation: it is gathered and offset by
    ``rank * N_local``, so the global permutation is block-diagonal (ranks must hold equal row
    counts, as image loaders with ``drop_last=True`` do). ``mix_lambda`` must be the same on every
    rank. One process on the concatenated batch with the block permutation gives the same loss.

    Returns ``(loss, terms)`` with the unweighted ``"barlow_twins"`` loss and the weighted
    ``"mix_reg"`` regulariser (attached to the graph).
    """
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape != z_mixed.shape:
        raise ValueError(
            f"z1, z2 and z_mixed must all be [N, D], got {tuple(z1.shape)}, {tuple(z2.shape)} and "
            f"{tuple(z_mixed.shape)}"
        )
    if perm.shape != (z1.shape[0],):
        raise ValueError(f"perm must be a permutation of the {z1.shape[0]} rows, got shape {tuple(perm.shape)}")
    _check_lambda(mix_lambda)
    if lambda_reg < 0:
        raise ValueError(f"lambda_reg must be >= 0, got {lambda_reg} (0 gives plain Barlow Twins).")
    if gather:
        n_local = z1.shape[0]
        z1, z2, z_mixed = gather_with_grad(z1), gather_with_grad(z2), gather_with_grad(z_mixed)
        perm = gather_no_grad(perm + rank() * n_local)  # block permutation of the global batch
    n = z1.shape[0]
    z1n, z2n, zmn = _batch_norm(z1, eps), _batch_norm(z2, eps), _batch_norm(z_mixed, eps)  # normalised once
    bt = redundancy_reduction(z1n.T @ z2n / n, lambda_offdiag)  # barlow_twins_loss on the same statistics
    # C_m - C_m_gt = (zmn - lambda z1n - (1 - lambda) z2n[perm])^T z / N for z = z1n, z2n
    residual = zmn - mix_lambda * z1n - (1.0 - mix_lambda) * z2n[perm]
    diff1 = residual.T @ z1n / n
    diff2 = residual.T @ z2n / n
    reg = lambda_reg * lambda_offdiag * (diff1.pow(2).sum() + diff2.pow(2).sum())
    return bt + reg, {"barlow_twins": bt, "mix_reg": reg}


class MixedBarlowTwinsLoss(nn.Module):
    """Module form of :func:`mixed_barlow_twins_loss` (Mixed Barlow Twins, Bandara et al. 2023)."""

    def __init__(self, lambda_offdiag: float = 0.0051, lambda_reg: float = 4.0, gather: bool = True) -> None:
        super().__init__()
        if lambda_reg < 0:
            raise ValueError(f"lambda_reg must be >= 0, got {lambda_reg} (0 gives plain Barlow Twins).")
        self.lambda_offdiag = lambda_offdiag
        self.lambda_reg = lambda_reg
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor, z_mixed: Tensor, perm: Tensor, mix_lambda: float) -> Tensor:
        loss, _ = mixed_barlow_twins_loss(z1, z2, z_mixed, perm, mix_lambda, lambda_offdiag=self.lambda_offdiag,
                                          lambda_reg=self.lambda_reg, gather=self.gather)
        return loss

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}, lambda_reg={self.lambda_reg}, gather={self.gather}"
