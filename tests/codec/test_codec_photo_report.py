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
