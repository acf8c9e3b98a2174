"""Overlapping tiles for images larger than the tile size: activation memory bounded by the tile, no seams."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from fastdenoise.backends import Backend
from fastdenoise.models.denoiser import STRIDE


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of the tiles along one axis. Starts are multiples of the network stride so every tile sees the
    same downsampling grid as the whole image; the last tile ends at the border (up to STRIDE - 1 longer)."""
    if length <= tile + STRIDE - 1:
        return [(0, length)]
    starts = list(range(0, length - tile, tile - overlap))
    last = (length - tile) // STRIDE * STRIDE
    if last > starts[-1]:
        starts.append(last)
    return [(s, s + tile) for s in starts[:-1]] + [(starts[-1], length)]


def ramp(length: int, overlap: int, start_edge: bool, end_edge: bool) -> Tensor:
    """1-D blend weights: linear ramps over `overlap` pixels except at the image borders."""
    i = torch.arange(length, dtype=torch.float32) + 0.5
    w = torch.ones(length)
    if not start_edge:
        w = torch.minimum(w, i / overlap)
    if not end_edge:
        w = torch.minimum(w, (length - i) / overlap)
    return w


@torch.inference_mode()
def denoise_tiled(backend: Backend, x: Tensor, tile: int = 512, overlap: int = 64, batch: int = 4) -> Tensor:
    """Denoise one (1, 3, H, W) CPU image tile by tile; tiles of equal shape go through the backend in batches."""
    if tile % STRIDE or overlap % STRIDE or not 0 < overlap < tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {STRIDE} with 0 < overlap < tile")
    _, c, h, w = x.shape
    out = torch.zeros(c, h, w)
    weight = torch.zeros(1, h, w)
    by_shape: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for y, y1 in tile_spans(h, tile, overlap):
        for x0, x1 in tile_spans(w, tile, overlap):
            by_shape[(y1 - y, x1 - x0)].append((y, x0))
    for (th, tw), origins in by_shape.items():
        for k in range(0, len(origins), batch):
            group = origins[k : k + batch]
            tiles = torch.cat([x[..., y : y + th, x0 : x0 + tw] for y, x0 in group]).to(backend.device)
            result = backend(tiles).cpu()
            for (y, x0), t in zip(group, result):
                wy = ramp(th, overlap, y == 0, y + th >= h)
                wx = ramp(tw, overlap, x0 == 0, x0 + tw >= w)
                w2 = wy[:, None] * wx[None, :]
                out[:, y : y + th, x0 : x0 + tw] += t * w2
                weight[:, y : y + th, x0 : x0 + tw] += w2
    return (out / weight)[None]
