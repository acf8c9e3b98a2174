"""Engine fixtures: a denoiser with non-trivial BatchNorm statistics and its fp32 ONNX export, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import randomize_bn

from fastdenoise.models.denoiser import Denoiser


def random_denoiser(seed: int) -> Denoiser:
    """Random weights and BN statistics, so folding BN and the global residual both matter."""
    torch.manual_seed(seed)
    return randomize_bn(Denoiser())


def has_tensorrt() -> bool:
    """True where the TensorRT bindings are importable (tensorrt-stubs alone leaves an empty namespace package)."""
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


@pytest.fixture(scope="session")
def denoiser() -> Denoiser:
    return random_denoiser(0)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fastdenoise-cache")


@pytest.fixture(scope="session")
def denoiser_onnx(denoiser: Denoiser, cache_dir: Path) -> Path:
    """The fp32 ONNX export, in the cache where the backends look for it."""
    from fastdenoise.engines.export import cached_denoiser_onnx

    return cached_denoiser_onnx(denoiser, torch.float32, cache_dir / "onnx")


@pytest.fixture(scope="session")
def tensorrt_gpu() -> None:
    """Skip unless TensorRT's bindings and a CUDA GPU are both present (session scope: it runs before, and so
    spares, the session fixtures listed after it)."""
    trt = pytest.importorskip("tensorrt", reason="needs TensorRT (pip install tensorrt, from NVIDIA's index) and a GPU")
    if not hasattr(trt, "Builder"):
        pytest.skip("only tensorrt-stubs is installed here, not TensorRT's bindings; needs TensorRT and a GPU")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU for TensorRT")
