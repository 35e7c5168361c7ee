"""Where scores turn into labels: `is_anomaly = score > threshold`.

Three ways, each with its rule:
  contamination c   the (1 - c) quantile of the training scores (PyOD's rule): a share c of the
                    training data is flagged. Right when c is known.
  "auto"            from the training scores alone, no labels: Otsu's split (the cut that best
                    separates two groups, by between-group variance) of the score histogram, the
                    top 0.5% clipped into one bin. Never more than half is flagged (the cut is at
                    least the median). On ODDS (IsolationForest and k-NN scores, 3 seeds) it came
                    closest to the F1 of the true contamination among Otsu on raw, log and
                    Yeo-Johnson-transformed scores, a Gaussian mixture, Hampel (median + k MADs)
                    and Tukey's IQR fence; the gap that remains is in benchmarks/results/detect.md.
  F1 on labels      given a few labelled samples, the threshold with the best F1 on them. With no
                    anomaly (or no normal sample) among them F1 says nothing: a warning, and the
                    unsupervised threshold stays. Never the minimum score (which flags everything).
"""
from __future__ import annotations

import math
import warnings
from numbers import Real

import numpy as np

from ..errors import AeoptError

OTSU_BINS = 256         # histogram bins of the Otsu split: fine enough for hundreds to millions of scores
TAIL_PERCENTILE = 99.5  # scores above it join its bin: a few huge scores must not squeeze the rest into one bin


class NoAnomalyInLabelsWarning(UserWarning):
    """The labelled set has no anomaly (or no normal sample): F1 cannot choose a threshold."""


def check_contamination(contamination) -> float | str:
    """A float in (0, 0.5] or "auto"; anything else is a one-line AeoptError naming the fix."""
    if isinstance(contamination, str):
        if contamination.strip().lower() == "auto":
            return "auto"
        try:
            contamination = float(contamination)
        except ValueError:
            raise AeoptError(f"contamination must be a number in (0, 0.5] or auto, got {contamination!r}") from None
    if isinstance(contamination, bool) or not isinstance(contamination, Real) or not math.isfinite(contamination) \
            or not 0 < contamination <= 0.5:
        raise AeoptError(f"contamination must be in (0, 0.5] (the expected share of anomalies) or auto, got "
                         f"{contamination!r}: pass e.g. 0.1, or auto to read it from the scores")
    return float(contamination)


def contamination_threshold(scores: np.ndarray, contamination: float) -> float:
    """The (1 - contamination) quantile of the training scores."""
    return float(np.percentile(scores, 100 * (1 - contamination)))


def otsu_cut(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """The cut that maximizes the between-group variance of a histogram (Otsu 1979)."""
    hist, edges = np.histogram(values, bins)
    mids = (edges[1:] + edges[:-1]) / 2
    w = np.cumsum(hist).astype(np.float64)
    mu = np.cumsum(hist * mids)
    total, mean = w[-1], mu[-1]
    between = (mean * w / total - mu) ** 2 / np.maximum(w * (total - w), 1.0)
    return float(edges[1:][int(np.argmax(between[:-1]))])


def auto_threshold(scores: np.ndarray) -> tuple[float, str]:
    """A threshold from the score distribution alone, and a one-line account of how it was found."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.ptp(scores) <= 0:
        return float(scores.max()), "all scores equal: nothing is flagged"
    top = float(np.percentile(scores, TAIL_PERCENTILE))
    clipped = np.minimum(scores, top) if top > scores.min() else scores
    threshold = max(otsu_cut(clipped), float(np.median(scores)))
    share = float((scores > threshold).mean())
    return threshold, f"auto: Otsu split of the training scores ({100 * share:.1f}% above)"


def f1_threshold(scores: np.ndarray, y: np.ndarray, fallback: float) -> tuple[float, float | None]:
    """(threshold, its F1) maximizing F1 of `score > threshold` on labelled samples (y = 1 anomaly).

    With no anomaly or no normal sample among them: warns and returns (fallback, None).
    """
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y).astype(int)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        what = "no anomaly" if n_pos == 0 else "no normal sample"
        warnings.warn(f"the labelled set has {what}, so F1 cannot choose a threshold; keeping the unsupervised "
                      f"threshold {fallback:.6g} (add labelled {'anomalies' if n_pos == 0 else 'normal samples'})",
                      NoAnomalyInLabelsWarning, stacklevel=3)
        return fallback, None
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order]
    tp = np.cumsum(t)
    k = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True]  # a cut can only fall between distinct scores
    f1 = np.where(last, 2 * tp / (k + n_pos), -1.0)
    i = int(np.argmax(f1))
    below = s[i + 1] if i + 1 < len(s) else s[i] - 1.0
    return float((s[i] + below) / 2), float(f1[i])
