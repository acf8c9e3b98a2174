"""The one noise protocol used everywhere: sigma in 0-255 units, seeded per image, noisy input not clipped.

Image i of a sorted folder gets ``default_rng([seed, i]).standard_normal((H, W, 3)) * sigma / 255`` added to the
float image in [0, 1]. Outputs are clipped and rounded to uint8 before any metric.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SIGMA_MAX = 255.0


def check_sigma(sigma: float) -> float:
    """Return sigma as float, or raise ValueError if it is outside [0, 255]."""
    value = float(sigma)
    if not 0.0 <= value <= SIGMA_MAX or value != value:
        raise ValueError(f"sigma must be in [0, {SIGMA_MAX:g}] (0-255 units), got {sigma!r}")
    return value


def add_noise(image: np.ndarray, sigma: float, seed: int, index: int) -> np.ndarray:
    """uint8 (H, W, C) image -> float32 noisy image, [0, 1] plus unclipped Gaussian noise."""
    sigma = check_sigma(sigma)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) image, got {image.dtype} {image.shape}")
    noise = np.random.default_rng([seed, index]).standard_normal(image.shape) * (sigma / 255.0)
    return (image / 255.0 + noise).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any range) -> uint8, clipped and rounded."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def store_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Float (H, W, 3) image (any range) as a camera stores it: clipped, 8-bit, JPEG at `quality` with 4:2:0 chroma,
    decoded back to float32 in [0, 1]. Noise then JPEG is how phones and cameras keep a noisy photo."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, "JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32) / 255.0
