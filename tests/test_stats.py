"""Bootstrap intervals, paired bootstrap and McNemar's exact test on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdenoise.stats import (
    bootstrap_interval,
    mcnemar_exact,
    mean_reduce,
    miou_reduce,
    paired_bootstrap,
    pixel_accuracy_reduce,
    resample_counts,
)
from fastdenoise.training.joint import mean_iou


def mean_parts(values: np.ndarray) -> np.ndarray:
    return np.stack([values, np.ones_like(values)], 1)


def test_resample_counts_are_multiplicities_of_a_resample():
    counts = resample_counts(7, 300, seed=4)
    assert counts.shape == (300, 7) and np.all(counts.sum(1) == 7) and np.all(counts >= 0)
    assert abs(counts.mean() - 1) < 0.05  # every image equally likely


def test_interval_of_a_mean_matches_the_normal_theory_width(rng):
    values = rng.normal(3.0, 2.0, size=400)
    lo, hi = bootstrap_interval(mean_parts(values), mean_reduce, draws=4000)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert lo < values.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)


def test_intervals_cover_the_true_mean_about_95_percent_of_the_time(rng):
    hits = 0
    for trial in range(150):
        values = rng.exponential(1.0, size=60)  # skewed, true mean 1
        lo, hi = bootstrap_interval(mean_parts(values), mean_reduce, draws=400, seed=trial)
        hits += lo <= 1.0 <= hi
    assert 0.85 <= hits / 150 <= 0.99


def test_miou_and_pixel_accuracy_reduce_match_the_table_definitions(rng):
    confusions = rng.integers(0, 50, size=(5, 4, 4))
    confusions[:, 3, :] = 0  # class 3 never in ground truth
    confusions[:, :, 3] = 0  # nor predicted: left out of the mean
    total = confusions.sum(0)
    sums = total.reshape(1, -1).astype(float)
    assert miou_reduce(sums)[0] == pytest.approx(mean_iou(torch.as_tensor(total))[0])
    assert pixel_accuracy_reduce(sums)[0] == pytest.approx(np.trace(total) / total.sum())


def test_paired_bootstrap_finds_a_real_shift_and_none_between_identical_arms(rng):
    control = rng.normal(0.5, 0.2, size=80)
    shifted = control + 0.05 + rng.normal(0, 0.02, size=80)  # small against the spread, large against the pairing
    test = paired_bootstrap(mean_parts(shifted), mean_parts(control), mean_reduce)
    assert test["diff"] == pytest.approx(float(np.mean(shifted - control)))
    assert 0 < test["lo"] < test["diff"] < test["hi"] and test["p"] < 0.01
    same = paired_bootstrap(mean_parts(control), mean_parts(control), mean_reduce)
    assert same["diff"] == 0 and same["lo"] == same["hi"] == 0 and same["p"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap(mean_parts(control), mean_parts(control[:5]), mean_reduce)


def test_paired_bootstrap_of_miou_resamples_whole_confusions(rng):
    truth = rng.integers(0, 3, size=(30, 200))
    good = np.where(rng.random(truth.shape) < 0.8, truth, rng.integers(0, 3, truth.shape))
    poor = np.where(rng.random(truth.shape) < 0.5, truth, rng.integers(0, 3, truth.shape))

    def parts(pred: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(t * 3 + p, minlength=9) for t, p in zip(truth, pred)]).astype(float)

    test = paired_bootstrap(parts(good), parts(poor), miou_reduce, draws=1000)
    expected = miou_reduce(parts(good).sum(0, keepdims=True))[0] - miou_reduce(parts(poor).sum(0, keepdims=True))[0]
    assert test["diff"] == pytest.approx(expected) and test["lo"] > 0 and test["p"] < 0.01


def test_mcnemar_exact_against_the_binomial_definition(rng):
    control = rng.random(200) < 0.6
    arm = np.where(rng.random(200) < 0.15, ~control, control)  # discordant pairs in both directions
    result = mcnemar_exact(arm, control)
    b, c = int(np.sum(arm & ~control)), int(np.sum(~arm & control))
    n, k = b + c, min(b, c)
    expected = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    assert (result["b"], result["c"]) == (b, c) and result["p"] == pytest.approx(expected, rel=1e-9)
    assert mcnemar_exact(arm, arm)["p"] == 1.0  # no discordant pairs
    one_sided = mcnemar_exact(np.ones(12, bool), np.r_[np.zeros(10, bool), np.ones(2, bool)])
    assert (one_sided["b"], one_sided["c"]) == (10, 0) and one_sided["p"] == pytest.approx(2 / 2**10)
    assert mcnemar_exact(control, arm)["p"] == pytest.approx(result["p"])  # symmetric
