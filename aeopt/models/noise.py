"""Input corruption for denoising autoencoders (`--noise KIND:LEVEL`) and the denoising figures.

The trainer feeds the corrupted batch to the model and scores the output against the clean one.
Training draws its noise from torch's global RNG, which the trainer reseeds every epoch, so a
resumed run replays the same corruption; evaluation uses its own seeded generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import AeoptError

KINDS = {
    "gaussian": "add N(0, LEVEL^2) noise (clipped to [0, 1] for data in that range)",
    "masking": "set each value to 0 with probability LEVEL",
    "salt_pepper": "set each value to 0 or 1 (equally likely) with probability LEVEL; data in [0, 1] only",
}
EVAL_SEED = 1234  # fixed, so every evaluation of a run sees the same noisy test set


@dataclass(frozen=True)
class Noise:
    kind: str
    level: float

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.level:g}"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                 clip: bool = True) -> torch.Tensor:
        """A corrupted copy of x; `clip` keeps gaussian noise inside [0, 1] (data in that range)."""
        def uniform() -> torch.Tensor:
            return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)

        if self.kind == "gaussian":
            noisy = x + self.level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return noisy.clamp(0, 1) if clip else noisy
        if self.kind == "masking":
            return x * (uniform() >= self.level)
        hit, salt = uniform() < self.level, uniform() < 0.5
        return torch.where(hit, salt.to(x.dtype), x)


def parse_noise(spec: str) -> Noise:
    """`"gaussian:0.3"` -> Noise("gaussian", 0.3), with one-line errors for anything else."""
    kind, _, level = str(spec).partition(":")
    if kind not in KINDS:
        raise AeoptError(f"unknown noise {kind!r} in --noise {spec}; use KIND:LEVEL with KIND one of "
                         f"{', '.join(KINDS)}, e.g. --noise gaussian:0.3")
    try:
        value = float(level)
    except ValueError:
        raise AeoptError(f"--noise {spec} needs a number after the colon, e.g. {kind}:0.2") from None
    upper = float("inf") if kind == "gaussian" else 1.0
    if not 0 < value < upper:
        raise AeoptError(f"--noise {spec}: the level must be > 0{' and < 1' if upper == 1 else ''}")
    return Noise(kind, value)


def check_noise_fits(noise: Noise, in_unit_range: bool) -> None:
    if noise.kind == "salt_pepper" and not in_unit_range:
        raise AeoptError("salt_pepper noise sets values to 0 or 1, which needs data in [0, 1]; "
                         "use --noise gaussian:LEVEL or masking:LEVEL for standardized tables")
