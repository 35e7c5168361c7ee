"""The reconstruction objective and the variants' settings on it (see objective.py for the protocol).

  --loss, --sparse-l1, --sparse-kl   the reconstruction loss and its sparsity terms (losses.py)
  --noise        denoising: the model sees a corrupted input, the loss compares with the clean one
  --contractive  the encoder's squared Jacobian norm at the clean input, added to the loss
  --l1-weights   L1 on the weights
  model penalties (a VAE's KL, a VQ's commitment, an AAE's adversarial term) are added to the loss and
  logged per epoch with the reconstruction part (train_recon, train_kl, ...). The VAE's KL warm-up and
  the AAE's discriminator live in their own modules as subclasses / extra steps of this objective.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .losses import ReconstructionLoss, build_loss, l1_weight_penalty
from .noise import Noise, check_noise_fits, parse_noise
from .objective import Forward, Objective

EXACT_JACOBIAN_MAX_LATENT = 16  # up to this code size the Jacobian norm is exact; above, estimated


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


class ReconstructionObjective(Objective):
    """loss(model(prepare(x)), target(x)) + the model's penalties (+ contractive, + L1 on weights)."""

    def __init__(self, model: torch.nn.Module, loss_fn: ReconstructionLoss, *, noise: Noise | None = None,
                 in_unit_range: bool = True, contractive: float = 0.0, l1_weights: float = 0.0):
        self.model, self.loss_fn, self.noise, self.in_unit_range = model, loss_fn, noise, in_unit_range
        self.contractive, self.l1_weights = float(contractive), float(l1_weights)
        self.target_fn: Callable[[torch.Tensor], torch.Tensor] | None = None  # distillation: a teacher's output
        self.extra_terms: list[Callable[[dict], dict[str, torch.Tensor]]] = []  # weighted terms added to the loss
        self.log_parts = bool(model.has_penalties())
        self.spec = loss_fn.spec if not contractive else f"{loss_fn.spec}+{self.contractive:g}*contractive"
        if noise is not None or contractive:
            self.graph_reason = "the variant's step does more than one forward and backward"
        elif self.log_parts:
            self.graph_reason = "the variant logs its loss parts from every step's outputs"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise(x, clip=self.in_unit_range) if self.noise is not None else x

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the model must reconstruct: the clean batch (distillation mixes in a teacher's output)."""
        return self.target_fn(x) if self.target_fn is not None else x

    def reconstruction(self, out: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.loss_fn(out, target)
        if self.contractive:
            exact = self.model.latent_dim <= EXACT_JACOBIAN_MAX_LATENT
            with torch.enable_grad():  # also inside the validation pass's no_grad
                parts["contractive"] = jacobian_sq_norm(self.model.encode, target, projections=None if exact else 1,
                                                        create_graph=self.model.training)
            parts["loss"] = parts["loss"] + self.contractive * parts["contractive"]
        return parts

    def compute(self, forward: Forward, x_in: torch.Tensor, x: torch.Tensor):
        out = forward(x_in)
        target = self.target(x)
        recon = self.reconstruction(out, target)
        penalties = self.model.penalties(out, x_in)
        loss = recon["loss"] + sum(penalties.values())
        if self.l1_weights:
            loss = loss + self.l1_weights * l1_weight_penalty(self.model)
        for term in self.extra_terms:
            loss = loss + sum(term(out).values())
        parts: dict[str, torch.Tensor] = {"loss": loss}
        if self.log_parts:
            parts.update({"recon": recon["loss"].detach(), **{k: v.detach() for k, v in penalties.items()}})
        return parts, out

    def validate(self, forward: Forward, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reconstruction loss on the clean batch: what "best epoch" means for every variant."""
        return {"loss": self.reconstruction(forward(x), x)["loss"]}


def reconstruction_objective(model: torch.nn.Module, settings: Any, *, in_unit_range: bool,
                             cls: type = ReconstructionObjective, **extra) -> ReconstructionObjective:
    """The objective the run's settings ask for (`settings`: aeopt.settings.Settings)."""
    o = settings.objective
    loss_fn = build_loss(o.loss, in_unit_range=in_unit_range, sparse_l1=o.sparse_l1, sparse_kl=o.sparse_kl)
    noise = None
    if o.noise:
        noise = parse_noise(o.noise)
        check_noise_fits(noise, in_unit_range)
        model.input_noise = noise  # read by evaluate_model for the denoising figures
    return cls(model, loss_fn, noise=noise, in_unit_range=in_unit_range, contractive=o.contractive,
               l1_weights=o.l1_weights, **extra)

