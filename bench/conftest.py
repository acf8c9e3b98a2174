"""pytest-benchmark suite: `pytest bench/` collects bench_*.py; `--profile quick|full|gpu` picks the grid
(the same profiles as `fastdenoise bench`, from fastdenoise.benchmark.PROFILES).

    nice -n 15 pytest bench/bench_throughput.py --profile quick --benchmark-columns=median,rounds
    pytest bench/ --profile gpu --benchmark-autosave                       # .benchmarks/<machine>/NNNN_*.json
    pytest bench/ --profile gpu --benchmark-compare --benchmark-compare-fail=median:10%
    pytest bench/bench_accuracy.py                                         # accuracy regressions only, no timings
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fastdenoise.benchmark import PROFILES, BenchProfile, get_profile
from fastdenoise.datasets import data_root as find_data_root
from fastdenoise.model import Denoiser

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # importable on CPU; the triton backend is skipped there anyway


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--profile", default="quick", choices=sorted(PROFILES), help="benchmark grid (fastdenoise.benchmark.PROFILES)"
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect bench_*.py when bench/ is given as a folder (files named on the command line are collected anyway)."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest) -> BenchProfile:
    return get_profile(request.config.getoption("--profile"))


@pytest.fixture(scope="session")
def device(profile: BenchProfile) -> torch.device:
    if profile.device == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"profile {profile.name} needs a CUDA GPU")
    return torch.device(profile.device)


@pytest.fixture(scope="session")
def data_root() -> Path:
    path = find_data_root(Path(__file__).parent)
    if path is None or not path.is_dir():
        pytest.skip("shared data not found (set FASTDENOISE_DATA)")
    return path


@pytest.fixture(scope="session")
def bundled() -> Denoiser:
    """The shipped weights (the model whose speed and accuracy are tracked); random weights would time the same."""
    from fastdenoise.checkpoint import load_denoiser

    return load_denoiser()


def profile_of(config: pytest.Config) -> BenchProfile:
    return get_profile(config.getoption("--profile"))
