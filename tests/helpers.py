"""Small shared test helpers (importable: pytest puts tests/ on sys.path)."""

import hashlib
from pathlib import Path

import numpy as np
import torch

from fastdenoise.images import save_rgb
from fastdenoise.models.denoiser import DenoiserSpec

SMALL = DenoiserSpec(c0=8, c1=12, c2=12, mid=4, up2=4, c3=16, mid3=8, up1=8)


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, as after training."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def synthetic_data(root: Path, rng: np.random.Generator, count: int = 2, size: int = 24) -> Path:
    """root/kodak24 with `count` random PNGs and a SHA256SUMS listing them, as in ../shared/data."""
    folder = root / "kodak24"
    folder.mkdir(parents=True)
    lines = []
    for i in range(count):
        path = folder / f"kodim{i + 1:02d}.png"
        save_rgb(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8), path)
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  ./kodak24/{path.name}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root
