"""The learned image codec's network: g_a -> quantize -> entropy model -> g_s (Ballé 2017 / 2018).

`entropy="factorized"`: y has one learned density per channel (EntropyBottleneck).
`entropy="hyperprior"`: a second latent z = h_a(|y|) is coded with a factorized density, and
h_s(z_hat) predicts a log-scale for every element of y (GaussianConditional).
`entropy="meanscale"` (Minnen et al. 2018's mean-scale hyperprior, without the spatial context): h_s
predicts a mean too, so y's Gaussian is centred where g_a puts each element instead of at zero.
With `latent_grid="integer"` (what such runs were trained with before the choice existed) y_hat
stays round(y): the mean moves the density, not the quantization grid (the coder then needs one table
per mean phase, tables.py). With `latent_grid="mean"` the grid follows the mean: y_hat =
mu_q + round(y - mu_q), mu_q the mean on a 1/MEAN_PHASES grid (the bin centres (j + 1/2) / 8, what
the integer h_s computes exactly), so the coded residual is centred and the noisy training rate, taken
around mu_q, bounds the coded rate again; with the integer grid it stopped doing so once the means were
predicted within a fraction of a unit, and validation drifted (design_notes.md, "Means and channel
contexts").
`entropy="channelwise"` (Minnen & Singh 2020, without their latent residual prediction): the
mean-scale hyperprior, then y coded in CHANNEL_SLICES slices of channels, each slice's scales and
means corrected by a context net that sees the slices decoded before it. The model is fully
convolutional: `forward` pads the image (edge-replicated, which costs almost no bits) to a
multiple of the stride and crops the reconstruction back, so any size works; grey and RGB alike.

Training quantization: additive uniform noise for the rate (the noisy density upper-bounds the
discrete one) and straight-through rounding for the distortion, so g_s learns on the integers it
will decode at test time (Minnen & Singh 2020's mixed scheme); `rate_quantization="ste"` rounds
for the rate too (straight-through), so the rate trained on is the one the coder pays (y's and z's).
In eval mode both use round().
The bitstream side (integer tables, integer h_s, the container) is aeopt/codec/.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..base import Autoencoder
from .entropy import SCALE_MAX, SCALE_MIN, EntropyBottleneck, GaussianConditional
from .transforms import HYPER_STRIDE, analysis, channel_context, hyper_analysis, hyper_synthesis, synthesis

CHANNEL_SLICES = 4  # Minnen & Singh found 10 slices of 320 channels best; y here has 16-64 channels
MEAN_MODELS = ("meanscale", "channelwise")  # h_s predicts means: what the mean grid and a signed h_a need
MEAN_PHASES = 8  # the mean grid's resolution: a mean is at most 1/16 from its bin centre


def quantize(y: torch.Tensor, mode) -> torch.Tensor:
    """y by `mode`: noise | ste | none | round, or a function of y (refine's soft rounding)."""
    if callable(mode):
        return mode(y)
    if mode == "noise":
        return y + torch.empty_like(y).uniform_(-0.5, 0.5)
    if mode == "ste":
        return y + (torch.round(y) - y).detach()
    if mode == "none":  # the values as given (hyper_params on latents already quantized, or refine's soft ones)
        return y
    return torch.round(y)


class CodecModel(Autoencoder):
    def __init__(self, input_shape: tuple[int, ...], *, entropy: str, width: int, latent: int, depth: int,
                 lmbda: float, distortion: str, output: str, hyper_width: int | None = None,
                 rate_quantization: str = "noise", latent_grid: str = "integer", hyper_input: str = "abs",
                 blocks: int = 0, decoder_blocks: int = 0):
        channels = input_shape[0]
        super().__init__(analysis(channels, width, latent, depth, blocks),
                         synthesis(channels, width, latent, depth, decoder_blocks), input_shape, latent, output)
        self.blocks, self.decoder_blocks = blocks, decoder_blocks
        self.entropy, self.width, self.depth = entropy, width, depth
        self.lmbda, self.distortion = lmbda, distortion
        self.rate_quantization = rate_quantization  # training only: eval rounds
        self.latent_grid = latent_grid  # "mean": y_hat = mu_q + round(y - mu_q) (the mean-scale models)
        self.hyper_input = hyper_input  # "signed": h_a sees y, not |y| (the mean-scale models)
        self.stride = 2 ** depth
        self.hyper_width = hyper_width or width  # the channels of z
        if self.has_hyperprior:
            self.hyper_encoder = hyper_analysis(latent, self.hyper_width)
            self.hyper_decoder = hyper_synthesis(latent, self.hyper_width, means=entropy != "hyperprior")
            self.z_density = EntropyBottleneck(self.hyper_width)
            self.y_density = GaussianConditional()
        else:
            self.y_density = EntropyBottleneck(latent)
        if entropy == "channelwise":
            k = latent // CHANNEL_SLICES
            self.contexts = nn.ModuleList(channel_context(2 * k + s * k, self.hyper_width, 2 * k)
                                          for s in range(1, CHANNEL_SLICES))

    @property
    def has_hyperprior(self) -> bool:
        """Whether a hyper-latent z is coded (and h_s chooses y's tables)."""
        return self.entropy in ("hyperprior", "meanscale", "channelwise")

    # --- shapes -----------------------------------------------------------------------------
    def pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    @staticmethod
    def pad_latent(y: torch.Tensor) -> torch.Tensor:
        """y padded with zeros to a multiple of the hyper stride (h_a's input)."""
        h, w = y.shape[-2:]
        return F.pad(y, (0, -w % HYPER_STRIDE, 0, -h % HYPER_STRIDE))

    # --- the pieces the coder calls -----------------------------------------------------------
    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        """y = g_a(x), unquantized, for an image batch in [0, 1]."""
        return self.encoder(self.pad(x.float()))

    def hyper_analyse(self, y: torch.Tensor) -> torch.Tensor:
        return self.hyper_encoder(self.pad_latent(y if self.hyper_input == "signed" else y.abs()))

    @property
    def has_means(self) -> bool:
        return self.entropy in MEAN_MODELS

    @property
    def on_mean_grid(self) -> bool:
        return self.has_means and self.latent_grid == "mean"

    def hyper_params(self, z_hat: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """y's density parameters given z_hat (and, channel-wise, y_hat's earlier slices): log-scales
        (M channels), then means for the mean-scale models (M more). Integer grid only: on the mean
        grid y_hat itself depends on the means, slice by slice (quantize_latents)."""
        return self.quantize_latents(y_hat, z_hat, "none", detach_contexts=False)[1]

    def quantize_latents(self, y: torch.Tensor, z_hat: torch.Tensor, mode: str, *, detach_contexts: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(y_hat, params) for a hyperprior: y quantized by `mode` (round / ste / noise) on the model's
        grid, and y's density parameters (log-scales, then the density's centres for the mean-scale
        models: mu_q on the mean grid, h_s's means on the integer grid). Channel-wise, slice s's
        parameters come from the slices before it, their y_hat detached in training (design_notes.md)."""
        m = self.latent_dim
        base = self.hyper_decoder(z_hat)[..., :y.shape[-2], :y.shape[-1]]
        if not self.has_means:
            return quantize(y, mode), base
        slices = CHANNEL_SLICES if self.entropy == "channelwise" else 1
        k = m // slices
        scales, centres, y_hats = [], [], []
        for s in range(slices):
            part = slice(s * k, (s + 1) * k)
            own = torch.cat([base[:, part], base[:, m + s * k:m + (s + 1) * k]], 1)
            if s:
                before = torch.cat(y_hats, 1)
                before = before.detach() if detach_contexts else before
                own = own + self.contexts[s - 1](torch.cat([own, before.to(own.dtype)], 1))
            scale, mean = own[:, :k], own[:, k:]
            if self.on_mean_grid:
                mean = mean.float()
                grid = (torch.floor(mean * MEAN_PHASES) + 0.5) / MEAN_PHASES
                mean = mean + (grid - mean).detach()  # straight-through: h_s still learns its means
                y_hats.append(mean + quantize(y[:, part] - mean, mode))
            else:
                y_hats.append(quantize(y[:, part], mode))
            scales.append(scale)
            centres.append(mean)
        # fp32: a bf16 mean would leave the 1/16 grid above |16| (the densities are fp32 anyway)
        return torch.cat(y_hats, 1), torch.cat([t.float() for t in scales + centres], 1)

    def synthesise(self, y_hat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x_hat in [0, 1], cropped to `size` (height, width)."""
        return self.decoder(y_hat)[..., :size[0], :size[1]].clamp(0, 1)

    def likelihoods(self, y: torch.Tensor, z: torch.Tensor | None = None,
                    params: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """P of every element of y (and z, given h_s's hyper_params for y) under the densities: what
        the rate is measured with, in training and in the encoder's search (codec/refine.py)."""
        with torch.autocast(y.device.type, enabled=False):  # densities in fp32 even in a bf16 run: tiny tails
            if not self.has_hyperprior:
                return {"y": self.y_density.likelihood(y.float())}
            params = params.float()
            m = y.shape[1]
            scale = torch.exp(params[:, :m]).clamp(SCALE_MIN, SCALE_MAX)
            mean = params[:, m:] if self.entropy != "hyperprior" else None
            return {"z": self.z_density.likelihood(z.float()), "y": self.y_density.likelihood(y.float(), scale, mean)}

    # --- training / evaluation forward ---------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.analyse(x)
        rate_mode, dist_mode = (self.rate_quantization, "ste") if self.training else ("round", "round")
        # the rate of y + noise, or else of y_hat itself (ste, eval): noise is uniform, so y + noise is
        # as far from either grid's bin centre as it would be from the other's
        y_noisy = quantize(y, "noise") if rate_mode == "noise" else None
        if self.has_hyperprior:
            z = self.hyper_analyse(y)
            z_tilde = quantize(z, rate_mode)
            y_dist, params = self.quantize_latents(y, z_tilde, dist_mode)
            likelihoods = self.likelihoods(y_dist if y_noisy is None else y_noisy, z_tilde, params)
        else:
            y_dist = quantize(y, dist_mode)
            likelihoods = self.likelihoods(y_dist if y_noisy is None else y_noisy)
        logits = self.decoder(y_dist)[..., :x.shape[-2], :x.shape[-1]]
        return {"x_hat": logits.clamp(0, 1), "logits": logits, "z": y, "likelihoods": likelihoods}

    def objective(self, settings=None, *, in_unit_range: bool = True, steps_per_epoch: int = 0):
        """The codec trains on R + lambda * D (CodecObjective), whatever --loss says."""
        from .objective import CodecObjective

        return CodecObjective(self.lmbda, self.distortion)

    def densities(self) -> list[EntropyBottleneck]:
        return [m for m in self.modules() if isinstance(m, EntropyBottleneck)]

    def aux_loss(self) -> torch.Tensor:
        return sum(d.aux_loss() for d in self.densities())

    @torch.no_grad()
    def reconstruct_quantized(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder will output for x (float, before the 8-bit rounding): g_s(y_hat), y_hat =
        round(g_a(x)) on the integer grid; on the mean grid from the float h_s's means, which the
        integer h_s matches except where fixed-point rounding moves a mean across a bin (rare)."""
        y = self.analyse(x)
        if self.on_mean_grid:
            y_hat = self.quantize_latents(y, torch.round(self.hyper_analyse(y)), "round")[0]
        else:
            y_hat = torch.round(y)
        return self.synthesise(y_hat, x.shape[-2:])
