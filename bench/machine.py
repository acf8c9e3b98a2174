"""Facts about the machine and software a benchmark ran on, stored with every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict:
    import torch

    facts = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in ("torch", "triton", "onnxruntime", "tensorrt", "nvidia-dali-cuda130", "numpy", "fastdenoise")},
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}", "memory_gib": props.total_memory / 2**30,
                        "cuda": torch.version.cuda}  # fmt: skip
        try:
            facts["gpu"]["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        facts["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        facts["commit"] = None
    return facts


def machine_name(facts: dict) -> str:
    """A folder name for bench/results/: the GPU if any, else the CPU model and core count."""
    label = facts["gpu"]["name"] if facts.get("gpu") else f"{facts['cpu']}-{facts['cores']}c"
    return "".join(c if c.isalnum() else "-" for c in label).strip("-").lower()
