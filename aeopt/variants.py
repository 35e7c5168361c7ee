"""Training-time wiring of the autoencoder variants through the trainer's extension points.

`install_variants(trainer)` reads the run's settings and installs what they ask for:
  --noise        trainer.corrupt (denoising: corrupted input, clean target)
  --sparse-kl    the KL sparsity term in the loss
  --contractive  the encoder's squared Jacobian norm in the loss
  --kl-warmup    a step hook ramping a VAE's KL weight (model.beta_scale, kept in checkpoints)
  model aae      a step hook training the latent discriminator with its own optimizer
  vae / vq / aae a step + epoch hook logging the loss parts (train_recon, train_kl, ...) in history.csv
The Trainer calls it when it is built, so the API, the CLI and the search all get the variants.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .errors import AeoptError
from .losses import build_loss, parse_sparse_kl
from .models.base import Autoencoder
from .noise import check_noise_fits, parse_noise

EXACT_JACOBIAN_MAX_LATENT = 16  # up to this code size the Jacobian norm is exact; above, estimated
DISC_LR = 2e-4                   # the usual GAN rate for the discriminator's Adam
DISC_BETAS = (0.5, 0.999)


def check_variant_settings(config) -> None:
    """Reject bad variant settings (called by TrainConfig.validate, before any directory exists)."""
    if config.noise is not None:
        parse_noise(config.noise)
    if config.sparse_kl is not None:
        parse_sparse_kl(config.sparse_kl)
    if not (isinstance(config.contractive, (int, float)) and config.contractive >= 0):
        raise AeoptError(f"--contractive must be a weight >= 0, got {config.contractive!r}")
    if not (isinstance(config.kl_warmup, int) and config.kl_warmup >= 0):
        raise AeoptError(f"--kl-warmup must be a whole number of epochs >= 0, got {config.kl_warmup!r}")
    if config.kl_warmup and config.model != "vae":
        raise AeoptError(f"--kl-warmup ramps a VAE's KL term; --model {config.model} has none (use --model vae)")


def jacobian_sq_norm(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                     projections: int | None = None, create_graph: bool = True) -> torch.Tensor:
    """Mean over the batch of ||d f(x_i) / d x_i||_F^2.

    projections=None: exact, one vector-Jacobian product per output unit. projections=k: the
    Hutchinson estimate E_v ||v^T J||^2 with k Gaussian vectors v (unbiased, k backward passes).
    (With BatchNorm in train mode samples interact, so "per sample" is up to that coupling.)
    """
    x = x.detach().requires_grad_(True)
    z = f(x).float().flatten(1)
    if projections is None:
        directions = [torch.zeros_like(z).index_fill_(1, torch.tensor([k], device=z.device), 1.0)
                      for k in range(z.shape[1])]
    else:
        directions = [torch.randn_like(z) for _ in range(projections)]
    total = z.new_zeros(())
    for v in directions:
        (grad,) = torch.autograd.grad(z, x, v, create_graph=create_graph, retain_graph=True)
        total = total + grad.float().square().sum()
    return total / (len(x) * (1 if projections is None else projections))


@dataclass
class ContractiveLoss:
    """The run's loss plus `weight` * the encoder's squared Jacobian norm at the clean input."""

    base: Any
    model: torch.nn.Module
    weight: float

    @property
    def spec(self) -> str:
        return f"{self.base.spec}+{self.weight:g}*contractive"

    def __call__(self, out: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.base(out, x)
        exact = self.model.latent_dim <= EXACT_JACOBIAN_MAX_LATENT
        with torch.enable_grad():  # also inside the validation pass's no_grad
            parts["contractive"] = jacobian_sq_norm(self.model.encode, x, projections=None if exact else 1,
                                                    create_graph=self.model.training)
        parts["loss"] = parts["loss"] + self.weight * parts["contractive"]
        return parts


class LossPartsLog:
    """Means over each epoch of the reconstruction loss and of every model penalty, added to the
    epoch's history row (so history.csv has train_recon, train_kl, ...). Sums stay on the device:
    no host sync per step."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, name: str, value: torch.Tensor, n: int) -> None:
        self.sums[name] = self.sums.get(name, 0) + value.detach().float() * n

    def step_hook(self, trainer, x: torch.Tensor, out: dict) -> None:
        with torch.no_grad():
            reconstruction = getattr(trainer.loss_fn, "base", trainer.loss_fn)  # skip a contractive wrapper
            self.add("recon", reconstruction(out, x)["loss"], len(x))
            for name, value in trainer.model.penalties(out, x).items():
                self.add(name, value, len(x))
        self.count += len(x)

    def epoch_hook(self, trainer, row: dict) -> None:
        row.update({f"train_{name}": float(total) / max(self.count, 1) for name, total in self.sums.items()})
        self.sums, self.count = {}, 0


class DiscriminatorStep:
    """The adversarial autoencoder's second optimizer: one discriminator step per autoencoder step.

    Its Adam state is checkpointed with the trainer's (trainer.extra_optimizers), so a resumed run
    continues exactly.
    """

    def __init__(self, model, parts: LossPartsLog):
        self.model, self.parts = model, parts
        self.optimizer = torch.optim.Adam(model.discriminator.parameters(), lr=DISC_LR, betas=DISC_BETAS)

    def __call__(self, trainer, x: torch.Tensor, out: dict) -> None:
        loss = self.model.discriminator_loss(out["z"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.parts.add("discriminator", loss, len(x))


def install_variants(trainer) -> None:
    """Install the run's variant settings on a `Trainer` (see the module docstring)."""
    cfg, model = trainer.config, trainer.model
    if cfg.noise:
        noise = parse_noise(cfg.noise)
        check_noise_fits(noise, trainer.dataset.in_unit_range)
        in_unit_range = trainer.dataset.in_unit_range
        trainer.corrupt = lambda x: noise(x, clip=in_unit_range)
        model.input_noise = noise  # read by evaluate_model for the denoising figures
    if cfg.sparse_kl:
        trainer.loss_fn = build_loss(cfg.loss, in_unit_range=trainer.dataset.in_unit_range,
                                     sparse_l1=cfg.sparse_l1, sparse_kl=cfg.sparse_kl)
    if cfg.contractive:
        trainer.loss_fn = ContractiveLoss(trainer.loss_fn, model, float(cfg.contractive))
    if cfg.kl_warmup:
        ramp_steps = cfg.kl_warmup * trainer.steps_per_epoch
        model.beta_scale.fill_(0.0)  # a resumed run's checkpoint then restores the ramp's value

        def ramp(trainer, x, out):
            model.beta_scale.fill_(min(1.0, (trainer.step + 1) / ramp_steps))  # trainer.step counts from 0

        trainer.step_hooks.append(ramp)
    if type(model).penalties is not Autoencoder.penalties:
        parts = LossPartsLog()
        trainer.step_hooks.append(parts.step_hook)
        if hasattr(model, "discriminator"):
            discriminator_step = DiscriminatorStep(model, parts)
            trainer.step_hooks.append(discriminator_step)
            trainer.extra_optimizers["discriminator"] = discriminator_step.optimizer
        trainer.epoch_hooks.append(parts.epoch_hook)
