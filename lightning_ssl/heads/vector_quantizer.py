"""Vector quantisation with a learned codebook (VQ-VAE: van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete
Representation Learning", NeurIPS 2017, https://arxiv.org/abs/1711.00937), as used by EEGFormer's tokenizer.

Training adds ``codebook_loss + beta * commitment_loss`` to the objective; gradients reach the input through
the straight-through estimator. Codes unused for ``dead_code_steps`` training steps are restarted on
random inputs of the current batch (Dhariwal et al. 2020, "Jukebox"; Zeghidour et al. 2021). Usage counts
are summed over DDP ranks and restarts draw from the inputs of all ranks with a shared seed, so the codebook
stays identical on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl import distributed as dist


@dataclass
class Quantized:
    """Output of :class:`VectorQuantizer`: ``quantized`` (input shape, straight-through), ``codes`` (input
    shape without the last dim), ``loss`` (codebook + beta * commitment), its parts, and batch statistics
    over all ranks: ``perplexity`` (exp of the code-usage entropy; ``num_codes`` when uniform, 1 when one code
    takes everything) and ``usage`` (fraction of codes used in the batch)."""

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    usage: Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantiser over a ``[num_codes, code_dim]`` codebook.

    Args:
        num_codes: codebook size.
        code_dim: width of the inputs and codes.
        beta: commitment weight (VQ-VAE: 0.25).
        cosine: L2-normalise inputs and codes before matching (ViT-VQGAN, Yu et al. 2022), which keeps
            more codes in use; the quantised output is then the normalised code.
        dead_code_steps: restart a code after this many consecutive training forward passes without use (0:
            never; with gradient accumulation a pass is a micro-batch).
        seed: base seed of the restart draws (identical on every rank).
    """

    def __init__(
        self, num_codes: int, code_dim: int, beta: float = 0.25, cosine: bool = True, dead_code_steps: int = 50, seed: int = 0
    ) -> None:
        super().__init__()
        if num_codes < 2 or code_dim < 1:
            raise ValueError(f"VectorQuantizer needs num_codes >= 2 and code_dim >= 1, got {num_codes} and {code_dim}.")
        if beta < 0 or dead_code_steps < 0:
            raise ValueError(f"beta ({beta}) and dead_code_steps ({dead_code_steps}) must be >= 0.")
        self.num_codes, self.code_dim, self.beta, self.cosine = int(num_codes), int(code_dim), float(beta), bool(cosine)
        self.dead_code_steps, self.seed = int(dead_code_steps), int(seed)
        self.codebook = nn.Embedding(self.num_codes, self.code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / self.num_codes, 1.0 / self.num_codes)  # VQ-VAE's init
        self.register_buffer("steps_unused", torch.zeros(self.num_codes, dtype=torch.long))
        self.register_buffer("restart_round", torch.zeros((), dtype=torch.long))
        self.register_buffer("restarted", torch.zeros((), dtype=torch.long))  #: total codes restarted so far

    def _prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.cosine else x

    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """Index of the nearest code of every row of ``z [N, code_dim]`` (float32, also under autocast)."""
        with torch.autocast(z.device.type, enabled=False):
            z, e = self._prepare(z.float()), self._prepare(self.codebook.weight.float())
            if self.cosine:
                return (z @ e.t()).argmax(dim=1)
            return (z.square().sum(1, keepdim=True) - 2 * z @ e.t() + e.square().sum(1)).argmin(dim=1)

    @torch.no_grad()
    def _restart_dead_codes(self, z: Tensor) -> None:
        """Move codes unused for ``dead_code_steps`` steps onto random rows of ``z`` (from all ranks)."""
        dead = (self.steps_unused >= self.dead_code_steps).nonzero().flatten()
        if dead.numel() == 0:
            return
        local = z[torch.randperm(z.shape[0], device=z.device)[: dead.numel()]]  # rank-local draw, then shared
        pool = dist.gather_variable(local.float())
        if pool.shape[0] == 0:  # no rank had inputs (same pool on every rank, so all skip together)
            return
        g = torch.Generator().manual_seed(self.seed + int(self.restart_round))  # same draw on every rank
        pick = torch.randint(pool.shape[0], (dead.numel(),), generator=g).to(pool.device)
        self.codebook.weight.data[dead] = self._prepare(pool[pick]).to(self.codebook.weight.dtype)
        self.steps_unused[dead] = 0
        self.restart_round += 1
        self.restarted += dead.numel()

    def forward(self, z: Tensor) -> Quantized:
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"VectorQuantizer: inputs must end in code_dim={self.code_dim}, got shape {tuple(z.shape)}.")
        flat = z.reshape(-1, self.code_dim)
        if self.training and self.dead_code_steps > 0:
            self._restart_dead_codes(flat.detach())
        codes = self.nearest(flat.detach())
        counts = dist.all_reduce_sum(torch.bincount(codes, minlength=self.num_codes).float())
        if self.training:
            self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        zp = self._prepare(flat)
        e = self._prepare(self.codebook(codes))
        if flat.shape[0] == 0:  # an empty batch on this rank: zero losses that still reach every parameter
            codebook_loss = commitment_loss = (self.codebook.weight.sum() + zp.sum()).float() * 0.0
        else:
            codebook_loss = F.mse_loss(e.float(), zp.detach().float())
            commitment_loss = F.mse_loss(zp.float(), e.detach().float())
        quantized = zp + (e - zp).detach()  # straight-through: forward e, gradient to z
        p = counts / counts.sum().clamp_min(1)
        perplexity = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
        return Quantized(
            quantized=quantized.reshape(*z.shape[:-1], self.code_dim), codes=codes.reshape(z.shape[:-1]),
            loss=codebook_loss + self.beta * commitment_loss, codebook_loss=codebook_loss, commitment_loss=commitment_loss,
            perplexity=perplexity, usage=(counts > 0).float().mean(),
        )  # fmt: skip


__all__ = ["Quantized", "VectorQuantizer"]
