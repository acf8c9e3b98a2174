"""TritonBackend against the eager Denoiser (random weights, randomized BN statistics), every dtype."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("triton")

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.kernels.backend import TritonBackend
from fastdenoise.models.denoiser import Denoiser, DenoiserSpec, fold_bn

# Narrow enough for the interpreter, every width distinct so a swapped slice or channel offset cannot pass.
SPEC = DenoiserSpec(c0=8, c1=16, c2=12, mid=8, up2=6, c3=20, mid3=10, up1=4)

# Whole net (16 layers, every activation stored in dtype) vs the fp32 eager model; outputs are x + residual with
# |residual| ~ 0.3. Max errors measured in the interpreter: fp32 2e-7, fp16 3e-4, bf16 2.3e-3 (bounds: 6-8x margin).
TOLERANCES = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 0.0},
    torch.bfloat16: {"atol": 1.5e-2, "rtol": 0.0},
}


@pytest.fixture
def model() -> Denoiser:
    """Random weights and BN statistics far from the identity, so a missed or misfolded BN shows."""
    net = Denoiser(SPEC)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.3)
            module.running_var.uniform_(0.3, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, 0.0, 0.3)
    return net.eval()


@pytest.mark.parametrize("size", [(13, 19), (8, 12)], ids=["padded_13x19", "exact_8x12"])
def test_matches_eager(model: Denoiser, size: tuple[int, int], dtype, device) -> None:
    x = torch.rand(2, 3, *size, device=device)
    backend = TritonBackend(fold_bn(model), device, dtype)

    out = backend(x)

    with torch.no_grad():
        expected = model.cpu()(x.cpu())
    assert out.shape == x.shape and out.dtype == torch.float32 and out.device == x.device and out.is_contiguous()
    torch.testing.assert_close(out.cpu(), expected, **TOLERANCES[dtype])
    assert (expected - x.cpu()).abs().max() > 10 * TOLERANCES[dtype]["atol"]  # the residual is not negligible


def test_make_backend_builds_it(model: Denoiser, device) -> None:
    backend = make_backend(model, BackendConfig(kind="triton", device=device.type, precision="fp32"))
    x = torch.rand(1, 3, 5, 6, device=device)

    assert isinstance(backend, TritonBackend) and backend.device == device
    with torch.no_grad():
        torch.testing.assert_close(backend(x).cpu(), model.cpu()(x.cpu()), atol=1e-4, rtol=1e-5)


def test_rejects_unfolded_model_and_bad_input(model: Denoiser, device) -> None:
    with pytest.raises(ValueError, match="fold_bn"):
        TritonBackend(model, device, torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        TritonBackend(fold_bn(model), device, torch.float64)
    backend = TritonBackend(fold_bn(model), device, torch.float16)
    with pytest.raises(ValueError, match="float32"):
        backend(torch.rand(1, 3, 8, 8, device=device).half())
    with pytest.raises(ValueError, match="float32"):
        backend(torch.rand(1, 4, 8, 8, device=device))


def test_import_without_triton_says_what_to_install() -> None:
    """`import fastdenoise` (and the backends module) work without Triton; the kernels name the missing package."""
    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import fastdenoise, fastdenoise.backends\n"
        "try:\n    import fastdenoise.kernels.backend\nexcept ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install triton" in result.stdout
