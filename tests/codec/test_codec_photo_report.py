"""The photo benchmark's families: a committed file from before families is carried as one scale
hyperprior named by its runs, and each family gets its own table and BD line in codec.md."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks/
from benchmarks.codec_photos import _carried_photos  # noqa: E402
from benchmarks.codec_report import _photo_section  # noqa: E402

POINT = {"lmbda": 0.0067, "bpp": 0.43, "psnr": 27.4, "ms_ssim": 0.96, "encode_ms": 70, "decode_ms": 66,
         "train_seconds": 7000, "steps": 31000}
LEGACY = {"machine": "old box", "load_before": [1, 1, 1], "load_after": [1, 1, 1], "test_images": 200,
          "settings": {"runs": "a,b", "width": 64, "latent": 64, "patch": 128, "batch": 8}, "params": 1000,
          "aeopt": [{**POINT, "run": "a"}, {**POINT, "run": "b", "lmbda": 0.0025, "bpp": 0.27, "psnr": 26.2}],
          "bd_rate": {"WebP": 11.1}, "peers": [], "photo_768x512": {"encode_s": 0.1, "decode_s": 0.2,
                                                                   "bytes": 9000, "threads": 2}}


def test_a_file_from_before_families_is_carried_as_one_family_named_by_its_runs(tmp_path):
    (tmp_path / "codec_photos.json").write_text(json.dumps(LEGACY))
    [family] = _carried_photos("a,b", str(tmp_path))
    assert (family["prefix"], family["entropy"], family["carried_from"]) == ("a,b", "hyperprior", "old box")
    assert [p["run"] for p in family["points"]] == ["a", "b"]
    assert _carried_photos("", str(tmp_path)) == []
    with pytest.raises(SystemExit, match="it holds a,b"):
        _carried_photos("c,d", str(tmp_path))


def test_each_family_gets_its_table_and_bd_line_and_a_carried_one_says_so():
    new = {"prefix": "c,d", "entropy": "channelwise", "latent_grid": "mean", "width": 64, "latent": 64,
           "params": 2000, "points": [{**POINT, "run": "c"}], "bd_rate": {"WebP": -2.5}}
    old = {"prefix": "a,b", "entropy": "hyperprior", "width": 64, "latent": 64, "params": 1000,
           "points": LEGACY["aeopt"], "carried_from": "old box", "bd_rate": {"WebP": 12.0}}
    text = "\n".join(_photo_section({**LEGACY, "families": [new, old]}))
    assert "`c,d`: channel-wise mean-scale hyperprior (4 slices), mean grid" in text
    assert "BD-rate of `c,d` vs: WebP -2.5%" in text and "BD-rate of `a,b` vs: WebP 12.0%" in text
    assert text.count("carried over, not re-measured") == 1 and "(old box)" in text
    assert "A 768x512 photo (c):" in text
    legacy = "\n".join(_photo_section(LEGACY))  # no families: the file's one scale hyperprior
    assert "`a,b`: scale hyperprior" in legacy and "BD-rate of `a,b` vs: WebP 11.1%" in legacy


def _fm(bd_per_file: float, ratios: dict[tuple[str, int], float]) -> dict:
    """A Fashion-MNIST result: one family, WebP's q0 file, and aeopt/WebP throughputs as given."""
    webp = [{"codec": "WebP", "setting": 0, "bytes_per_image": 97.5, "psnr": 21.02, "bpp": 0.99}]
    timing_webp = [{"codec": "WebP", "workers": w, "images_per_s": 1000.0} for w in (1, 2)]
    return {"families": [{"prefix": "fam"}], "bd_rate_per_file": {"WebP": bd_per_file},
            "bd_rate_batch_file": {"WebP": bd_per_file - 5}, "peers": webp,
            "aeopt": [{"bytes_per_image": 20.0, "psnr": 21.3}, {"bytes_per_image": 120.0, "psnr": 33.0}],
            "timing": {"peers": timing_webp, "aeopt": [{"model": m, "workers": w, "images_per_s": 1000.0 * r}
                                                       for (m, w), r in ratios.items()]}}


def test_the_summary_says_which_targets_are_met_from_the_figures():
    from benchmarks.codec_report import _targets_section

    fm = _fm(-67.6, {("slow", 1): 0.3, ("slow", 2): 0.4, ("fast", 1): 1.4, ("fast", 2): 1.2})
    over_budget = {"prefix": "x,y", "points": [{**POINT, "train_seconds": 9000}], "bd_rate": {"WebP": -9.0, "AVIF": 1}}
    ph = {**LEGACY, "families": [{"prefix": "a,b", "points": LEGACY["aeopt"], "bd_rate": {"WebP": 7.7, "AVIF": 35.5}},
                                 over_budget]}
    rows = {line.split(" | ")[0]: line for line in _targets_section(fm, ph) if line.startswith("| ")}
    assert rows["| Fashion-MNIST: BD-rate vs WebP <= -66% (one file per image)"].endswith("| **yes** |")
    assert "1 of its points; the smallest 20.0 B at 21.30 dB" in next(r for k, r in rows.items() if "smallest" in k)
    speed = next(r for k, r in rows.items() if "throughput" in k)
    assert speed.endswith("| **yes** (fast) |") and "slow 0.30x on 1 core" in speed
    # the family over two hours of training does not count, however small its files
    photo = next(r for k, r in rows.items() if k.startswith("| Photos"))
    assert "best of 1 families: `a,b` +7.7% (117 min on old box" in photo and photo.endswith("| no |")
    assert next(r for k, r in rows.items() if "768x512" in k).endswith("0.30 s (2 threads) | **yes** |")

    missed = _targets_section(_fm(-60.0, {("slow", 1): 0.9, ("slow", 2): 1.1}), None)
    assert [line.rsplit(" | ", 1)[-1] for line in missed if line.startswith("| F")] == ["no |", "**yes** |", "no |"]
    assert _targets_section(None, None) == []
