"""Separation of two classes by one oriented score: AUROC, AP, bootstrap intervals, distributions.

Point estimates are scikit-learn's. The bootstrap needs ~1000 recomputations per score, and
scikit-learn's per-call input validation (~3 ms) would make that minutes for a handful of scores,
so the resampled statistic is `auroc_ap` below: both metrics from one sort, exact with ties
(tests check it equals roc_auc_score / average_precision_score).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
CI_LEVEL = 0.95
# Resampled arrays are n_resamples x n floats; cap one batch at ~20M values (160 MB).
_BATCH_VALUES = 20_000_000


def distribution(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"n": 0}
    qs = np.quantile(values, QUANTILES)
    return {
        "n": int(len(values)),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, qs)},
    }


def auroc_ap(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """[AUROC, AP] of oriented scores (higher = positive), split by class.

    AUROC is the Mann-Whitney probability P(pos > neg) + P(pos == neg) / 2. AP is the mean, over
    positives p, of the precision at threshold score(p): #pos >= p / #all >= p, which is what
    average_precision_score sums step by step (ties fall in one step).
    """
    sorted_pos, sorted_neg = np.sort(pos), np.sort(neg)
    below_neg = np.searchsorted(sorted_neg, pos, "left")
    tied_neg = np.searchsorted(sorted_neg, pos, "right") - below_neg
    at_least_pos = len(pos) - np.searchsorted(sorted_pos, pos, "left")
    at_least_neg = len(neg) - below_neg
    auroc = (below_neg + 0.5 * tied_neg).sum() / (len(pos) * len(neg))
    ap = np.mean(at_least_pos / (at_least_pos + at_least_neg))
    return np.array([auroc, ap])


def bootstrap_ci(pos: np.ndarray, neg: np.ndarray, n_resamples: int, seed: int) -> dict | None:
    """Percentile 95 % intervals; each class is resampled on its own (stratified), so every
    resample keeps the class balance and both classes. None when there is nothing to resample."""
    if n_resamples <= 0 or min(len(pos), len(neg)) < 2:
        return None
    batch = max(1, _BATCH_VALUES // (len(pos) + len(neg)))
    res = stats.bootstrap(
        (pos, neg),
        auroc_ap,
        n_resamples=n_resamples,
        vectorized=False,
        paired=False,
        method="percentile",
        confidence_level=CI_LEVEL,
        batch=batch,
        rng=np.random.default_rng(seed),
    )
    low, high = res.confidence_interval
    return {"auroc": [float(low[0]), float(high[0])], "average_precision": [float(low[1]), float(high[1])]}


def separation(y: np.ndarray, oriented: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict:
    """AUROC and AP (scikit-learn) with stratified bootstrap intervals, for 0/1 labels y."""
    y = np.asarray(y).astype(int)
    oriented = np.asarray(oriented, dtype=np.float64)
    ci = bootstrap_ci(oriented[y == 1], oriented[y == 0], n_resamples, seed)
    return {
        "n_positive": int((y == 1).sum()),
        "n_negative": int((y == 0).sum()),
        "auroc": {"value": float(roc_auc_score(y, oriented)), "ci95": ci["auroc"] if ci else None},
        "average_precision": {
            "value": float(average_precision_score(y, oriented)),
            "ci95": ci["average_precision"] if ci else None,
            "chance": float((y == 1).mean()),
        },
    }
