"""Masked feature modelling for point clouds, after Masked Scene Modeling: Hermosilla, Stippel,
Sick. "Masked Scene Modeling: Narrowing the Gap Between Supervised and Self-Supervised Learning in
3D Scene Understanding", CVPR 2025. https://arxiv.org/abs/2412.06767"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.methods.base import ViewOutputs
from lightning_ssl.methods.momentum import MomentumSSLMethod
from lightning_ssl.methods.patch_masking import (
    check_patch_encoder,
    gather_rows,
    num_masked,
    pool_tokens,
    random_patch_mask,
)

LOSSES = ("cosine", "smooth_l1")


class MaskedFeatureModeling(MomentumSSLMethod):
    """The student, seeing the cloud with masked patches, predicts the EMA teacher's features of those
    patches at several encoder depths.

    MSM's recipe on a patch transformer: the teacher (an EMA of the student, cosine momentum schedule)
    encodes every patch of the clean cloud; the student encodes the same patches with ``mask_ratio``
    of them replaced by a learnable mask token. At every depth in ``target_layers`` (default: the
    encoder's ``level_layers``, e.g. blocks 4, 8 and 12 of 12, the multi-level features the evaluation
    reads) a linear predictor maps the student's tokens to the teacher's; the loss, averaged over the
    depths, counts the masked patches only. Teacher targets are layer-normalised without affine
    parameters (as data2vec); the teacher has no stochastic depth (its drop-path layers are removed), so
    the same cloud always gives the same targets. ``loss``: ``"cosine"`` (1 - cosine similarity, MSM's choice) or
    ``"smooth_l1"``. Logged: ``train/loss`` and ``train/layer_<i>`` per target depth.

    Differences from MSM (whose encoder is a sparse-convolution U-Net over scene voxels): levels are
    transformer depths, not decoder resolutions; masking is per patch, not per voxel cell.
    """

    min_views = 1

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = 0.6,
        target_layers: Sequence[int] | None = None,
        loss: str = "cosine",
        tau_base: float = 0.996,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, tau_base=tau_base, **kwargs)
        check_patch_encoder(encoder, "MaskedFeatureModeling")
        if loss not in LOSSES:
            raise ValueError(f"MaskedFeatureModeling: unknown loss {loss!r}; valid: {', '.join(LOSSES)}.")
        depth = len(encoder.blocks)
        layers = list(target_layers if target_layers is not None else getattr(encoder, "level_layers", [depth - 1]))
        bad = [i for i in layers if not 0 <= int(i) < depth]
        if not layers or bad:
            raise ValueError(f"MaskedFeatureModeling: target_layers {layers} must be block indices in [0, {depth - 1}].")
        self.target_layers = [int(i) for i in layers]
        self.loss_name = loss
        self.mask_ratio = mask_ratio
        self.n_masked = num_masked(encoder.num_groups, mask_ratio, "MaskedFeatureModeling")
        width = encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.predictors = nn.ModuleList(nn.Linear(width, width) for _ in self.target_layers)
        self.build_teacher("encoder")
        _remove_drop_path(self.teacher["encoder"])  # targets must not depend on stochastic depth

    def encode_training_views(self, views: list[Any], extra: dict[str, Any]) -> list[Tensor]:
        patches = self.encoder.tokenize(views[0])
        batch, groups, _ = patches.tokens.shape
        mask = random_patch_mask(batch, groups, self.n_masked, patches.tokens.device)
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(patches.tokens.dtype), patches.tokens)
        out, levels = self.encoder.encode_tokens(tokens, patches.centers, return_layers=self.target_layers)
        extra.update(patches=patches, mask=mask, student=levels)
        return [pool_tokens(gather_rows(out, ~mask))]

    @torch.no_grad()
    def teacher_targets(self, patches: Any) -> list[Tensor]:
        """The teacher's layer-normalised features ``[B, G, D]`` of every patch at each target depth."""
        teacher = self.teacher["encoder"]
        tokens = teacher.patch_embed(patches.neighborhoods)
        _, levels = teacher.encode_tokens(tokens, patches.centers, return_layers=self.target_layers)
        return [F.layer_norm(t.float(), t.shape[-1:]) for t in levels]

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        mask = out.extra["mask"]
        targets = self.teacher_targets(out.extra["patches"])
        parts: dict[str, Tensor] = {}
        for layer, student, target, predictor in zip(self.target_layers, out.extra["student"], targets, self.predictors):
            pred = predictor(student[mask]).float()
            if self.loss_name == "cosine":
                parts[f"layer_{layer}"] = (1 - F.cosine_similarity(pred, target[mask], dim=-1)).mean()
            else:
                parts[f"layer_{layer}"] = F.smooth_l1_loss(pred, target[mask])
        parts["loss"] = torch.stack(list(parts.values())).mean()
        return parts


def _remove_drop_path(module: nn.Module) -> None:
    """Replace every timm ``DropPath`` inside ``module`` by ``nn.Identity`` (in place)."""
    from timm.layers import DropPath

    for name, child in list(module.named_children()):
        if isinstance(child, DropPath):
            setattr(module, name, nn.Identity())
        else:
            _remove_drop_path(child)
