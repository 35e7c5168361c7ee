"""The refinement benchmark's BD table: per-file and many-image-file columns from the same points."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks/
from benchmarks.codec_refine import _bd_rates  # noqa: E402

from aeopt.codec.bdrate import bd_rate  # noqa: E402

WEBP = [{"codec": "WebP", "setting": q, "bpp": b, "psnr": p} for q, b, p in ((0, 1.0, 21.0), (10, 1.6, 27.0), (50, 2.3, 33.6))]


def _points(scale: float, refine: int, batch: bool = True) -> list[dict]:
    points = []
    for bpp, psnr in ((0.35, 23.3), (0.55, 26.4), (0.87, 29.8), (1.27, 32.9)):
        point = {"refine": refine, "bpp": bpp * scale, "psnr": psnr}
        if batch:
            point["batch_bpp"] = 0.75 * bpp * scale
        points.append(point)
    return points


def test_batch_columns_are_the_batch_rates_of_the_same_points():
    part = {"plain": _points(1.0, 0), "refined": _points(0.9, 100), "peers": WEBP}
    rates = _bd_rates(part)
    assert list(rates) == ["plain", "refined, 100 steps", "plain, one many-image file",
                           "refined, 100 steps, one many-image file"]
    anchor = ([p["bpp"] for p in WEBP], [p["psnr"] for p in WEBP])
    batch = part["refined"]
    assert rates["refined, 100 steps, one many-image file"]["WebP"] == bd_rate(
        *anchor, [p["batch_bpp"] for p in batch], [p["psnr"] for p in batch])
    # a quarter fewer bytes at every point is -25% at equal PSNR, on top of the per-file figure
    per_file, as_one = rates["plain"]["WebP"], rates["plain, one many-image file"]["WebP"]
    assert abs((100 + as_one) / (100 + per_file) - 0.75) < 1e-9


def test_points_without_batch_sizes_get_no_batch_column():
    part = {"plain": _points(1.0, 0, batch=False), "refined": [], "peers": WEBP}
    assert list(_bd_rates(part)) == ["plain"]
