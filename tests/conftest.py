"""Shared fixtures: seeded random generators, the shared data folder, generated image folders."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

if not torch.cuda.is_available():
    # Triton kernels run in its interpreter on CPU; set before any test imports fastdenoise.kernels.
    os.environ.setdefault("TRITON_INTERPRET", "1")

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Started in the background (`pytest ... &`), the shell leaves SIGINT ignored and every child inherits that; the
    # tests that press Ctrl-C need Python's own handling, as in a terminal (children then start with the default).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_data() -> Path:
    return Path(os.environ.get("FASTDENOISE_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def data_dir() -> Path:
    path = shared_data()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set FASTDENOISE_DATA)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Engine exports and `--backend auto`'s probe results (the default backend of `run` and `eval`) go to a cache of
    the session's own, shared by its tests: one probe per shape class, and nothing written to the user's cache."""
    if "FASTDENOISE_CACHE" in os.environ:  # a cache the caller chose, e.g. kept warm between runs
        yield
        return
    os.environ["FASTDENOISE_CACHE"] = str(tmp_path_factory.mktemp("fastdenoise-cache"))
    yield
    del os.environ["FASTDENOISE_CACHE"]


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_plain_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner's output is no terminal: a test slower than 30 s would get a plain progress line among the lines it
    checks. The tests of those lines set their own interval."""
    monkeypatch.setattr("fastdenoise.progress.PLAIN_EVERY", float("inf"))


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour image (uint8), more photo-like than white noise."""
    coarse = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    ys = np.linspace(0, coarse.shape[0] - 1, h)
    xs = np.linspace(0, coarse.shape[1] - 1, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, coarse.shape[0] - 1), np.minimum(x0 + 1, coarse.shape[1] - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x1] * fx
    bottom = coarse[y1][:, x0] * (1 - fx) + coarse[y1][:, x1] * fx
    image = top * (1 - fy) + bottom * fy + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@pytest.fixture
def make_image(rng: np.random.Generator):
    """make_image(h, w) -> a random smooth uint8 RGB image."""
    return lambda h, w: random_image(rng, h, w)


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP spinning against the I/O threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def backend():
    """The eager fp32 backend around a small random denoiser (non-trivial BN statistics)."""
    from helpers import SMALL, randomize_bn

    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.models.denoiser import Denoiser

    return make_backend(randomize_bn(Denoiser(SMALL)), BackendConfig(device="cpu", precision="fp32"))


@pytest.fixture
def weights(tmp_path) -> Path:
    """A small random denoiser saved as safetensors, for CLI and subprocess runs."""
    from helpers import SMALL, randomize_bn

    from fastdenoise.models.checkpoint import save_weights
    from fastdenoise.models.denoiser import Denoiser

    path = tmp_path / "small.safetensors"
    save_weights(randomize_bn(Denoiser(SMALL)), path)
    return path
