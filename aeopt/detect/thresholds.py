"""Where scores turn into labels: `is_anomaly = score > threshold`.

Three ways, each with its rule:
  contamination c   the (1 - c) quantile of the training scores (PyOD's rule): a share c of the
                    training data is flagged. Right when c is known.
  "auto"            from the training scores alone, no labels: a two-component Gaussian mixture
                    on the scores' Yeo-Johnson transform (which removes their right skew); the
                    threshold is where the upper component becomes the likelier one. Used only when
                    the mixture finds a minority component (weight <= 0.5) that is clearly apart
                    (means >= 2 pooled SDs apart); otherwise the scores show no second group and the
                    Hampel rule, median + 3 scaled MADs of the transformed scores, flags only
                    the far tail. Both pieces keep working when the data hold no anomaly at all.
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

HAMPEL_K = 3.0        # scaled MADs above the median: ~0.13% of a Gaussian lies beyond
MIN_SEPARATION = 2.0  # pooled standard deviations between mixture means to trust a two-group split
MIN_WEIGHT = 0.005    # an upper mixture component below this weight is noise, not a group


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


def _yeo_johnson(scores: np.ndarray) -> tuple[np.ndarray, object]:
    from sklearn.preprocessing import PowerTransformer

    pt = PowerTransformer(method="yeo-johnson", standardize=True)
    z = pt.fit_transform(scores.reshape(-1, 1)).ravel()
    return z, pt


def auto_threshold(scores: np.ndarray, *, seed: int = 0) -> tuple[float, str]:
    """A threshold from the score distribution alone, and a one-line account of how it was found."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.ptp(scores) <= 0:
        return float(scores.max()), "all scores equal: nothing is flagged"
    z, pt = _yeo_johnson(scores)
    split = _mixture_split(z, seed)
    if split is not None:
        cut, weight = split
        how = f"two-group split of the scores (upper group {100 * weight:.1f}% of the data)"
    else:
        med = float(np.median(z))
        mad = 1.4826 * float(np.median(np.abs(z - med)))
        cut = med + HAMPEL_K * max(mad, 1e-12)
        how = f"no second group in the scores: median + {HAMPEL_K:g} MADs (Hampel)"
    threshold = float(pt.inverse_transform(np.array([[cut]])).ravel()[0])
    if not math.isfinite(threshold):
        threshold = float(scores.max())
    return threshold, how


def _mixture_split(z: np.ndarray, seed: int) -> tuple[float, float] | None:
    """(cut in z, upper weight) of a 2-component mixture, or None where it finds no clear minority group."""
    from sklearn.mixture import GaussianMixture

    if len(z) < 20:
        return None
    gm = GaussianMixture(2, random_state=seed, n_init=2).fit(z.reshape(-1, 1))
    means, sds = gm.means_.ravel(), np.sqrt(gm.covariances_.ravel())
    hi = int(np.argmax(means))
    lo = 1 - hi
    weight = float(gm.weights_[hi])
    pooled = math.sqrt((sds[0] ** 2 + sds[1] ** 2) / 2)
    if not (MIN_WEIGHT <= weight <= 0.5) or (means[hi] - means[lo]) < MIN_SEPARATION * pooled:
        return None
    grid = np.linspace(means[lo], means[hi], 512)
    upper = gm.predict_proba(grid.reshape(-1, 1))[:, hi]
    above = np.nonzero(upper >= 0.5)[0]
    return (float(grid[above[0]]) if len(above) else float(means[hi])), weight


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
