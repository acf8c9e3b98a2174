"""CI's accuracy check: the bundled weights on the first 4 Kodak24 images at sigma 25, seed 0 (fp32, CPU) must not fall
below the baseline recorded for exactly that subset in fastdenoise/baselines.json by more than its tolerance.

The images are checked against ../shared/data/SHA256SUMS first. Skips while no baseline is recorded (record one with
`python bench/record_baselines.py --keys kodak24-first4-sigma25`) or where the shared data is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastdenoise.evaluation.accuracy import DEFAULT_BASELINES, Scorer, load_baselines, run_accuracy, weights_digest
from fastdenoise.models.checkpoint import load_denoiser

KEY = "kodak24-first4-sigma25"


@pytest.mark.data
def test_bundled_model_holds_its_kodak24_baseline(data_dir: Path) -> None:
    check = load_baselines(DEFAULT_BASELINES)[KEY]
    assert (check.method, check.data, check.limit, check.sigma, check.seed) == ("bundled", "kodak24", 4, 25.0, 0)
    if check.psnr is None:
        pytest.skip(
            f"{KEY}: no baseline recorded in {DEFAULT_BASELINES.name} yet "
            f"(python bench/record_baselines.py --keys {KEY})"
        )
    scorer = Scorer(data_dir, load_denoiser(), torch.device("cpu"), log=lambda message: None)
    (outcome,) = run_accuracy(scorer, [check], weights_digest(None))
    assert outcome.status == "pass", outcome.message
