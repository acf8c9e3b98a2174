"""Without a GPU, still compile the kernels for sm_90 so lowering errors the interpreter cannot see show up in CI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

# Runs in a fresh interpreter without TRITON_INTERPRET, so `triton.jit` builds real JIT functions.
SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastdenoise.kernels.conv2d import conv2d_kernel
from fastdenoise.kernels.deconv2x import deconv2x_kernel

def build(kernel, pointers, constants):
    fn = kernel.fn  # the JITFunction under the autotuner
    signature = {n: "constexpr" if n in constants else pointers.get(n, "i32") for n in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, signature, constants), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": 4, "num_stages": 3})
    assert "mma" in compiled.asm["ptx"], "no tensor-core MMA in the PTX"

blocks = {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "DOT_PRECISION": "tf32", "UPCAST": False}
# conv0: fp32 NCHW image in, bf16 weights and output
build(conv2d_kernel, {"x_ptr": "*fp32", "w_ptr": "*bf16", "b_ptr": "*fp32", "r_ptr": "*bf16", "out_ptr": "*bf16"},
      dict(blocks, KH=5, KW=5, STRIDE=1, PAD=2, HAS_RESIDUAL=False, RELU=True))
# head: fp16 in, fp32 residual and output
build(conv2d_kernel, {"x_ptr": "*fp16", "w_ptr": "*fp16", "b_ptr": "*fp32", "r_ptr": "*fp32", "out_ptr": "*fp32"},
      dict(blocks, KH=3, KW=3, STRIDE=1, PAD=1, HAS_RESIDUAL=True, RELU=False))
build(deconv2x_kernel, {"x_ptr": "*bf16", "w_ptr": "*bf16", "b_ptr": "*fp32", "out_ptr": "*bf16"},
      dict(blocks, RELU=True))
print("compiled")
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU every other test compiles the kernels for real")
def test_kernels_compile_for_sm90_without_a_gpu() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # triton 3.9 warns when unset
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    if "ptxas" in result.stderr and "not found" in result.stderr.lower():
        pytest.skip("Triton's bundled ptxas is missing")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compiled" in result.stdout
