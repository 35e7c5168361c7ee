"""The learned image codec's network: g_a -> quantize -> entropy model -> g_s (Ballé 2017 / 2018).

`entropy="factorized"`: y has one learned density per channel (EntropyBottleneck).
`entropy="hyperprior"`: a second latent z = h_a(|y|) is coded with a factorized density, and
h_s(z_hat) predicts a log-scale for every element of y (GaussianConditional).
`entropy="meanscale"` (Minnen et al. 2018's mean-scale hyperprior, without the spatial context): h_s
predicts a mean too, so y's Gaussian is centred where g_a puts each element instead of at zero.
y_hat stays round(y): the mean moves the density, not the quantization grid, so g_s decodes the
same integers as under the scale-only model and the coder's table choice stays integer arithmetic
(the mean is quantized to 1/MEAN_PHASES by the integer h_s, tables.py).
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


def quantize(y: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "noise":
        return y + torch.empty_like(y).uniform_(-0.5, 0.5)
    if mode == "ste":
        return y + (torch.round(y) - y).detach()
    return torch.round(y)


class CodecModel(Autoencoder):
    def __init__(self, input_shape: tuple[int, ...], *, entropy: str, width: int, latent: int, depth: int,
                 lmbda: float, distortion: str, output: str, hyper_width: int | None = None,
                 rate_quantization: str = "noise"):
        channels = input_shape[0]
        super().__init__(analysis(channels, width, latent, depth), synthesis(channels, width, latent, depth),
                         input_shape, latent, output)
        self.entropy, self.width, self.depth = entropy, width, depth
        self.lmbda, self.distortion = lmbda, distortion
        self.rate_quantization = rate_quantization  # training only: eval rounds
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
        return self.hyper_encoder(self.pad_latent(y.abs()))

    def hyper_params(self, z_hat: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """y's density parameters given z_hat (and, channel-wise, y_hat's earlier slices): log-scales
        (M channels), then means for the mean-scale models (M more)."""
        base = self.hyper_decoder(z_hat)[..., :y_hat.shape[-2], :y_hat.shape[-1]]
        return self.channel_params(base, y_hat) if self.entropy == "channelwise" else base

    def channel_params(self, base: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """Slice s's (log-scales, means) = h_s's + contexts[s - 1](h_s's, y_hat's slices before s)."""
        m = self.latent_dim
        k = m // CHANNEL_SLICES
        scales, means = [base[:, :k]], [base[:, m:m + k]]
        for s in range(1, CHANNEL_SLICES):
            own = torch.cat([base[:, s * k:(s + 1) * k], base[:, m + s * k:m + (s + 1) * k]], 1)
            delta = self.contexts[s - 1](torch.cat([own, y_hat[:, :s * k].to(own.dtype)], 1))
            scales.append(own[:, :k] + delta[:, :k])
            means.append(own[:, k:] + delta[:, k:])
        return torch.cat(scales + means, 1)

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
        y_rate, y_dist = quantize(y, rate_mode), quantize(y, dist_mode)
        if self.has_hyperprior:
            z = self.hyper_analyse(y)
            z_tilde = quantize(z, rate_mode)
            # the context nets see the rounded y the decoder will have, detached: with the straight-through
            # gradient flowing back through them into g_a, the channel-wise model trained worse than the
            # mean-scale one on Fashion-MNIST (design_notes.md)
            likelihoods = self.likelihoods(y_rate, z_tilde, self.hyper_params(z_tilde, y_dist.detach()))
        else:
            likelihoods = self.likelihoods(y_rate)
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
        """What the decoder will output for x (float, before the 8-bit rounding): g_s(round(g_a(x)))."""
        return self.synthesise(torch.round(self.analyse(x)), x.shape[-2:])
