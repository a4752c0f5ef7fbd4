"""Point-MAE: Pang, Wang, Tay, Liu, Tian, Yuan. "Masked Autoencoders for Point Cloud Self-supervised
Learning", ECCV 2022. https://arxiv.org/abs/2203.06604"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightning_ssl.encoders.weight_init import xavier_init
from lightning_ssl.losses.chamfer import chamfer_distance
from lightning_ssl.methods.base import SSLMethod, ViewOutputs
from lightning_ssl.methods.patch_masking import (
    check_patch_encoder,
    gather_rows,
    num_masked,
    pool_tokens,
    random_patch_mask,
)


class PointMAE(SSLMethod):
    """Masked point-patch reconstruction with a Chamfer-L2 loss on the masked patches only.

    The encoder (:class:`~lightning_ssl.encoders.PointPatchTransformer`) groups the cloud into patches
    (FPS centres + kNN), ``mask_ratio`` of them are masked at random per cloud, and only the visible
    tokens go through the transformer. A light decoder (``decoder_depth`` transformer blocks with the
    positional embeddings of all centres) fills learnable mask tokens; a linear head predicts each
    masked patch's ``group_size`` points relative to its centre, scored by the Chamfer-L2 distance
    (Point-MAE's ``ChamferDistanceL2``: mean over all masked patches). One view; the training
    embedding (for the online probes) is the pooled visible tokens, the evaluation one the pooled
    tokens of the whole clean cloud.

    Paper (ShapeNet pretraining): 1024 points, 64 patches of 32, mask 0.6, encoder 12 blocks width 384
    with 6 heads, decoder 4 blocks, drop path 0.1, AdamW lr 1e-3, wd 0.05, cosine, 10 warm-up of 300
    epochs, batch 128, scale-and-translate augmentation (``configs/points/point_mae_shapenet.yaml``).
    """

    min_views = 1

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = 0.6,
        decoder_depth: int = 4,
        decoder_num_heads: int = 6,
        decoder_drop_path_rate: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        check_patch_encoder(encoder, "PointMAE")
        self.mask_ratio = mask_ratio
        self.n_masked = num_masked(encoder.num_groups, mask_ratio, "PointMAE")
        width = encoder.embed_dim
        if width % decoder_num_heads:
            raise ValueError(f"PointMAE: decoder_num_heads={decoder_num_heads} must divide the encoder width {width}.")
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        rates = torch.linspace(0, decoder_drop_path_rate, decoder_depth).tolist()
        self.decoder = nn.ModuleList(Block(width, decoder_num_heads, qkv_bias=False, drop_path=r) for r in rates)
        self.decoder_norm = nn.LayerNorm(width)
        self.reconstruction_head = nn.Linear(width, 3 * encoder.group_size)  # Point-MAE's 1x1 Conv1d
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder.apply(xavier_init)  # Point-MAE's TransformerDecoder initialisation

    def encode_training_views(self, views: list[Any], extra: dict[str, Any]) -> list[Tensor]:
        patches = self.encoder.tokenize(views[0])
        batch, groups, _ = patches.tokens.shape
        mask = random_patch_mask(batch, groups, self.n_masked, patches.tokens.device)
        visible, _ = self.encoder.encode_tokens(gather_rows(patches.tokens, ~mask), gather_rows(patches.centers, ~mask))
        extra.update(patches=patches, mask=mask, visible=visible)
        return [pool_tokens(visible)]

    def reconstruct(self, visible: Tensor, centers: Tensor, mask: Tensor) -> Tensor:
        """Predicted points ``[B, M, group_size, 3]`` of the ``M`` masked patches (relative to their centres)."""
        batch = visible.shape[0]
        pos = self.decoder_pos_embed(torch.cat([gather_rows(centers, ~mask), gather_rows(centers, mask)], dim=1))
        x = torch.cat([visible, self.mask_token.to(visible.dtype).expand(batch, self.n_masked, -1)], dim=1)
        for block in self.decoder:
            x = block(x + pos)
        x = self.decoder_norm(x[:, -self.n_masked:])
        return self.reconstruction_head(x).reshape(batch, self.n_masked, -1, 3)

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        patches, mask = out.extra["patches"], out.extra["mask"]
        pred = self.reconstruct(out.extra["visible"], patches.centers, mask)
        target = gather_rows(patches.neighborhoods[..., :3], mask)  # xyz only, relative to the centres
        return chamfer_distance(pred.flatten(0, 1).float(), target.flatten(0, 1).float())

