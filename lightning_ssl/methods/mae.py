"""MAE: He, Chen, Xie, Li, Dollar, Girshick. "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
https://arxiv.org/abs/2111.06377"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed, build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightning_ssl.encoders.weight_init import xavier_init
from lightning_ssl.losses.mae import mae_loss
from lightning_ssl.methods.base import SSLMethod, ViewOutputs
from lightning_ssl.methods.patch_masking import gather_rows, patchify, random_patch_mask

_VIT_API = ("patch_embed", "_pos_embed", "norm_pre", "blocks", "norm", "num_prefix_tokens", "forward_head")


class MAE(SSLMethod):
    """Masked autoencoder: reconstruct the pixels of randomly masked image patches from the visible ones.

    The encoder must be a timm Vision Transformer in :class:`~lightning_ssl.encoders.TimmEncoder`, e.g.
    ``TimmEncoder("vit_tiny_patch16_224", in_chans=1, model_kwargs={"img_size": 28, "patch_size": 4})``.
    Per image, ``mask_ratio`` of the ``L`` patches are masked at random (MAE's ``random_masking``: a per-sample
    random shuffle keeping ``int(L * (1 - mask_ratio))`` patches). The ViT's own patch and position embeddings
    (and its cls / register tokens) are added first, then the masked patches are dropped, and only the visible
    tokens go through the blocks and the final norm. A light decoder (``decoder_depth`` timm blocks of width
    ``decoder_embed_dim``, a learnable mask token, fixed 2-D sin-cos position embeddings) predicts every patch's
    pixels; the loss is the mean squared error on the masked patches only, with per-patch normalised targets
    (``norm_pix_loss``, :func:`~lightning_ssl.losses.mae.mae_loss`). One view per image (``recipe: mae``).

    Embeddings: in training, ``embeddings`` are the ViT's pooled features (timm's ``forward_head``: the cls token
    or the average, as ``global_pool`` says) of the *visible* tokens, read by RankMe and the online probes;
    :meth:`forward` (validation, test, downstream) is the plain timm forward on the full, unmasked image.
    Differences from the official code: the encoder keeps timm's learnable position embeddings (MAE freezes
    sin-cos ones) and timm's ``patch_drop`` is not applied.

    Paper defaults (ImageNet, ViT-B/L/H): mask 0.75, ``norm_pix_loss``, decoder 8 blocks of width 512 with 16
    heads, AdamW with base lr 1.5e-4 x B/256 (``lr_scaling: linear``), betas (0.9, 0.95), weight decay 0.05,
    cosine schedule with 40 warm-up epochs of 800 (1600 for the longest runs), batch 4096, augmentation
    RandomResizedCrop scale (0.2, 1) + flip only.
    """

    min_views = 1

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = 0.75,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = True,
        betas: tuple[float, float] = (0.9, 0.95),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        vit = getattr(encoder, "model", None)
        missing = [name for name in _VIT_API if not hasattr(vit, name)]
        if missing or not isinstance(vit.patch_embed, PatchEmbed):
            raise TypeError(
                f"MAE masks the patch tokens of a timm Vision Transformer; {type(encoder).__name__} "
                f"({type(vit).__name__}) is not one (lacks {', '.join(missing) or 'a timm PatchEmbed'}). Use "
                "TimmEncoder('vit_tiny_patch16_224', model_kwargs={'img_size': 28, 'patch_size': 4}) or another "
                "timm vit_* name, or a joint-embedding method (SimCLR, BYOL, ...) for CNN encoders.")
        patch, size = tuple(vit.patch_embed.patch_size), tuple(vit.patch_embed.img_size)
        if size[0] % patch[0] or size[1] % patch[1]:
            raise ValueError(f"MAE: the ViT's image size {size[0]}x{size[1]} is not divisible by its patch size "
                             f"{patch[0]}x{patch[1]} (timm would silently drop the border). Set model_kwargs "
                             "img_size / patch_size so that the patches tile the image, e.g. 28 px with patch 4 or 7.")
        num_patches = (size[0] // patch[0]) * (size[1] // patch[1])
        self.num_masked = num_patches - int(num_patches * (1 - mask_ratio))  # MAE's len_keep
        if not 0.0 < mask_ratio < 1.0 or not 1 <= self.num_masked <= num_patches - 1:
            raise ValueError(f"MAE: mask_ratio must be in (0, 1) and leave at least one masked and one visible patch "
                             f"of {num_patches}; got {mask_ratio} (MAE uses 0.75).")
        if decoder_depth < 1 or decoder_embed_dim % decoder_num_heads or decoder_embed_dim % 4:
            raise ValueError(f"MAE: decoder_depth ({decoder_depth}) must be >= 1, and decoder_embed_dim "
                             f"({decoder_embed_dim}) divisible by 4 and by decoder_num_heads ({decoder_num_heads}).")
        self.patch_size, self.image_size, self.norm_pix_loss, self.betas = patch, size, norm_pix_loss, tuple(betas)
        self.decoder_embed = nn.Linear(vit.num_features, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        grid = [size[0] // patch[0], size[1] // patch[1]]
        pos = build_sincos2d_pos_embed(grid, decoder_embed_dim)[None]  # fixed, as MAE's frozen 2-D sin-cos
        self.register_buffer("decoder_pos_embed", pos, persistent=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder = nn.Sequential(*(Block(decoder_embed_dim, decoder_num_heads, mlp_ratio=4.0, qkv_bias=True,
                                             norm_layer=norm) for _ in range(decoder_depth)))
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch[0] * patch[1] * vit.patch_embed.proj.in_channels)
        for module in (self.decoder_embed, self.decoder, self.decoder_norm, self.decoder_pred):
            module.apply(xavier_init)  # MAE's decoder initialisation
        nn.init.normal_(self.mask_token, std=0.02)

    def check_views(self, views: list[Any]) -> None:
        if len(views) > 1:
            warnings.warn(f"MAE reads one view per image, but the datamodule makes {len(views)}: the others are "
                          "computed and unused. Set data.recipe: mae (one crop + flip); masking is the corruption.",
                          stacklevel=2)

    def encode_training_views(self, views: list[Any], extra: dict[str, Any]) -> list[Tensor]:
        images, vit = views[0], self.encoder.model
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"MAE's ViT was built for {self.image_size[0]}x{self.image_size[1]} images but got "
                             f"{images.shape[-2]}x{images.shape[-1]}; set model_kwargs img_size to data.image_size.")
        tokens = vit._pos_embed(vit.patch_embed(images))  # prefix tokens + patch tokens, position embeddings added
        prefix = vit.num_prefix_tokens
        mask = random_patch_mask(images.shape[0], tokens.shape[1] - prefix, self.num_masked, images.device)
        x = torch.cat([tokens[:, :prefix], gather_rows(tokens[:, prefix:], ~mask)], dim=1)
        x = vit.norm(vit.blocks(vit.norm_pre(x)))
        extra.update(patches=patchify(images, self.patch_size), mask=mask, tokens=x)
        return [vit.forward_head(x)]

    def decode(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Encoder outputs (prefix + visible tokens) and the mask ``[B, L]`` -> pixels of every patch ``[B, L, P]``."""
        prefix = self.encoder.model.num_prefix_tokens
        x = self.decoder_embed(tokens)
        full = self.mask_token.to(x.dtype).expand(*mask.shape, -1).masked_scatter(~mask[..., None], x[:, prefix:])
        x = torch.cat([x[:, :prefix], full + self.decoder_pos_embed.to(x.dtype)], dim=1)  # prefix: no position
        return self.decoder_pred(self.decoder_norm(self.decoder(x))[:, prefix:])

    def compute_loss(self, out: ViewOutputs) -> Tensor:
        pred = self.decode(out.extra["tokens"], out.extra["mask"])
        return mae_loss(pred, out.extra["patches"], out.extra["mask"], norm_pix=self.norm_pix_loss)

    def build_optimizer_and_schedule(self, lr: float, total_steps: int, steps_per_epoch: float) -> tuple[Any, Any]:
        optimizer, schedule = super().build_optimizer_and_schedule(lr, total_steps, steps_per_epoch)
        for group in optimizer.param_groups:  # Adam(W) only: MAE's betas (0.9, 0.95)
            if "betas" in group:
                group["betas"] = self.betas
        return optimizer, schedule
