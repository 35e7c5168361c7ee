"""`codec`: a learned image codec (Ballé 2017 factorized / 2018 scale hyperprior / Minnen 2018 mean-scale / Minnen & Singh 2020 channel-wise), registered here.

Only the networks live in aeopt.models.codec; the bitstream (integer tables, entropy coding, the
file container) and the commands are aeopt.codec.
"""
from __future__ import annotations

import math

from ...errors import AeoptError
from ..registry import register_model
from .model import CHANNEL_SLICES, MEAN_MODELS, CodecModel
from .objective import CodecObjective

ENTROPY_MODELS = ("factorized", "hyperprior", "meanscale", "channelwise")
DISTORTIONS = ("mse", "ms-ssim")
RATE_QUANTIZATION = ("noise", "ste")
LATENT_GRIDS = ("integer", "mean")
HYPER_INPUTS = ("abs", "signed")
# CompressAI's bmshj2018 lambdas for quality 1..8 (R in bpp + lambda * 255^2 * MSE, or * (1 - MS-SSIM)).
QUALITY_LMBDA = {"mse": (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800),
                 "ms-ssim": (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00)}
SMALL_IMAGE = 64  # images smaller than this get two stride-2 stages (28x28 -> 7x7), larger ones four


def resolve_lmbda(lmbda: float | None, quality: int | None, distortion: str) -> float:
    """--lmbda wins; else --quality's preset; else quality 3 (about 0.3 bpp on photos)."""
    if lmbda is not None:
        if not (isinstance(lmbda, (int, float)) and math.isfinite(lmbda) and lmbda > 0):
            raise AeoptError(f"--lmbda must be a positive number, got {lmbda!r}")
        return float(lmbda)
    if quality is None:
        quality = 3
    if not isinstance(quality, int) or not 1 <= quality <= 8:
        raise AeoptError(f"--quality must be an integer 1..8, got {quality!r}")
    return QUALITY_LMBDA[distortion][quality - 1]


@register_model("codec", "learned image codec (Ballé 2017/2018): `aeopt compress` / `aeopt decompress`")
def codec(input_shape, latent_dim, output, entropy="factorized", lmbda=None, quality=None, distortion="mse",
          width=None, depth=None, hyper_width=None, rate_quantization="noise",
          latent_grid="integer", hyper_input="abs", blocks=0, decoder_blocks=0) -> CodecModel:
    """Args (knobs):
        entropy: factorized (one density per latent channel) | hyperprior (a scale hyperprior) |
            meanscale (a mean-scale hyperprior: h_s also predicts each element's mean) | channelwise
            (mean-scale, then y coded in 4 channel slices, each conditioned on those before it).
        lmbda: rate-distortion trade-off, R [bpp] + lmbda * D; bigger = better quality, more bytes.
        quality: 1..8, CompressAI's lambda presets (used when lmbda is not given); 6..8 also widen the
            default width.
        distortion: mse | ms-ssim.
        width: channels of the transforms (N; default 32 for small images, 64 for photos; 48 / 96 at quality 6..8).
        depth: stride-2 stages of g_a (default 2 below 64 pixels, else 4).
        hyper_width: channels of the hyperprior's h_a, h_s and z (default: width). The decoder runs h_s
            in integer arithmetic, its costliest step on small images; a narrower one decodes faster
            (benchmarks/results/codec.md measures the trade).
        rate_quantization: noise (additive uniform noise, Ballé et al.; the default) | ste (round(), the
            integers the coder codes, with a straight-through gradient). ste trained worse on
            Fashion-MNIST (benchmarks/results/design_notes.md); it is there for experiments.
        latent_grid: integer (y_hat = round(y); the default, what runs trained before this choice used) |
            mean (meanscale / channelwise only: y_hat = mu_q + round(y - mu_q), the grid following
            h_s's mean quantized to 1/8; fewer bits, no validation drift: benchmarks/results/codec.md).
        hyper_input: abs (h_a sees |y|; the default, what runs trained before this choice used: the scale
            hyperprior's input, which carries no sign) | signed (meanscale / channelwise only: h_a sees y,
            as in Minnen et al. 2018 and CompressAI's mean-scale models, so h_s can predict the means'
            signs, not only biases of position: benchmarks/results/design_notes.md).
        blocks: residual units (two 3x3 convs) after each inner stage of g_a: a stronger encoder, the
            decoder's work unchanged (default 0; measured: little on its own, the decoder's units do most). Each starts as the identity, so `--init` can start from
            a run trained without them (benchmarks/results/design_notes.md, "Residual units").
        decoder_blocks: the same in g_s: a stronger decoder, more decode work (default 0).
        latent_dim is M, the channels of the spatial latent y.
    """
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise AeoptError(f"the codec needs grey or RGB images (1 or 3 channels), got samples of shape "
                         f"{tuple(input_shape)}")
    for what, value, known in (("entropy model", entropy, ENTROPY_MODELS), ("distortion", distortion, DISTORTIONS),
                               ("rate quantization", rate_quantization, RATE_QUANTIZATION),
                               ("latent grid", latent_grid, LATENT_GRIDS),
                               ("hyperprior input", hyper_input, HYPER_INPUTS)):
        if value not in known:
            raise AeoptError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    if entropy == "channelwise" and latent_dim % CHANNEL_SLICES:
        raise AeoptError(f"--entropy channelwise codes y in {CHANNEL_SLICES} channel slices: --latent-dim must be "
                         f"a multiple of {CHANNEL_SLICES}, got {latent_dim}")
    if entropy not in MEAN_MODELS:
        for flag, asked, why in (("--latent-grid mean", latent_grid == "mean", "follows h_s's means"),
                                 ("--hyper-input signed", hyper_input == "signed", "lets h_s predict the means' signs")):
            if asked:
                raise AeoptError(f"{flag} {why}: it needs --entropy meanscale or channelwise, not {entropy}")
    lmbda = resolve_lmbda(lmbda, quality, distortion)
    small = min(input_shape[1:]) < SMALL_IMAGE
    if width is None:  # the top qualities get wider transforms, as in Ballé et al. (N = 128 -> 192 there)
        width = (32 if small else 64) if quality is None or quality <= 5 else (48 if small else 96)
    depth = (2 if small else 4) if depth is None else depth
    hyper_width = width if hyper_width is None else hyper_width
    for what, value in (("--width", width), ("--depth", depth), ("--hyper-width", hyper_width)):
        if not isinstance(value, int) or value < 1:
            raise AeoptError(f"{what} must be a positive integer, got {value!r}")
    for what, value in (("--blocks", blocks), ("--decoder-blocks", decoder_blocks)):
        if not isinstance(value, int) or value < 0:
            raise AeoptError(f"{what} must be an integer >= 0, got {value!r}")
    return CodecModel(tuple(input_shape), entropy=entropy, width=width, latent=latent_dim, depth=depth,
                      lmbda=lmbda, distortion=distortion, output=output, hyper_width=hyper_width,
                      rate_quantization=rate_quantization, latent_grid=latent_grid,
                      hyper_input=hyper_input, blocks=blocks, decoder_blocks=decoder_blocks)


__all__ = ["CodecModel", "CodecObjective", "codec"]
