"""Intervals and paired tests for the tables: percentile bootstrap over images, McNemar's exact test for top-1.

A table metric is a function of per-image parts summed over the images (a mean: [value, 1]; mIoU: the confusion), so
one resampling of images gives it for every metric, and resampling the same images for two arms gives a paired test.
Several noise seeds of one image stay together (the image is the unit resampled).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Reduce = Callable[[np.ndarray], np.ndarray]  # (draws, k) summed parts -> (draws,) metric
LEVEL = 0.95
DRAWS = 2000


def resample_counts(images: int, draws: int, seed: int) -> np.ndarray:
    """(draws, images) multiplicities of a bootstrap resample of `images` items (each row sums to `images`)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, images, size=(draws, images))
    counts = np.zeros((draws, images))
    np.add.at(counts, (np.arange(draws)[:, None], picks), 1)
    return counts


def mean_reduce(sums: np.ndarray) -> np.ndarray:
    """Parts [value, count] summed -> the mean."""
    return sums[:, 0] / np.maximum(sums[:, 1], 1)


def miou_reduce(sums: np.ndarray) -> np.ndarray:
    """Flattened (C, C) confusions summed -> mIoU over classes present in ground truth or prediction."""
    classes = math.isqrt(sums.shape[1])
    counts = sums.reshape(-1, classes, classes)
    tp = np.diagonal(counts, axis1=1, axis2=2)
    union = counts.sum(1) + counts.sum(2) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return np.nanmean(iou, axis=1)


def pixel_accuracy_reduce(sums: np.ndarray) -> np.ndarray:
    classes = math.isqrt(sums.shape[1])
    counts = sums.reshape(-1, classes, classes)
    return np.trace(counts, axis1=1, axis2=2) / np.maximum(counts.sum((1, 2)), 1)


def percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_interval(
    parts: np.ndarray, reduce: Reduce, draws: int = DRAWS, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of reduce(sum of parts over images); parts: (images, k)."""
    parts = np.asarray(parts, dtype=np.float64)
    return percentiles(reduce(resample_counts(len(parts), draws, seed) @ parts), level)


def paired_bootstrap(
    parts: np.ndarray, control: np.ndarray, reduce: Reduce, draws: int = DRAWS, level: float = LEVEL, seed: int = 0
) -> dict[str, float]:
    """Difference arm - control of a metric on the same images, its bootstrap interval (both arms resampled with the
    same images) and a two-sided p: twice the share of resamples on the other side of 0 than the observed difference."""
    parts, control = np.asarray(parts, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if parts.shape != control.shape:
        raise ValueError(f"paired parts must have the same shape, got {parts.shape} and {control.shape}")
    diff = float(reduce(parts.sum(0, keepdims=True))[0] - reduce(control.sum(0, keepdims=True))[0])
    counts = resample_counts(len(parts), draws, seed)
    diffs = reduce(counts @ parts) - reduce(counts @ control)
    lo, hi = percentiles(diffs, level)
    below, above = (np.mean(diffs <= 0), np.mean(diffs >= 0))
    return {"diff": diff, "lo": lo, "hi": hi, "p": float(min(1.0, 2 * min(below, above)))}


def binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact (log-space sums, fine for n in the tens of thousands)."""
    if n == 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def mcnemar_exact(correct: np.ndarray, control: np.ndarray) -> dict[str, float]:
    """McNemar's exact test on paired 0/1 outcomes: b = arm right and control wrong, c = the reverse; two-sided
    p = 2 P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    correct, control = np.asarray(correct).astype(bool), np.asarray(control).astype(bool)
    if correct.shape != control.shape:
        raise ValueError(f"paired outcomes must have the same shape, got {correct.shape} and {control.shape}")
    b, c = int(np.sum(correct & ~control)), int(np.sum(~correct & control))
    return {"b": b, "c": c, "p": min(1.0, 2 * binomial_tail(min(b, c), b + c))}
