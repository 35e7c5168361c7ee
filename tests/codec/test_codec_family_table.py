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


def test_tier_rows_name_each_runs_residual_units_and_only_where_it_has_them():
    from benchmarks.codec_report import _family_rows, _tiers_lines

    peers = [{"codec": "WebP", "setting": q, "bpp": b, "psnr": p} for q, b, p in ((0, 1.0, 21.0), (50, 2.0, 31.0))]
    common = {"bpp": 0.8, "batch_bpp": 0.7, "batch_bytes_per_image": 68.6, "psnr": 29.8, "ms_ssim": 0.98, "epochs": 12, "train_seconds": 100,
              "width": 48, "latent": 32, "hyper_width": 16, "params": 1000, "lmbda": 0.005}
    plain = {**common, "run": "fmcgw2-0.005", "bytes_per_image": 80.0}
    grown = {**common, "run": "fmcgrd-0.005", "bytes_per_image": 70.0, "blocks": 2, "decoder_blocks": 1}
    rows = _family_rows([plain, grown], peers, tiers=True)
    assert rows[0].count("|") - 1 == len(rows[1].split("|")) - 2 == rows[2].count("|") - 1  # header, rule, rows agree
    assert "| 48 / 32 / 16 |" in rows[2] and "res." not in rows[2]
    assert "| 48 / 32 / 16 + 2 / 1 res. |" in rows[3]
    lines = _tiers_lines({"prefix": "t", "entropy": "channelwise", "latent_grid": "mean", "points": [plain, grown]},
                         {"test_images": 10})
    assert "residual units" not in lines[2] and "2 residual units in g_a and 1 in g_s" in lines[3]


def test_training_stages_say_where_the_lambda_differed_and_where_units_were_grown():
    from benchmarks.codec_report import _fm_training

    base = {"optimizer": "adamw", "weight_decay": 1e-4, "schedule": "cosine"}
    stages = [{**base, "epochs": 30, "lr": 1e-3, "lmbda": 0.0003},
              {**base, "epochs": 12, "lr": 1.5e-4, "lmbda": 0.0003, "blocks": 2, "decoder_blocks": 2},
              {**base, "epochs": 12, "lr": 3e-4, "lmbda": 0.002, "blocks": 2, "decoder_blocks": 2}]
    text = _fm_training({"aeopt": [{"stages": stages}]}, unit="")
    first, second, third = text.split(", then from those weights ")
    assert first.endswith("cosine) at lambda 0.0003") and "residual" not in first
    assert second.endswith("at lambda 0.0003, with 2 residual units in g_a and 2 in g_s added")
    assert third.endswith("cosine)")  # the run's own lambda, the units it started with
    old = [{**base, "epochs": 30, "lr": 1e-3}]  # stages recorded before lambdas and units were
    assert _fm_training({"aeopt": [{"stages": old}]}, unit="").endswith("cosine)")
