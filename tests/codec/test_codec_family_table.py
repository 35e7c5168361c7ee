"""The tiered-family benchmark: points carried from an earlier format keep their meaning in format 4."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks/
from benchmarks.codec_family import _carried, as_format4  # noqa: E402

COMMITTED = {"machine": "AMD EPYC", "families": [
    {"prefix": "fmcg2", "width": 32, "latent": 16, "hyper_width": 16, "entropy": "channelwise",
     "latent_grid": "mean", "precision": "bf16",
     "points": [{"lmbda": 0.002, "bytes_per_image": 54.5, "bpp": 8 * 54.5 / 784, "batch_bpp": 0.46, "psnr": 26.4}]}]}


def test_a_format_3_point_loses_the_two_check_bytes_per_file_and_nothing_else():
    point = COMMITTED["families"][0]["points"][0]
    four = as_format4(point)
    assert four["bytes_per_image"] == pytest.approx(52.5) and four["bpp"] == pytest.approx(8 * 52.5 / 784)
    assert four["batch_bpp"] == point["batch_bpp"] and four["psnr"] == point["psnr"]  # the many-image file
    assert four["format"] == 4 and "derived" in four and "derived" not in point
    assert as_format4(four) == four  # already format 4: as measured


def test_a_run_not_cached_is_carried_with_its_family_shape_and_machine():
    carried = _carried("fmcg2-0.002", COMMITTED)
    assert carried["run"] == "fmcg2-0.002" and carried["carried_from"] == "AMD EPYC"
    assert (carried["width"], carried["latent"], carried["precision"]) == (32, 16, "bf16")
    assert carried["bytes_per_image"] == pytest.approx(52.5)
    with pytest.raises(SystemExit, match="fmcg2-0.005"):
        _carried("fmcg2-0.005", COMMITTED)
