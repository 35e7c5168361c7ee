"""The codec's four transforms (Ballé et al. 2018): g_a, g_s (image <-> latent y) and h_a, h_s
(y <-> hyper-latent z, hyperprior only).

g_a is `depth` stride-2 5x5 convs with GDN between them; g_s mirrors it with transposed convs and
IGDN. Optional residual units (`blocks`, `decoder_blocks`) after each inner GDN / IGDN add stride-1
3x3 convs at that resolution, more computation per pixel (as Cheng et al. 2020's residual blocks);
each starts as the identity, so a run can warm-start from one trained without them.
h_s upsamples by sub-pixel convolution (3x3 conv to 4x the channels, then PixelShuffle) rather than
transposed convs, because the decoder evaluates h_s in integer arithmetic
(aeopt/codec/intnet.py) and conv + reshuffle is the simplest exact integer form.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import Residual
from .gdn import GDN, igdn


class ResidualUnit(Residual):
    """x + conv(relu(conv(x))), 3x3 convs, the second one zero at the start: an identity until trained,
    which is what lets `--init` load a run without these units (their parameters start fresh)."""

    fresh_identity = True  # runs.warm_start: missing parameters of this module start as above

    def __init__(self, channels: int):
        super().__init__(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(channels, channels, 3, padding=1)))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)


def analysis(in_channels: int, width: int, latent: int, depth: int, blocks: int = 0) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(depth):
        out = latent if i == depth - 1 else width
        layers.append(nn.Conv2d(channels, out, 5, stride=2, padding=2))
        if i < depth - 1:
            layers.append(GDN(out))
            layers += [ResidualUnit(out) for _ in range(blocks)]
        channels = out
    return _numbered(layers)


def _numbered(layers: list[nn.Module]) -> nn.Sequential:
    """nn.Sequential(*layers), but a residual unit is named after the layer before it ("1r0", "1r1"), so
    the other layers keep the names (and checkpoint keys) they have without residual units."""
    named, plain, extra = OrderedDict(), 0, 0
    for layer in layers:
        if isinstance(layer, ResidualUnit):
            named[f"{plain - 1}r{extra}"] = layer
            extra += 1
        else:
            named[str(plain)] = layer
            plain, extra = plain + 1, 0
    return nn.Sequential(named)


class UpConv(nn.ConvTranspose2d):
    """A 5x5 stride-2 transposed conv (padding 2, output padding 1) that, outside training (and in
    CPU training of a narrow last layer: `_sub_pixel_trains_faster`), runs as its sub-pixel form:
    a 3x3 conv to 4x the channels, then PixelShuffle(2). The same function (each output phase sees
    a 3x3 window of the input, taps the transposed kernel never reaches are zero) and the same
    parameters, so checkpoints are unchanged. CPU convolution kernels are better tuned
    than transposed ones: the fast Fashion-MNIST g_s runs 1.3x faster this way, the default one the
    same (benchmarks/results/codec_kernels.md)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 5, stride=2, padding=2, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not _sub_pixel_trains_faster(x, self.out_channels):
            return super().forward(x)
        return F.pixel_shuffle(F.conv2d(x, sub_pixel_weight(self.weight), self.bias.repeat_interleave(4), padding=1), 2)


NARROW_OUT_CHANNELS = 3  # an image's channels: g_s's last layer


def _sub_pixel_trains_faster(x: torch.Tensor, out_channels: int) -> bool:
    """Training on a CPU in fp32 / fp64, g_s's last layer (few outputs) runs forward and backward faster
    as its sub-pixel conv than in oneDNN's transposed kernel, its wide layers slower (layer timings:
    benchmarks/results/design_notes.md; on the whole photo step a small gain, codec_train_step.md).
    GPUs and bf16 keep the transposed kernel."""
    return (out_channels <= NARROW_OUT_CHANNELS and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu"))


# Output phase p (0 or 1) of a 5-tap stride-2 transposed conv with padding 2 takes input offset t - 1
# (t = 0, 1, 2) through kernel tap p + 4 - 2t; tap 5 (p = 1, t = 0) does not exist.
_TAPS = torch.tensor([[4, 2, 0], [5, 3, 1]])


def sub_pixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """(in, out, 5, 5) transposed-conv weight -> (4 * out, in, 3, 3) conv weight, channel 4o + 2py + px
    holding output phase (py, px): the order PixelShuffle(2) reads."""
    padded = F.pad(weight, (0, 1, 0, 1))  # tap 5 reads a zero
    w = padded[:, :, _TAPS[:, :, None, None], _TAPS[None, None, :, :]]  # (in, out, py, ty, px, tx)
    return w.permute(1, 2, 4, 0, 3, 5).reshape(4 * weight.shape[1], weight.shape[0], 3, 3)


def synthesis(out_channels: int, width: int, latent: int, depth: int, blocks: int = 0) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = latent
    for i in range(depth):
        out = out_channels if i == depth - 1 else width
        layers.append(UpConv(channels, out))
        if i < depth - 1:
            layers.append(igdn(out))
            layers += [ResidualUnit(out) for _ in range(blocks)]
        channels = out
    return _numbered(layers)


HYPER_STRIDE = 4  # h_a downsamples y twice: one z value summarizes a 4x4 block of y


def hyper_analysis(latent: int, hyper: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(latent, hyper, 3, padding=1), nn.ReLU(),
        nn.Conv2d(hyper, hyper, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(hyper, hyper, 5, stride=2, padding=2))


def hyper_synthesis(latent: int, hyper: int, means: bool = False) -> nn.Sequential:
    """Output: log-scale of y's Gaussian, one per element of y (then, with `means`, its mean: 2M channels).

    Only Conv2d (3x3, padding 1), PixelShuffle and ReLU: the layer types intnet.py evaluates.
    """
    return nn.Sequential(
        nn.Conv2d(hyper, 4 * hyper, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
        nn.Conv2d(hyper, 4 * hyper, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
        nn.Conv2d(hyper, 2 * latent if means else latent, 3, padding=1))


def channel_context(in_channels: int, width: int, out_channels: int) -> nn.Sequential:
    """A channel-wise context net (Minnen & Singh 2020): one slice's hyperprior parameters and the
    slices decoded before it -> a correction to that slice's log-scales and means. 3x3 convs and
    ReLU only (intnet.py evaluates it in integers); the last conv starts at zero, so training starts
    from the mean-scale model."""
    net = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(width, out_channels, 3, padding=1))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net
