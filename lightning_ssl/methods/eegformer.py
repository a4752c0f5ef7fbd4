"""EEGFormer-style masked modelling with a vector-quantised tokenizer: Chen, Ren, Song, Wang, Wang, Li, Qiu.
"EEGFormer: Towards Transferable and Interpretable Large-Scale EEG Foundation Model", AAAI 2024 Spring
Symposium on Clinical Foundation Models. https://arxiv.org/abs/2401.10278"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightning_ssl.encoders.weight_init import trunc_normal_init
from lightning_ssl.heads.vector_quantizer import Quantized, VectorQuantizer
from lightning_ssl.methods.base import SSLMethod, ViewOutputs
from lightning_ssl.methods.patch_masking import num_masked, random_patch_mask

TARGETS: tuple[str, ...] = ("signal", "fft_amplitude")
_TOKENIZER_API = ("patchify", "embed_patches", "encode_tokens", "pool", "in_channels", "num_patches", "patch_size", "embed_dim")


class EEGFormer(SSLMethod):
    """Masked reconstruction of per-channel EEG patches through a vector-quantised bottleneck.

    The encoder (:class:`~lightning_ssl.encoders.EEGPatchTransformer`) cuts every channel into patches;
    ``mask_ratio`` of the ``C * P`` patch tokens get a learnable mask embedding in place of their content
    (channel and position embeddings stay). The encoder's token outputs go through a linear map to
    ``code_dim`` and a :class:`~lightning_ssl.heads.VectorQuantizer` (``num_codes`` codes, commitment loss,
    straight-through gradients, dead-code restarts); a light transformer decoder (``decoder_depth`` blocks
    with its own channel and position embeddings) reconstructs every patch from the quantised tokens, and
    the mean-squared error counts the masked patches only. ``target``: ``"signal"`` (the patch samples) or
    ``"fft_amplitude"`` (``log(1 + |rfft(patch)|)``, LaBraM-style spectral target). Loss: reconstruction
    + ``vq_weight`` x (codebook + beta x commitment). Logged: ``train/reconstruction``,
    ``train/vq_codebook``, ``train/vq_commitment``, ``train/codebook_perplexity``,
    ``train/codebook_usage`` (fraction of codes used in the global batch), ``train/codebook_restarted``.

    Probes and RankMe read the encoder's pooled tokens (``encoder.pool``: the visible tokens in training, every
    token of the clean window in evaluation). :meth:`tokenize` gives the discrete code of every patch, the basis of the
    interpretability report (:func:`lightning_ssl.evaluation.eeg_codes.codebook_report`).
    """

    min_views = 1

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = 0.5,
        num_codes: int = 512,
        code_dim: int = 64,
        beta: float = 0.25,
        cosine_codes: bool = True,
        dead_code_steps: int = 50,
        vq_weight: float = 1.0,
        target: str = "signal",
        decoder_depth: int = 1,
        decoder_num_heads: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        missing = [name for name in _TOKENIZER_API if not hasattr(encoder, name)]
        if missing:
            raise TypeError(f"EEGFormer masks per-channel patch tokens, so it needs lightning_ssl.encoders.EEGPatchTransformer "
                            f"(or an encoder with {', '.join(_TOKENIZER_API)}); {type(encoder).__name__} lacks "
                            f"{', '.join(missing)} (embed_patches must accept mask and mask_token). Use SimCLR/BYOL/VICReg "
                            "for convolutional EEG encoders.")
        if target not in TARGETS:
            raise ValueError(f"EEGFormer: unknown target {target!r}; valid: {', '.join(TARGETS)}.")
        width, channels, patches = encoder.embed_dim, encoder.in_channels, encoder.num_patches
        if width % decoder_num_heads or decoder_depth < 1:
            raise ValueError(f"EEGFormer: decoder_num_heads={decoder_num_heads} must divide the encoder width {width} "
                             f"and decoder_depth ({decoder_depth}) must be >= 1.")
        self.target, self.vq_weight = target, float(vq_weight)
        self.n_masked = num_masked(channels * patches, mask_ratio, "EEGFormer", "a smaller encoder patch_size or longer windows",
                                   "EEGFormer-style masking uses about 0.5")
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.to_code = nn.Linear(width, code_dim)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta=beta, cosine=cosine_codes, dead_code_steps=dead_code_steps)
        self.from_code = nn.Linear(code_dim, width)
        self.decoder_channel_embed = nn.Parameter(torch.zeros(channels, 1, width))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, patches, width))
        self.decoder = nn.ModuleList(Block(width, decoder_num_heads, qkv_bias=True) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(width)
        size = encoder.patch_size
        self.head = nn.Linear(width, size if target == "signal" else size // 2 + 1)
        for module in (self.to_code, self.from_code, self.decoder, self.decoder_norm, self.head):
            module.apply(trunc_normal_init)
        for p in (self.mask_token, self.decoder_channel_embed, self.decoder_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def check_views(self, views: list[Any]) -> None:
        if len(views) > 1:
            warnings.warn(f"EEGFormer reads one view per window, but the datamodule makes {len(views)}: the others are "
                          "computed and unused. Give data.views a single mild view (e.g. [{amplitude_scale: [0.9, 1.1]}]); "
                          "masking is the corruption.", stacklevel=2)

    def encode_training_views(self, views: list[Any], extra: dict[str, Any]) -> list[Tensor]:
        patches = self.encoder.patchify(views[0])
        mask = random_patch_mask(patches.shape[0], patches.shape[1] * patches.shape[2], self.n_masked, patches.device)
        tokens, _ = self.encoder.encode_tokens(self.encoder.embed_patches(patches, mask, self.mask_token))
        extra.update(patches=patches, mask=mask, tokens=tokens)
        return [self.encoder.pool(tokens, keep=~mask)]

    def quantize(self, tokens: Tensor) -> Quantized:
        """Quantise encoder tokens ``[B, N, D]`` (collects usage over DDP ranks: call on every rank)."""
        return self.quantizer(self.to_code(tokens))

    @torch.no_grad()
    def tokenize(self, x: Tensor) -> Tensor:
        """Discrete code of every patch of clean windows ``x [B, C, T]``: ``[B, C, P]`` (no collectives)."""
        tokens, _ = self.encoder.encode_tokens(self.encoder.embed_patches(self.encoder.patchify(x)))
        codes = self.quantizer.nearest(self.to_code(tokens).reshape(-1, self.quantizer.code_dim))
        return codes.reshape(x.shape[0], self.encoder.in_channels, self.encoder.num_patches)

    def decode(self, quantized: Tensor) -> Tensor:
        """Quantised tokens ``[B, C * P, code_dim]`` -> reconstructed patches ``[B, C * P, target width]``."""
        pos = (self.decoder_channel_embed + self.decoder_pos_embed).reshape(1, -1, self.decoder_pos_embed.shape[-1])
        x = self.from_code(quantized) + pos
        for block in self.decoder:
            x = block(x)
        return self.head(self.decoder_norm(x))

    def reconstruction_target(self, patches: Tensor) -> Tensor:
        """What the decoder predicts for every patch of ``patches [B, C, P, S]``, as ``[B, C * P, S']``."""
        flat = patches.flatten(1, 2).float()
        return flat if self.target == "signal" else torch.log1p(torch.fft.rfft(flat, dim=-1).abs())

    def compute_loss(self, out: ViewOutputs) -> dict[str, Tensor]:
        mask = out.extra["mask"]
        q = self.quantize(out.extra["tokens"])
        pred = self.decode(q.quantized)
        reconstruction = F.mse_loss(pred[mask].float(), self.reconstruction_target(out.extra["patches"])[mask])
        return {
            "loss": reconstruction + self.vq_weight * q.loss, "reconstruction": reconstruction,
            "vq_codebook": q.codebook_loss, "vq_commitment": q.commitment_loss,
            "codebook_perplexity": q.perplexity, "codebook_usage": q.usage,
            "codebook_restarted": self.quantizer.restarted.float(),
        }  # fmt: skip
