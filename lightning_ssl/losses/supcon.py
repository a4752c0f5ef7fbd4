"""SupCon, the supervised contrastive loss. Reads labels: not a self-supervised loss.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan. "Supervised Contrastive
Learning." NeurIPS 2020. https://arxiv.org/abs/2004.11362 (reference code:
https://github.com/HobbitLong/SupContrast)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.distributed import gather_variable, gather_with_grad

__all__ = ["check_labels", "supcon_loss", "SupConLoss"]


def check_labels(labels: Tensor | None, n: int) -> Tensor:
    """Validate class labels for SupCon: ``[N]`` (or ``[N, 1]``) integers >= 0; returns them as ``[N]``."""
    if labels is None:
        raise ValueError(
            "SupCon is supervised: it needs class labels, but the batch has target=None. Use a labelled "
            "dataset (the datamodule fills SSLBatch.target), or pick a self-supervised method such as SimCLR."
        )
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"SupCon needs one integer class label per sample, shape [{n}]; got {tuple(labels.shape)}. "
            "Multi-label targets (e.g. ChestMNIST) are not supported."
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"SupCon labels must be integer class ids, got dtype {labels.dtype}.")
    if n > 0 and bool((labels < 0).any()):
        raise ValueError(
            "SupCon got a negative label (-1 marks an unlabelled sample); every training sample needs a class "
            "label >= 0. Drop unlabelled samples or use a self-supervised method."
        )
    return labels


def supcon_loss(
    views: Sequence[Tensor],
    labels: Tensor,
    temperature: float = 0.1,
    gather: bool = True,
) -> Tensor:
    """SupCon loss ``L_out`` (Khosla et al. 2020, Eq. 2) over ``V`` views ``[N, D]`` with class ``labels [N]``.

    The ``V * N`` rows are L2-normalised and every row is an anchor ``i``. ``A(i)`` is every other row;
    ``P(i) ⊂ A(i)`` the rows with the same label (the other views of the same sample and all views of
    same-class samples). The ``1 / |P(i)|`` sits **outside** the log (the paper's better ``L_out``)::

        L_i = -1 / |P(i)| * sum_{p in P(i)} log( exp(z_i . z_p / t) / sum_{a in A(i)} exp(z_i . z_a / t) )

    averaged over the anchors that have at least one positive (with ``V >= 2``: all of them). The
    paper sums over anchors; the mean (as in the reference PyTorch code) makes the value comparable
    to NT-Xent. The reference code also multiplies by ``t / 0.07`` (``base_temperature``); that
    constant is omitted. When every sample has its own label and ``V = 2`` this is exactly NT-Xent
    (:func:`~lightning_ssl.losses.nt_xent_loss`), the self-supervised loss SupCon generalises.

    Temperature: 0.1 (the reference code's README recipe, ``--temp 0.1``; the reference
    ``SupConLoss`` class defaults to 0.07).

    With ``gather=True`` every view is gathered from all ranks with gradient and the labels without,
    so the positives and the denominator range over the global batch and every rank computes the
    same, full loss.
    """
    if len(views) < 1:
        raise ValueError("supcon_loss needs at least one view")
    shape = views[0].shape
    if views[0].dim() != 2 or any(v.shape != shape for v in views):
        raise ValueError(f"every view must be [N, D] of the same shape, got {[tuple(v.shape) for v in views]}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    labels = check_labels(labels, shape[0])
    if gather:
        views = [gather_with_grad(v) for v in views]
        labels = gather_variable(labels)
    n, n_views = views[0].shape[0], len(views)
    z = F.normalize(torch.cat(list(views), dim=0), dim=1)  # [V N, D], view-major
    y = labels.to(z.device).repeat(n_views)
    logits = z @ z.T / temperature
    self_mask = torch.eye(n * n_views, dtype=torch.bool, device=z.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    n_pos = pos.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        raise ValueError(
            "SupCon: no anchor has a positive (a single view and every label unique). Use >= 2 views or a "
            "batch with repeated classes."
        )
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob_pos.mean()


class SupConLoss(nn.Module):
    """Module form of :func:`supcon_loss` (SupCon, Khosla et al. 2020). Reads labels."""

    def __init__(self, temperature: float = 0.1, gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather = gather

    def forward(self, views: Sequence[Tensor], labels: Tensor) -> Tensor:
        return supcon_loss(views, labels, temperature=self.temperature, gather=self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
