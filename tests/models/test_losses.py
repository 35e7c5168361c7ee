import pytest
import torch
import torch.nn.functional as F

from aeopt import AeoptError
from aeopt.models.losses import build_loss
from aeopt.metrics import psnr, ssim_per_sample


def _out(logits):
    return {"logits": logits, "x_hat": torch.sigmoid(logits), "z": torch.ones(len(logits), 2)}


def test_bce_on_logits_is_stable_for_huge_logits():
    x = torch.tensor([[1.0, 0.0]])
    loss = build_loss("bce", in_unit_range=True)(_out(torch.tensor([[200.0, -200.0]])), x)["loss"]
    assert torch.isfinite(loss) and float(loss) < 1e-6
    wrong = build_loss("bce", in_unit_range=True)(_out(torch.tensor([[-200.0, 200.0]])), x)["loss"]
    assert float(wrong) == pytest.approx(200.0, rel=1e-4)


def test_mix_is_the_weighted_sum_of_its_parts():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 12, 12)
    out = _out(torch.randn(4, 1, 12, 12))
    parts = build_loss("mse+0.2*ssim", in_unit_range=True)(out, x)
    assert float(parts["loss"]) == pytest.approx(float(parts["mse"] + 0.2 * parts["ssim"]), rel=1e-6)
    assert float(parts["mse"]) == pytest.approx(float(F.mse_loss(out["x_hat"], x)), rel=1e-6)


def test_auto_picks_bce_for_unit_data_and_mse_otherwise():
    assert build_loss("auto", in_unit_range=True).spec == "bce"
    assert build_loss("auto", in_unit_range=False).spec == "mse"


@pytest.mark.parametrize("spec, message", [("msee", "unknown loss 'msee'; known: mse"),
                                           ("mse+*ssim", "cannot read loss term"),
                                           ("bce", None)])
def test_bad_loss_specs(spec, message):
    if message is None:  # bce is refused for standardized (non-[0, 1]) data
        with pytest.raises(AeoptError, match="use --loss mse"):
            build_loss(spec, in_unit_range=False)
    else:
        with pytest.raises(AeoptError, match=message.replace("*", r"\*")):
            build_loss(spec, in_unit_range=True)


def test_sparse_l1_adds_the_code_magnitude():
    x = torch.rand(2, 3)
    out = {"x_hat": x.clone(), "logits": x.clone(), "z": torch.full((2, 4), -2.0)}
    parts = build_loss("mse", in_unit_range=True, sparse_l1=0.5)(out, x)
    assert float(parts["sparse_l1"]) == 2.0
    assert float(parts["loss"]) == pytest.approx(1.0)


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(ssim_per_sample(x, x), torch.ones(3), atol=1e-5)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert float(ssim_per_sample(noisy, x).mean()) < 0.9
    assert psnr(0.01) == pytest.approx(20.0)
