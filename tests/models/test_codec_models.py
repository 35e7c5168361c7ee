"""The codec's networks: any size, grey and RGB, the objective's parts, the knobs' errors."""
import math

import pytest
import torch

from aeopt.errors import AeoptError
from aeopt.models import create_model, model_knobs
from aeopt.models.codec import CodecObjective
from aeopt.models.codec.entropy import EntropyBottleneck, GaussianConditional
from aeopt.models.codec.gdn import GDN
from aeopt.models.codec.msssim import ms_ssim_per_sample


@pytest.mark.parametrize("entropy", ["factorized", "hyperprior", "meanscale", "channelwise"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 37, 50), (1, 5, 9)])
def test_any_size_grey_and_rgb(entropy, shape):
    torch.manual_seed(0)
    model = create_model("codec", shape, 4, entropy=entropy, lmbda=0.01, width=8).eval()
    x = torch.rand(2, *shape)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert set(out["likelihoods"]) == ({"y"} if entropy == "factorized" else {"y", "z"})
    for p in out["likelihoods"].values():
        assert (p > 0).all() and (p <= 1).all()
    y = model.analyse(x)
    stride = model.stride
    assert y.shape[-2:] == (math.ceil(shape[1] / stride), math.ceil(shape[2] / stride))


def test_objective_parts_and_parameter_split():
    torch.manual_seed(0)
    model = create_model("codec", (1, 16, 16), 4, entropy="hyperprior", lmbda=0.02, width=8)
    objective = CodecObjective(model.lmbda)
    x = torch.rand(4, 1, 16, 16)
    parts, out = objective.compute(model, x, x)
    assert {"loss", "rate", "bpp", "distortion", "psnr"} <= set(parts)
    assert parts["loss"].item() == pytest.approx(parts["bpp"].item() + 0.02 * parts["distortion"].item(), rel=1e-5)
    bits = sum(-torch.log2(p).sum() for p in out["likelihoods"].values())
    assert parts["bpp"].item() == pytest.approx(bits.item() / (4 * 16 * 16), rel=1e-5)
    main = {id(p) for p in objective.main_parameters(model)}
    quantiles = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    assert quantiles and all(id(q) not in main for q in quantiles)
    assert len(main) + len(quantiles) == len(list(model.parameters()))


def test_aux_step_moves_only_the_quantiles_toward_the_tails():
    torch.manual_seed(0)
    model = create_model("codec", (1, 8, 8), 4, lmbda=0.01, width=8)
    step = CodecObjective(0.01).extra_steps(model)["aux"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    first = step.step({}, torch.zeros(1))["aux"].item()
    for _ in range(200):
        last = step.step({}, torch.zeros(1))["aux"].item()
    assert last < first
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != n.endswith("quantiles"), n


def test_density_sums_to_one_and_gaussian_table_is_normalized():
    torch.manual_seed(0)
    density = EntropyBottleneck(3)
    v = torch.arange(-2000, 2001, dtype=torch.float32).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    assert density.likelihood(v).sum(-1).flatten().tolist() == pytest.approx([1, 1, 1], abs=1e-4)
    low, pmf = GaussianConditional.pmf_table(torch.tensor([0.11, 1.0, 20.0], dtype=torch.float64))
    assert pmf.sum(1).tolist() == pytest.approx([1, 1, 1], abs=1e-8)
    assert low.tolist()[0] > low.tolist()[2]


def test_gdn_divides_igdn_multiplies_and_a_zero_beta_stays_finite():
    gdn, igdn = GDN(4), GDN(4, inverse=True)
    x = 3 * torch.randn(2, 4, 5, 5)
    assert (gdn(x).abs() < x.abs() + 1e-6).all() and (igdn(x).abs() > x.abs() - 1e-6).all()
    assert torch.equal(torch.sign(gdn(x)), torch.sign(x))
    with torch.no_grad():
        gdn.beta_sqrt.fill_(0)
    assert torch.isfinite(gdn(torch.zeros(1, 4, 2, 2))).all()


def test_ms_ssim_identical_is_one_and_small_images_work():
    x = torch.rand(2, 1, 28, 28)
    assert ms_ssim_per_sample(x, x).tolist() == pytest.approx([1, 1], abs=1e-5)
    assert (ms_ssim_per_sample(torch.rand(2, 1, 28, 28), x) < 0.5).all()


@pytest.mark.parametrize("knobs, message", [
    ({"entropy": "gaussian"}, "unknown entropy model 'gaussian'"),
    ({"distortion": "l1"}, "unknown distortion 'l1'"),
    ({"lmbda": -1.0}, "--lmbda must be a positive number"),
    ({"quality": 9}, "--quality must be an integer 1..8"),
    ({"width": 0}, "--width must be a positive integer"),
])
def test_bad_knobs_name_the_value(knobs, message):
    with pytest.raises(AeoptError, match=message):
        create_model("codec", (1, 28, 28), 8, **knobs)


def test_registry_lists_the_codec_knobs_and_quality_presets():
    assert {"entropy", "lmbda", "quality", "distortion", "width", "depth"} <= set(model_knobs("codec"))
    assert create_model("codec", (1, 8, 8), 4, quality=1).lmbda == 0.0018
    assert create_model("codec", (1, 8, 8), 4, quality=8, distortion="ms-ssim").lmbda == 220.0
    with pytest.raises(AeoptError, match="grey or RGB"):
        create_model("codec", (2, 8, 8), 4)


def test_integer_conv_is_exact_at_its_bounds():
    """The float64 product in intnet is exact for the clipped ranges: compare with an int64 sum."""
    import numpy as np

    from aeopt.codec import intnet

    rng = np.random.default_rng(0)
    limit_a, limit_w = 2 ** (intnet.ACT_LIMIT_LOG2 + intnet.A_BITS), 2 ** (intnet.WEIGHT_LIMIT_LOG2 + intnet.W_BITS)
    a = rng.choice([-limit_a, limit_a - 1], (2, 455, 3, 4)).astype(np.int64)
    w = rng.choice([-limit_w + 1, limit_w - 1], (5, 455, 3, 3)).astype(np.int64)
    padded = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = sum(np.einsum("oc,nchw->nohw", w[:, :, dy, dx], padded[:, :, dy:dy + 3, dx:dx + 4])
                   for dy in range(3) for dx in range(3))
    out = intnet._conv3x3(a.transpose(0, 2, 3, 1).astype(np.float64), intnet.conv_matrix(w), (3, 4))  # channels last
    assert np.array_equal(out.transpose(0, 3, 1, 2).astype(np.int64), expected)
