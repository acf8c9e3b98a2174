"""Kernel tests run compiled on a CUDA GPU when there is one, else in Triton's interpreter on CPU (slow: tiny sizes)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Read when a kernel file is imported (`triton.jit` picks the interpreter then), which is after this conftest.
    os.environ["TRITON_INTERPRET"] = "1"

# Kernel output vs fp32 reference on the same rounded operands: fp32 accumulation-order noise, plus one rounding of the
# output to fp16 (<= 2^-11 relative) or bf16 (<= 2^-8 relative).
TOLERANCES = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1e-2, "rtol": 1e-2},
}


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(params=list(TOLERANCES), ids=lambda dtype: str(dtype).removeprefix("torch."))
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return TOLERANCES[dtype]
