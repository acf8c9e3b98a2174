"""Classifier preprocessing geometry: resize the short side, take the central window, each head's own sizes."""

from __future__ import annotations

import numpy as np
from torch import nn


def resize_short_side(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """(H, W, ...) uint8 -> short side `size`, aspect kept; bicubic (antialiased) for photos, nearest for masks."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / min(h, w)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return np.array(Image.fromarray(image).resize(new, Image.NEAREST if nearest else Image.BICUBIC))


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size window (the odd pixel goes to the bottom/right margin)."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"image {h}x{w} is smaller than the {size}px crop")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def classifier_geometry(head: nn.Module, resize: int | None = None, crop: int | None = None) -> tuple[int, int]:
    """(short side, crop) of a classifier's preprocessing: the head's own (EfficientNet-Lite scales) or 256 / 224."""
    scale = getattr(head, "scale", None)
    crop = crop or getattr(scale, "resolution", 224)
    return resize or (getattr(scale, "resize", None) or round(crop * 8 / 7)), crop
