"""VQ-VAE: the encoder's output is cut into `latent_dim / code_dim` vectors, each replaced by its
nearest code vector from a learned codebook (van den Oord et al. 2017).

The codebook follows exponential moving averages of the encoder outputs assigned to each code
(no codebook loss); gradients pass the quantizer straight through; the commitment term keeps the
encoder near its codes. A code that has gone unused (EMA count below a tenth of a uniform share)
is restarted on a random encoder output of the current batch, so the whole codebook stays in play.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import AeoptError
from .backbone import build_backbone
from .base import Autoencoder, check_positive
from .registry import register_model

DECAY = 0.95        # EMA decay of the codebook statistics: a memory of ~20 steps follows a fast-moving encoder
DEAD_SHARE = 0.1    # a code whose EMA count falls under this fraction of a uniform share counts as dead
EPS = 1e-5


class VectorQuantizer(nn.Module):
    """Nearest-code quantization of (N, D) vectors with an EMA-updated codebook (all buffers)."""

    def __init__(self, codebook_size: int, code_dim: int):
        super().__init__()
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim))
        self.register_buffer("ema_count", torch.zeros(codebook_size))  # all "dead": the first batch seeds them
        self.register_buffer("ema_sum", torch.zeros(codebook_size, code_dim))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        distances = (flat.square().sum(1, keepdim=True) - 2 * flat @ self.codebook.T
                     + self.codebook.square().sum(1))
        return distances.argmin(1)

    @torch.no_grad()
    def update(self, flat: torch.Tensor, index: torch.Tensor) -> None:
        onehot = F.one_hot(index, len(self.codebook)).to(flat.dtype)
        self.ema_count.mul_(DECAY).add_(onehot.sum(0), alpha=1 - DECAY)
        self.ema_sum.mul_(DECAY).add_(onehot.T @ flat, alpha=1 - DECAY)
        n = self.ema_count.sum()
        count = (self.ema_count + EPS) / (n + len(self.codebook) * EPS) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / count[:, None])
        share = len(flat) / len(self.codebook)
        dead = self.ema_count < DEAD_SHARE * share
        if dead.any():
            picks = flat[torch.randint(0, len(flat), (int(dead.sum()),), device=flat.device)]
            self.codebook[dead] = picks
            self.ema_count[dead] = share  # a fresh code gets one share of credit before it can die again
            self.ema_sum[dead] = picks * share

    def forward(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.nearest(flat)
        if self.training:
            self.update(flat, index)
        return self.codebook[index], index


def perplexity(index: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the code usage: 1 = one code used, codebook_size = all used equally."""
    p = torch.bincount(index.flatten(), minlength=codebook_size).float()
    p = p / p.sum()
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


class VQVAE(Autoencoder):
    def __init__(self, base: Autoencoder, codebook_size: int, code_dim: int, commitment: float):
        super().__init__(base.encoder, base.decoder, base.input_shape, base.latent_dim, base.output)
        self.code_dim, self.commitment = code_dim, commitment
        self.quantizer = VectorQuantizer(codebook_size, code_dim)

    @property
    def codes_per_sample(self) -> int:
        return self.latent_dim // self.code_dim

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantized z with straight-through gradients, code indices (N, codes_per_sample))."""
        flat = z_e.float().reshape(-1, self.code_dim)
        z_q, index = self.quantizer(flat)
        z_q = z_q.reshape(z_e.shape)
        return z_e + (z_q - z_e).detach(), index.reshape(len(z_e), -1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.encoder(x).float())[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z_e = self.encoder(x).float()
        z, codes = self.quantize(z_e)
        logits = self.decode_logits(z)
        return {"x_hat": self.to_data_space(logits), "logits": logits, "z": z, "z_e": z_e, "codes": codes}

    def penalties(self, out: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"commitment": self.commitment * F.mse_loss(out["z_e"], out["z"].detach())}

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples with each code drawn independently by its usage frequency (a unigram prior:
        crude next to a learned autoregressive prior, but it needs no second model)."""
        usage = self.quantizer.ema_count.float().cpu()
        index = torch.multinomial(usage / usage.sum(), n * self.codes_per_sample, replacement=True,
                                  generator=generator)
        z = self.quantizer.codebook[index.to(self.quantizer.codebook.device)].reshape(n, self.latent_dim)
        return self.decode(z)

    @torch.no_grad()
    def extra_metrics(self, x: torch.Tensor) -> dict[str, Any]:
        self.eval()
        device = next(self.parameters()).device
        codes = torch.cat([self(x[s:s + 1024].to(device))["codes"].cpu() for s in range(0, len(x), 1024)])
        size = len(self.quantizer.codebook)
        return {"codebook_perplexity": perplexity(codes, size),
                "codebook_used": int(torch.unique(codes).numel()), "codebook_size": size,
                "code_bits": self.codes_per_sample * math.log2(size)}


@register_model("vq_vae", "vector-quantized AE: EMA codebook, commitment cost, dead-code restarts")
def vq_vae(input_shape, latent_dim, output, codebook_size=256, code_dim=4, commitment=0.25, backbone=None,
           width=None, depth=None, kernel_size=None, norm=None, activation=None, decoder=None, hidden=None,
           dropout=None) -> VQVAE:
    """Args (knobs):
        codebook_size: number of code vectors (each code carries log2 of it in bits).
        code_dim: size of one code vector; latent_dim must be a multiple of it.
        commitment: weight of ||z_e - sg(z_q)||^2 (0.25 as in the paper).
        backbone: conv | mlp (default: conv for images, mlp for tables); the other knobs go to it.
    """
    check_positive("codebook size", codebook_size, "--codebook-size")
    check_positive("code size", code_dim, "--code-dim")
    if latent_dim % code_dim:
        raise AeoptError(f"--latent-dim {latent_dim} must be a multiple of --code-dim {code_dim}")
    if not (isinstance(commitment, (int, float)) and commitment >= 0):
        raise AeoptError(f"--commitment must be >= 0, got {commitment!r}")
    knobs = dict(width=width, depth=depth, kernel_size=kernel_size, norm=norm, activation=activation,
                 decoder=decoder, hidden=hidden, dropout=dropout)
    return VQVAE(build_backbone(backbone, input_shape, latent_dim, output, knobs), codebook_size, code_dim,
                 float(commitment))
