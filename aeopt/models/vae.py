"""Variational autoencoder (and beta-VAE): Gaussian encoder, reparameterization, KL to N(0, I).

Training samples z = mu + sigma * eps; evaluation (model.eval()) uses z = mu, so reconstructions
and codes are deterministic. The KL term is averaged per data value, like the reconstruction
loss, so `bce + beta * KL` with beta = 1 is exactly the negative ELBO divided by the data size.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import AeoptError
from .backbone import build_backbone, widen_encoder_output
from .base import Autoencoder
from .objectives import ReconstructionObjective, reconstruction_objective
from .registry import register_model

EVAL_SEED = 4321  # the test ELBO's one posterior sample per image is drawn from this seed


class KLWarmup(ReconstructionObjective):
    """--kl-warmup: the KL weight ramps linearly from 0 to beta over the first epochs. The factor is the
    model's `beta_scale` buffer, so a checkpoint carries it and a resumed run continues the ramp."""

    def __init__(self, *args, ramp_steps: int, **kw):
        super().__init__(*args, **kw)
        self.ramp_steps = ramp_steps
        self.model.beta_scale.fill_(0.0)  # a resumed run's checkpoint then restores the ramp's value

    def after_step(self, step: int) -> None:
        self.model.beta_scale.fill_(min(1.0, (step + 1) / self.ramp_steps))


class VAE(Autoencoder):
    """`beta_scale` (a buffer, so checkpoints keep it) is the KL warm-up factor in [0, 1]."""

    def __init__(self, base: Autoencoder, beta: float):
        super().__init__(widen_encoder_output(base.encoder, 2), base.decoder, base.input_shape,
                         base.latent_dim, base.output)
        self.beta = beta
        self.register_buffer("beta_scale", torch.tensor(1.0))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)  # exp() stays finite even for a wild early step

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = self.posterior(x)
        z = mu
        if self.training or generator is not None:
            eps_device = generator.device if generator is not None else mu.device
            eps = torch.randn(mu.shape, generator=generator, device=eps_device, dtype=mu.dtype).to(mu.device)
            z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decode_logits(z)
        return {"x_hat": self.to_data_space(logits), "logits": logits, "z": z, "mu": mu, "logvar": logvar}

    @staticmethod
    def kl_per_sample(out: dict[str, torch.Tensor]) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, I)) in nats, summed over the latent dimensions."""
        mu, logvar = out["mu"].float(), out["logvar"].float()
        return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)

    def objective(self, settings, *, in_unit_range: bool, steps_per_epoch: int) -> ReconstructionObjective:
        warmup = settings.objective.kl_warmup
        if not warmup:
            return super().objective(settings, in_unit_range=in_unit_range, steps_per_epoch=steps_per_epoch)
        return reconstruction_objective(self, settings, in_unit_range=in_unit_range, cls=KLWarmup,
                                        ramp_steps=warmup * steps_per_epoch)

    def penalties(self, out: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        kl = self.kl_per_sample(out).mean() / math.prod(self.input_shape)
        return {"kl": self.beta * self.beta_scale * kl}

    def recon_nll_per_sample(self, out: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) in nats: Bernoulli on logits for data in [0, 1], unit Gaussian otherwise."""
        logits, x = out["logits"].float().flatten(1), x.float().flatten(1)
        if self.output == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        return 0.5 * ((logits - x).square() + math.log(2 * math.pi)).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n new samples: z from the prior N(0, I), decoded to data space."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return self.decode(z)

    @torch.no_grad()
    def extra_metrics(self, x: torch.Tensor) -> dict[str, Any]:
        """Test ELBO (nats per sample, one posterior sample each) and its two parts."""
        self.eval()
        device, generator = next(self.parameters()).device, torch.Generator().manual_seed(EVAL_SEED)
        nll = kl = 0.0
        for start in range(0, len(x), 1024):
            batch = x[start:start + 1024].to(device)
            out = self(batch, generator)
            nll += float(self.recon_nll_per_sample(out, batch).sum())
            kl += float(self.kl_per_sample(out).sum())
        n = len(x)
        return {"test": {"elbo": -(nll + kl) / n, "recon_nll": nll / n, "kl": kl / n}}


@register_model("vae", "variational AE (beta-VAE): Gaussian code, KL to N(0, I); samples with `aeopt sample`")
def vae(input_shape, latent_dim, output, beta=1.0, backbone=None, width=None, depth=None, kernel_size=None,
        norm=None, activation=None, decoder=None, hidden=None, dropout=None) -> VAE:
    """Args (knobs):
        beta: weight of the KL term (1 = the ELBO; > 1 = beta-VAE, more disentangled, blurrier).
        backbone: conv | mlp (default: conv for images, mlp for tables); the other knobs go to it.
    """
    if not (isinstance(beta, (int, float)) and beta >= 0 and math.isfinite(beta)):
        raise AeoptError(f"--beta must be a number >= 0, got {beta!r}")
    knobs = dict(width=width, depth=depth, kernel_size=kernel_size, norm=norm, activation=activation,
                 decoder=decoder, hidden=hidden, dropout=dropout)
    return VAE(build_backbone(backbone, input_shape, latent_dim, output, knobs), float(beta))
