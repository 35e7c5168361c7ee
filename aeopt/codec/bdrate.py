"""Bjøntegaard delta rate: the average bitrate change at equal PSNR between two RD curves.

log-rate is interpolated as a function of PSNR with a monotone piecewise cubic (PCHIP, the
`bjontegaard` package's default and the form recent codec papers use, since the original cubic
polynomial fit oscillates on uneven points), integrated over the PSNR range both curves cover.
-66 means the test codec needs 66% fewer bits than the anchor at equal quality.
"""
from __future__ import annotations

import math

import numpy as np


def _curve(rate, psnr):
    points = sorted({(float(p), float(r)) for r, p in zip(rate, psnr) if r > 0 and math.isfinite(p)})
    psnr_sorted, log_rate = [], []
    for p, r in points:  # keep a strictly increasing PSNR (equal PSNR: the smaller rate)
        if psnr_sorted and p <= psnr_sorted[-1]:
            continue
        psnr_sorted.append(p)
        log_rate.append(math.log(r))
    return np.array(psnr_sorted), np.array(log_rate)


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float | None:
    """Percent rate change of `test` vs `anchor`; None if the curves share no PSNR range (or < 2 points)."""
    from scipy.integrate import quad
    from scipy.interpolate import PchipInterpolator

    pa, la = _curve(rate_anchor, psnr_anchor)
    pt, lt = _curve(rate_test, psnr_test)
    if len(pa) < 2 or len(pt) < 2:
        return None
    low, high = max(pa[0], pt[0]), min(pa[-1], pt[-1])
    if high <= low:
        return None
    fa, ft = PchipInterpolator(pa, la), PchipInterpolator(pt, lt)
    diff = (quad(ft, low, high)[0] - quad(fa, low, high)[0]) / (high - low)
    return 100 * (math.exp(diff) - 1)


def overlap(psnr_a, psnr_b) -> tuple[float, float] | None:
    a = [p for p in psnr_a if math.isfinite(p)]
    b = [p for p in psnr_b if math.isfinite(p)]
    if not a or not b:
        return None
    low, high = max(min(a), min(b)), min(max(a), max(b))
    return (low, high) if high > low else None
