"""Accuracy regressions: PSNR on Kodak24 at fixed sigma and seed against bench/baselines.json (files verified
against ../shared/data/SHA256SUMS first). A check fails when the PSNR is more than its tolerance below the baseline and
skips while no baseline is recorded. No timings: `pytest bench/bench_accuracy.py --benchmark-disable` is fine.

    nice -n 15 pytest bench/bench_accuracy.py --profile quick        # the CI subset (also tests/test_accuracy_regression.py)
    nice -n 15 pytest bench/bench_accuracy.py --profile full         # all 24 images, sigma 25 and 50, and the peers
"""

from __future__ import annotations

import pytest
import torch

from fastdenoise.benchmark import DEFAULT_BASELINES, Scorer, get_profile, load_baselines, run_accuracy, weights_digest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "key" in metafunc.fixturenames:
        metafunc.parametrize("key", get_profile(metafunc.config.getoption("--profile")).accuracy)


@pytest.fixture(scope="module")
def scorer(data_root, bundled, device: torch.device) -> Scorer:
    return Scorer(data_root, bundled, device, log=lambda message: None)


def test_psnr_not_below_baseline(key: str, scorer: Scorer) -> None:
    check = load_baselines(DEFAULT_BASELINES)[key]
    (outcome,) = run_accuracy(scorer, [check], weights_digest(None))
    if outcome.status == "no-baseline":
        pytest.skip(outcome.message)
    assert outcome.status == "pass", outcome.message
