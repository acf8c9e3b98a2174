"""The built-in default job: scikit-image's sample photos, noised, denoised with the bundled weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastdenoise.datasets import sample_photos
from fastdenoise.evaluation.evaluate import Denoise
from fastdenoise.images import save_rgb
from fastdenoise.metrics import psnr
from fastdenoise.noise import add_noise, to_uint8


def run_demo(denoise: Denoise, out: Path, sigma: float = 25.0, seed: int = 0) -> list[dict]:
    """Noise, denoise and score each sample; write noisy | denoised | clean strips to `out`."""
    rows = []
    for i, (name, clean) in enumerate(sample_photos().items()):
        noisy = add_noise(clean, sigma, seed, i)
        noisy8, denoised = to_uint8(noisy), to_uint8(denoise(noisy, sigma))
        gap = np.full((clean.shape[0], 8, 3), 255, np.uint8)
        save_rgb(np.concatenate([noisy8, gap, denoised, gap, clean], axis=1), out / f"{name}.png")
        rows.append(
            {
                "image": name,
                "size": f"{clean.shape[1]}x{clean.shape[0]}",
                "noisy_psnr": psnr(noisy8, clean),
                "psnr": psnr(denoised, clean),
            }
        )
    return rows
