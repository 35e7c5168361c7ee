"""Encode-time refinement of the latents: smaller files at the same or better quality, same decoder.

The encoder g_a is amortized: trained to be good on average, it leaves each image's latents short
of the best integers for R + lambda * D under the model's own decoder and densities. `refine`
searches for better ones by gradient descent on y and z themselves with the networks fixed, using
stochastic Gumbel annealing (SGA, Yang, Bamler & Mandt 2020, "Improving Inference for Neural Image
Compression"): each value is a random soft choice between its floor and ceiling that sharpens
into rounding as the temperature falls, so the optimization ends at integers instead of drifting
across rounding boundaries (plain Adam with straight-through rounding did not pay: design_notes.md).

On the mean grid (latent_grid="mean") z is searched the same way and y through its residual: y_hat =
mu_q(z) + soft_round(y - mu_q(z)), the centres following the soft z as the coder's follow the
integer one, so the result is y_hat on the grid (the coder re-derives its integer residuals).

Only the encoder changes: the file holds integers like any other, decodes bit-exactly with the
same tables, and a file refined on one machine decodes anywhere. The search is seeded, so the same
image and settings give the same file. Each image keeps its plain latents if the refined ones do
not lower its R + lambda * D (by the model's estimate): refinement never makes an image worse by
the measure it optimizes. It costs one g_s forward and backward per step (benchmarks/results/codec_refined.md).
"""
from __future__ import annotations

import math

import torch

from ..errors import AeoptError
from ..models.codec.model import CodecModel
from ..models.codec.objective import bits_per_pixel_per_sample, distortion_per_sample

MAX_STEPS = 10_000
# The search backpropagates through g_s: ~0.9 KB per pixel on top of plain coding (a 512x512 RGB
# photo: +240 MB), so a 64-Mpixel image would need ~60 GB. Larger images are refused by name.
MAX_PIXELS = 1 << 23
LEARNING_RATE = 0.015  # Adam's step, in units of each image's latent spread: 0.01 did best on Fashion-MNIST, 0.02 on photos (design_notes.md)
SPREAD_MIN = 0.1
TAU_START, TAU_END = 0.5, 0.02  # SGA temperature: flat for the first 30% of the steps, then exponential
HOLD = 0.3
SEED = 0


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
        raise AeoptError(f"refine steps must be a whole number in 0..{MAX_STEPS}, got {steps!r}")
    return steps


def check_size(height: int, width: int) -> None:
    if height * width > MAX_PIXELS:
        raise AeoptError(f"refine keeps the decoder's gradients (~1 KB per pixel): a {height}x{width} image is over "
                         f"its {MAX_PIXELS / 2 ** 20:.0f} Mpixel limit; compress it without --refine")


def temperature(step: int, steps: int) -> float:
    held = HOLD * steps
    if step <= held:
        return TAU_START
    return max(TAU_START * math.exp(math.log(TAU_END / TAU_START) * (step - held) / (steps - held)), TAU_END)


def soft_round(v: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """SGA: floor or ceiling, chosen by a Gumbel-softmax whose logits favour the nearer one."""
    floor = torch.floor(v)
    eps = 1e-5
    logits = torch.stack([-torch.atanh((v - floor).clamp(-1 + eps, 1 - eps)) / tau,
                          -torch.atanh((floor + 1 - v).clamp(-1 + eps, 1 - eps)) / tau], -1)
    uniform = torch.rand(logits.shape, generator=generator).clamp_min(1e-20)
    weights = torch.softmax((logits - torch.log(-torch.log(uniform))) / tau, -1)
    return floor + weights[..., 1]


def quantized(model: CodecModel, y: torch.Tensor, z: torch.Tensor | None, rounding
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(y_hat, z_hat, y's density parameters) with `rounding` applied to z and to y (to y's residual
    around its centres on the mean grid, whose centres depend on z_hat: model.quantize_latents)."""
    if z is None:
        return rounding(y), None, None
    z_hat = rounding(z)
    if model.on_mean_grid:
        y_hat, params = model.quantize_latents(y, z_hat, rounding, detach_contexts=False)
        return y_hat, z_hat, params
    y_hat = rounding(y)
    return y_hat, z_hat, model.hyper_params(z_hat, y_hat)


def per_image_loss(model: CodecModel, x: torch.Tensor, y_hat: torch.Tensor, z_hat: torch.Tensor | None,
                   params: torch.Tensor | None) -> torch.Tensor:
    """R + lambda * D per image (N,), in the training objective's units (bits per pixel, 255^2 MSE)."""
    likelihoods = model.likelihoods(y_hat) if z_hat is None else model.likelihoods(y_hat, z_hat, params)
    x_hat = model.synthesise(y_hat, tuple(x.shape[-2:]))
    return bits_per_pixel_per_sample(likelihoods, x) + model.lmbda * distortion_per_sample(model.distortion, x_hat, x)


def refine(model: CodecModel, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor | None, steps: int
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y_hat, z_hat for the batch x (integer-valued floats; y_hat on the mean grid for such a model),
    starting from the encoder's unrounded y, z."""
    if steps == 0:  # plain rounding (no h_s pass: the coder computes the rows itself)
        return quantized(model, y, z, torch.round)[:2] if model.on_mean_grid else \
            (torch.round(y), None if z is None else torch.round(z))
    generator = torch.Generator().manual_seed(SEED)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            start = [y] if z is None else [y, z]
            # Adam moves every value by about lr per step: in units of each image's own spread of
            # values, so that one rate suits 28x28 images (y std ~1) and photos (std ~2.5) alike
            spreads = [v.detach().flatten(1).std(1).clamp_min(SPREAD_MIN).view(-1, 1, 1, 1) for v in start]
            free = [(v.detach() / s).requires_grad_(True) for v, s in zip(start, spreads)]
            optimizer = torch.optim.Adam(free, lr=LEARNING_RATE)
            for step in range(steps):
                tau = temperature(step, steps)
                scaled = [u * s for u, s in zip(free, spreads)]
                soft = quantized(model, scaled[0], scaled[1] if z is not None else None,
                                 lambda v: soft_round(v, tau, generator))  # noqa: B023 (called right here)
                loss = per_image_loss(model, x, *soft).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            unscaled = [v.detach() * s for v, s in zip(free, spreads)]
            pair = lambda vs: (vs[0], vs[1] if z is not None else None)  # noqa: E731
            plain, refined = quantized(model, *pair(start), torch.round), quantized(model, *pair(unscaled), torch.round)
            keep = per_image_loss(model, x, *refined) < per_image_loss(model, x, *plain)
            chosen = [None if r is None else torch.where(keep.view(-1, 1, 1, 1), r, p)
                      for r, p in zip(refined[:2], plain[:2])]
        return chosen[0], chosen[1]
    finally:
        for p in frozen:
            p.requires_grad_(True)
