"""Devices and compute dtypes: which device a name means here, which float type a precision name means, and which one
is fast and accurate on a device. Imported by every layer above; imports only torch."""

from __future__ import annotations

import torch

# The one precision name -> dtype map ("int8" is a quantized model, not a dtype: see backends.resolve_precision).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' -> a device this machine has; ValueError naming the choices otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    choices = "auto, cpu, cuda, cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists two dozen device types this tool does not run on
        raise ValueError(f"device {name!r} is not one of {choices}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not one of {choices}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def canonical_device(device: torch.device | str) -> torch.device:
    """The device with its index: 'cuda' is the current CUDA device, the one a tensor created on 'cuda' reports
    ('cuda:0' != 'cuda' for torch, so a check of x.device against an unindexed device refuses every CUDA tensor)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def cpu_has_bf16() -> bool:
    """True where oneDNN has native bf16 (AVX512-BF16 or AMX), so bf16 autocast is faster, not slower."""
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def fast_dtype(device: torch.device) -> torch.dtype:
    """The 'auto' precision: bf16 on GPUs that have it (else fp16) and on CPUs with native bf16, else fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def dtype_of(name: str, device: torch.device) -> torch.dtype:
    """A precision name (auto, fp32, bf16, fp16) -> its dtype on device; ValueError naming the choices otherwise."""
    if name == "auto":
        return fast_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"precision must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training/benchmark `amp` setting (auto, off, bf16, fp16), or None for fp32."""
    if amp == "off":
        return None
    dtype = dtype_of(amp, device)
    return None if dtype == torch.float32 else dtype
