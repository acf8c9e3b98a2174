"""Facts about the machine and software a benchmark ran on, stored with every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = (
    "torch",
    "triton",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
    "tensorrt",
    "nvidia-dali-cuda130",
    "numpy",
    "pillow",
    "imagecodecs",
    "bm3d",
    "fastdenoise",
)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The /proc/cpuinfo flags that decide which SIMD paths codecs and kernels take (a subset: the full list is long).
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "bmi2",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "sha_ni",
    "vaes",
    "neon",
    "asimd",
    "sve",
)


def cpu_flags() -> list[str]:
    """The ISA_FLAGS this CPU has (empty where /proc/cpuinfo cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                found = set(line.split(":", 1)[1].split())
                return [flag for flag in ISA_FLAGS if flag in found]
    except OSError:
        pass
    return []


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products without AVX2's 16-bit saturation


def cpu_has_int8_dot(flags: list[str] | None = None) -> bool:
    """True where the CPU multiplies int8 natively (VNNI or AMX): where OpenVINO's int8 is worth its cost."""
    return any(flag in INT8_DOT_FLAGS for flag in (cpu_flags() if flags is None else flags))


def machine_facts() -> dict:
    """CPU model, ISA flags and cores (all, and those this process may use), GPU name/driver/CUDA, package versions,
    git commit (and whether the tree was dirty)."""
    import torch

    from fastdenoise.devices import cpu_has_bf16

    facts = {
        "cpu": cpu_model(),
        "isa": cpu_flags(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_has_bf16(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in PACKAGES},
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": props.total_memory / 2**30,
            "cuda": torch.version.cuda,
        }
        try:
            facts["gpu"]["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    facts["commit"] = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    facts["dirty"] = bool(status) if status is not None else None
    return facts


def machine_name(facts: dict) -> str:
    """A folder name for bench/results/: the GPU if any, else the CPU model and core count."""
    label = facts["gpu"]["name"] if facts.get("gpu") else f"{facts['cpu']}-{facts['cores']}c"
    return "".join(c if c.isalnum() else "-" for c in label).strip("-").lower()
