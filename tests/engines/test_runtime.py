"""The onnxruntime backend against eager on CPU; the TensorRT backend (and onnxruntime on CUDA) where a GPU is
present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastdenoise.engines.build import EngineError
from fastdenoise.engines.export import export_denoiser
from fastdenoise.engines.runtime import OnnxRuntimeBackend, TensorRTBackend
from fastdenoise.models.denoiser import Denoiser, fold_bn

from .conftest import has_tensorrt, random_denoiser


def eager(model: Denoiser, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return fold_bn(model)(x.cpu()).to(x.device)


def test_onnxruntime_backend_matches_eager(denoiser: Denoiser, denoiser_onnx: Path, cache_dir: Path) -> None:
    backend = OnnxRuntimeBackend(fold_bn(denoiser), torch.device("cpu"), torch.float32, None, cache_dir=cache_dir)
    assert backend.device == torch.device("cpu") and backend.dtype == torch.float32
    assert backend.path == denoiser_onnx  # found in the cache, not exported again
    for shape in [(2, 3, 37, 53), (3, 3, 9, 24)]:
        x = torch.rand(shape)
        y = backend(x)
        assert y.dtype == torch.float32 and y.device == x.device and y.shape == x.shape
        torch.testing.assert_close(y, eager(denoiser, x), atol=2e-5, rtol=1e-4)
    x = torch.rand(2, 3, 37, 53).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(backend(x), eager(denoiser, x.contiguous()), atol=2e-5, rtol=1e-4)


def test_onnx_file_from_other_weights_is_refused(denoiser_onnx: Path) -> None:
    other = fold_bn(random_denoiser(1))
    with pytest.raises(EngineError, match="other weights"):
        OnnxRuntimeBackend(other, torch.device("cpu"), torch.float32, str(denoiser_onnx))


def test_unusable_onnx_files_and_requests_fail_clearly(denoiser: Denoiser, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx model" * 10)
    with pytest.raises(EngineError, match="not usable by onnxruntime"):
        OnnxRuntimeBackend(denoiser, torch.device("cpu"), torch.float32, str(garbage))
    with pytest.raises(ValueError, match="no such ONNX file"):
        OnnxRuntimeBackend(denoiser, torch.device("cpu"), torch.float32, str(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="no bfloat16 convolutions"):
        OnnxRuntimeBackend(denoiser, torch.device("cpu"), torch.bfloat16, None, cache_dir=tmp_path)


def test_onnxruntime_backend_runs_a_given_onnx_file_and_rejects_a_bad_batch(
    denoiser: Denoiser, denoiser_onnx: Path
) -> None:
    backend = OnnxRuntimeBackend(fold_bn(denoiser), torch.device("cpu"), torch.float32, str(denoiser_onnx))
    x = torch.rand(1, 3, 23, 30)
    torch.testing.assert_close(backend(x), eager(denoiser, x), atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        backend(torch.rand(3, 37, 53))


@pytest.mark.skipif(has_tensorrt(), reason="checks the message shown where TensorRT is missing")
def test_tensorrt_backend_without_tensorrt_says_what_to_install(denoiser: Denoiser) -> None:
    with pytest.raises(ImportError, match="pip install tensorrt"):
        TensorRTBackend(denoiser, torch.device("cpu"), torch.float32, None)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 2e-3), (torch.float16, 3e-2), (torch.bfloat16, 1e-1)])
def test_tensorrt_backend_matches_eager(
    tensorrt_gpu: None, denoiser: Denoiser, tmp_path: Path, dtype, tolerance
) -> None:
    from fastdenoise.engines.build import BuildConfig, Profile

    cuda = torch.device("cuda")
    cfg = BuildConfig(profile=Profile.parse("1x3x1x1:2x3x64x64:2x3x99x99"), workspace_mib=2048)
    backend = TensorRTBackend(fold_bn(denoiser), cuda, dtype, None, build=cfg, cache_dir=tmp_path)
    assert backend.device.type == "cuda" and backend.dtype == dtype
    for shape in [(2, 3, 37, 53), (1, 3, 64, 64), (2, 3, 99, 1), (5, 3, 17, 9)]:  # 5 > max batch: run in parts
        x = torch.rand(shape, device=cuda)
        y = backend(x)
        assert y.shape == x.shape and y.dtype == torch.float32 and y.device.type == "cuda"
        assert (y - eager(denoiser, x)).abs().max() < tolerance, shape
    with pytest.raises(ValueError, match="outside this engine's profile"):
        backend(torch.rand(1, 3, 100, 64, device=cuda))
    again = TensorRTBackend(fold_bn(denoiser), cuda, dtype, None, build=cfg, cache_dir=tmp_path)  # from the cache
    x = torch.rand(2, 3, 37, 53, device=cuda)
    torch.testing.assert_close(again(x), backend(x))


@pytest.mark.gpu
def test_tensorrt_backend_cuda_graph_and_prebuilt_engine(
    tensorrt_gpu: None, denoiser: Denoiser, tmp_path: Path
) -> None:
    from fastdenoise.engines.build import BuildConfig, Profile, build_engine

    onnx_path = export_denoiser(denoiser, tmp_path / "d.onnx")
    engine = build_engine(
        onnx_path, BuildConfig(profile=Profile.parse("1x3x8x8:2x3x64x64:2x3x64x64")), cache_dir=tmp_path
    )
    cuda = torch.device("cuda")
    graphed = TensorRTBackend(fold_bn(denoiser), cuda, torch.float32, str(engine), cuda_graph=True)
    for shape in [(2, 3, 37, 53), (2, 3, 37, 53), (1, 3, 64, 20)]:
        x = torch.rand(shape, device=cuda)
        assert (graphed(x) - eager(denoiser, x)).abs().max() < 2e-3
    with pytest.raises(EngineError, match="other weights"):
        TensorRTBackend(fold_bn(random_denoiser(1)), cuda, torch.float32, str(engine))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and onnxruntime-gpu")
def test_onnxruntime_cuda_backend_binds_tensors_in_place(denoiser: Denoiser, denoiser_onnx: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (this onnxruntime has no CUDA provider)")
    backend = OnnxRuntimeBackend(fold_bn(denoiser), torch.device("cuda"), torch.float32, str(denoiser_onnx))
    x = torch.rand(2, 3, 37, 53, device="cuda")
    y = backend(x)
    assert y.device.type == "cuda"
    assert (y - eager(denoiser, x)).abs().max() < 2e-3
