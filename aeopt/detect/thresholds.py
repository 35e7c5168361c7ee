"""Where scores turn into labels: `is_anomaly = score > threshold`.

Three ways, each with its rule:
  contamination c   the (1 - c) quantile of the training scores (PyOD's rule): a share c of the
                    training data is flagged. Right when c is known.
  "auto"            from the training scores alone, no labels: a sample is flagged when either of
                    two rules flags it, since each fails where the other works.
                    Hampel's rule, the median plus HAMPEL_K robust standard deviations (1.4826 x
                    the median absolute deviation, which a few anomalies cannot inflate as they
                    inflate the plain standard deviation): right when anomalies are rare, too
                    strict when a third of the data is anomalous (the MAD then grows with them).
                    The mirror rule: normal scores are taken as symmetric about their mode, so
                    whatever is missing below the mode is the anomalies' share above it (share =
                    1 - 2 x the fraction below the mode, within MIRROR_SHARE); the top share is
                    flagged: right when anomalies are many, lost when the normal scores are skewed,
                    and noisy for small shares (used from MIRROR_FROM). Never more than half is flagged. On ODDS with the default (forest) score, 3
                    seeds, test F1 0.492 against 0.528 with the true contamination; Hampel alone
                    0.449, the mirror rule alone 0.479; Otsu's split 0.367, a 2-Gaussian mixture
                    0.381, Tukey's fence 0.406, PyThresh's best (MTT) 0.465 (detect.md).
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

HAMPEL_K = 2.0  # robust standard deviations above the median: 2 -> F1 0.448, 2.5 -> 0.430, 3 -> 0.413 (ODDS)
MAD_TO_STD = 1.4826  # the MAD of a Gaussian times this is its standard deviation
MIRROR_SHARE = (0.02, 0.5)  # the mirror rule's share is kept in this range
# ... and trusted only from 15% up: a smaller share is within the noise of the mode's estimate (a
# sample of 950 N(0, 1) scores and 50 far anomalies reads 9%); on ODDS 0 or 0.15 give the same F1
MIRROR_FROM = 0.15
MODE_BINS = 512  # the score density is a Gaussian-smoothed histogram on this many bins

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


def auto_threshold(scores: np.ndarray) -> tuple[float, str]:
    """A threshold from the score distribution alone, and a one-line account of how it was found."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.ptp(scores) <= 0:
        return float(scores.max()), "all scores equal: nothing is flagged"
    median = float(np.median(scores))
    spread = MAD_TO_STD * float(np.median(np.abs(scores - median)))
    if spread <= 0:  # over half the scores tie at the median (MAD 0): the plain standard deviation instead
        spread = float(np.std(scores))
    hampel = median + HAMPEL_K * spread
    share = mirror_share(scores)
    mirror = float(np.quantile(scores, 1 - share)) if share >= MIRROR_FROM else math.inf
    threshold = max(min(hampel, mirror), median)
    flagged = float((scores > threshold).mean())
    rule = "Hampel's rule" if hampel <= mirror else "the mirror rule"
    return threshold, (f"auto: the lower of Hampel's rule (median + {HAMPEL_K:g} robust standard deviations) and "
                       f"the mirror rule (top {100 * share:.1f}%, the share missing below the mode; used from "
                       f"{100 * MIRROR_FROM:.0f}%): {rule}, {100 * flagged:.1f}% of the training scores above")


def score_mode(scores: np.ndarray) -> float:
    """The peak of the scores' density: a histogram smoothed with Scott's bandwidth (as scipy's
    gaussian_kde), over the central 98% so that a far tail does not coarsen the bins."""
    low, high = np.quantile(scores, [0.01, 0.99])
    if high <= low:
        return float(np.median(scores))
    counts, edges = np.histogram(scores, bins=MODE_BINS, range=(low, high))
    width = edges[1] - edges[0]
    bandwidth = max(float(np.std(scores)) * len(scores) ** -0.2, width)
    offsets = np.arange(-MODE_BINS + 1, MODE_BINS) * width
    density = np.convolve(counts, np.exp(-0.5 * (offsets / bandwidth) ** 2))[MODE_BINS - 1:2 * MODE_BINS - 1]
    centres = (edges[:-1] + edges[1:]) / 2
    return float(centres[int(np.argmax(density))])


def mirror_share(scores: np.ndarray) -> float:
    """The anomalies' share if the normal scores are symmetric about their mode."""
    below = float((scores < score_mode(scores)).mean())
    return float(np.clip(1 - 2 * below, *MIRROR_SHARE))


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
