"""Adversarial autoencoder (Makhzani et al. 2016): a discriminator on the code pushes the codes of
the data toward a prior N(0, I), so decoding prior samples gives new data.

The discriminator is a submodule (its weights live in the model's files) but it is trained by its
own optimizer, an `ExtraStep` of the AAE's objective: the autoencoder's penalty reads the
discriminator through detached weights, and the main optimizer is not given its parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import AeoptError
from .backbone import build_backbone
from .base import Autoencoder
from .objective import ExtraStep
from .objectives import ReconstructionObjective, reconstruction_objective
from .registry import register_model

DISC_HIDDEN = 128
DISC_LR = 2e-4            # the usual GAN rate for the discriminator's Adam
DISC_BETAS = (0.5, 0.999)


class AdversarialObjective(ReconstructionObjective):
    """Reconstruction + adversarial term; after each main step, one discriminator step."""

    def main_parameters(self, model):
        own = {id(p) for p in model.discriminator.parameters()}
        return [p for p in model.parameters() if id(p) not in own]

    def extra_steps(self, model) -> dict[str, ExtraStep]:
        optimizer = torch.optim.Adam(model.discriminator.parameters(), lr=DISC_LR, betas=DISC_BETAS)

        def step(out: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
            loss = model.discriminator_loss(out["z"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"discriminator": loss.detach()}

        return {"discriminator": ExtraStep(optimizer, step)}


class AAE(Autoencoder):
    def __init__(self, base: Autoencoder, adv_weight: float):
        super().__init__(base.encoder, base.decoder, base.input_shape, base.latent_dim, base.output)
        self.adv_weight = adv_weight
        self.discriminator = nn.Sequential(
            nn.Linear(self.latent_dim, DISC_HIDDEN), nn.LeakyReLU(0.2),
            nn.Linear(DISC_HIDDEN, DISC_HIDDEN), nn.LeakyReLU(0.2), nn.Linear(DISC_HIDDEN, 1))

    def objective(self, settings, *, in_unit_range: bool, steps_per_epoch: int) -> ReconstructionObjective:
        return reconstruction_objective(self, settings, in_unit_range=in_unit_range, cls=AdversarialObjective)

    def prior(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(device or next(self.parameters()).device)

    def penalties(self, out: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder's adversarial term: make the discriminator call its codes "prior" (label 1)."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (out["z"].float(),))
        return {"adversarial": self.adv_weight * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))}

    def discriminator_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Prior samples are "real" (1), codes of the data "fake" (0)."""
        real = self.discriminator(self.prior(len(z), device=z.device))
        fake = self.discriminator(z.detach().float())
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.decode(self.prior(n, generator))


@register_model("aae", "adversarial AE: a latent discriminator (own optimizer) matches the codes to N(0, I)")
def aae(input_shape, latent_dim, output, adv_weight=0.05, backbone=None, width=None, depth=None, kernel_size=None,
        norm=None, activation=None, decoder=None, hidden=None, dropout=None) -> AAE:
    """Args (knobs):
        adv_weight: weight of the adversarial term beside the reconstruction loss.
        backbone: conv | mlp (default: conv for images, mlp for tables); the other knobs go to it.
    """
    if not (isinstance(adv_weight, (int, float)) and adv_weight >= 0 and math.isfinite(adv_weight)):
        raise AeoptError(f"--adv-weight must be a number >= 0, got {adv_weight!r}")
    knobs = dict(width=width, depth=depth, kernel_size=kernel_size, norm=norm, activation=activation,
                 decoder=decoder, hidden=hidden, dropout=dropout)
    return AAE(build_backbone(backbone, input_shape, latent_dim, output, knobs), float(adv_weight))
