"""Triton, imported in one place with an install hint, and the launch settings that differ under its interpreter."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError as error:  # pragma: no cover - exercised by tests/kernels/test_backend.py in a patched import
    hint = "fastdenoise.kernels needs Triton: pip install triton (or pip install 'fastdenoise[triton]')"
    raise ImportError(hint) from error

__all__ = ["triton", "tl", "interpreting", "tune", "dot_settings", "round_to_output", "DTYPES"]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Under TRITON_INTERPRET=1 every program instance runs in numpy, one after another: autotuning would benchmark each
# config through that, so the interpreter gets one fixed, small-but-not-tiny config (fewer programs = faster tests).
INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=1)


def interpreting() -> bool:
    """True when kernels run in Triton's numpy interpreter (TRITON_INTERPRET=1 when the kernel file was imported)."""
    return bool(triton.knobs.runtime.interpret)


def _prune(configs: list, named_args: dict, **kwargs) -> list:
    """Drop tiles much wider than the layer (C_out=3 for the head, 32 for up2): they only multiply zeros."""
    width = max(16, triton.next_power_of_2(named_args["C_out"]))
    kept = [c for c in configs if c.kwargs["BLOCK_N"] <= width]
    return kept or configs[:1]


def tune(gpu_configs: list, key: list[str]):
    """`triton.autotune` over `gpu_configs`; under the interpreter over its one config (so no benchmarking)."""
    if interpreting():
        return triton.autotune(configs=[INTERPRETER_CONFIG], key=key)
    return triton.autotune(configs=gpu_configs, key=key, prune_configs_by={"early_config_prune": _prune})


def dot_settings(dtype: torch.dtype) -> tuple[str, bool]:
    """(input_precision, upcast) for tl.dot on operands of `dtype`.

    fp32 runs as true fp32 ("ieee", not TF32): it is the accuracy path; fp16/bf16 are the speed paths.
    The interpreter (triton 3.9) feeds bf16 operands to numpy.matmul as their raw uint16 bits, so there the tiles are
    upcast to fp32 first; bf16 x bf16 products are exact in fp32, so this is the GPU's bf16 MMA with fp32 accumulation.
    """
    return ("ieee" if dtype == torch.float32 else "tf32"), (interpreting() and dtype == torch.bfloat16)


@triton.jit
def round_to_output(acc, out_ptr):
    """fp32 tile -> element type of `out_ptr`, rounding to nearest even.

    bf16 is rounded by hand in the fp32 bits (add 0x7FFF plus the kept LSB, clear the low half) so the later cast is
    exact: triton 3.9's interpreter truncates fp32 -> bf16, the GPU rounds; this way both give the same bits.
    """
    if out_ptr.dtype.element_ty == tl.bfloat16:
        bits = acc.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        acc = bits.to(tl.float32, bitcast=True)
    return acc.to(out_ptr.dtype.element_ty)
