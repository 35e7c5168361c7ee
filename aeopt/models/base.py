"""What every autoencoder shares: encode / decode / forward returning a dict, its size and cost."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import AeoptError
from .objectives import ReconstructionObjective, reconstruction_objective

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # 0.2 is the slope the seed article's Keras code uses
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise AeoptError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def check_choice(what: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise AeoptError(f"unknown {what} {value!r}; known: {', '.join(known)}")


def check_positive(what: str, value, flag: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise AeoptError(f"{what} must be a positive integer, got {value!r}; fix {flag}")


class Autoencoder(nn.Module):
    """An encoder `encoder: x -> z` and a decoder `decoder: z -> logits`.

    `x_hat` is always in data space: sigmoid(logits) for data in [0, 1], the logits themselves for
    standardized tables. Losses that want logits (BCE) read `logits` from the forward dict.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, input_shape: tuple[int, ...],
                 latent_dim: int, output: str):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.output = output

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def to_data_space(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.output == "sigmoid" else logits

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_data_space(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        logits = self.decode_logits(z)
        return {"x_hat": self.to_data_space(logits), "logits": logits, "z": z}

    def penalties(self, out: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model-specific loss terms (already weighted) added to the reconstruction loss; e.g. a VAE's KL."""
        return {}

    def has_penalties(self) -> bool:
        """Whether this family adds loss terms of its own (then the loop logs the parts per epoch)."""
        return type(self).penalties is not Autoencoder.penalties

    def objective(self, settings, *, in_unit_range: bool, steps_per_epoch: int) -> ReconstructionObjective:
        """The objective the training loop runs for this model (see models/objective.py); families with
        their own training rules (a VAE's KL warm-up, an AAE's discriminator) override it."""
        return reconstruction_objective(self, settings, in_unit_range=in_unit_range)

    def extra_metrics(self, x: torch.Tensor) -> dict:
        """Model-specific test figures merged into metrics.json (e.g. a VAE's ELBO); x is the test set."""
        return {}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def train_flops_per_sample(self) -> int:
        """Forward + backward FLOPs for one training sample, counted by torch's flop counter.

        Counted on a batch of 2 (BatchNorm needs more than one sample) on a deep copy, so the
        model's own weights, statistics and gradients are untouched.
        """
        probe = copy.deepcopy(self).float().cpu().train()
        x = torch.rand(2, *self.input_shape)
        with FlopCounterMode(display=False) as counter:
            out = probe(x)
            out["logits"].float().square().mean().backward()
        return int(counter.get_total_flops() // 2)
