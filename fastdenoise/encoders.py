"""Encoders of a run's outputs: PNG stored (level 0) and, with imagecodecs, levels 1-3 (one filter, libdeflate: 3.7x
Pillow's level 1 for 5% more bytes) written here, the rest by Pillow (without imagecodecs, Pillow's very bytes); JPEG by
imagecodecs' libjpeg-turbo where installed (Pillow's very bytes, 1.3-2x faster). Numbers: bench/host_pipeline.py."""

from __future__ import annotations

import functools
import struct
import zlib
from typing import IO

import numpy as np

PNG_LEVELS = range(10)
DEFAULT_PNG_LEVEL = 1  # bench/host_pipeline.py: the fastest level that keeps Pillow's level-1 size (within ~5%)
FAST_PNG_LEVELS = range(1, 4)  # here with libdeflate; 4-9 by Pillow, whose per-row adaptive filters are smaller, slower
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@functools.cache
def imagecodecs_module():
    """imagecodecs where installed (pip install 'fastdenoise[fast]'), else None: the encoders fall back."""
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs


def deflate(data: np.ndarray, level: int) -> bytes:
    """A zlib stream of data's bytes: stored at level 0 (a copy and a checksum), else by libdeflate."""
    codecs = imagecodecs_module()
    return zlib.compress(data, 0) if level == 0 or codecs is None else codecs.deflate_encode(data, level=level)


def filtered_rows(image: np.ndarray, level: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, 1 + 3W) PNG scanlines: at level 0 unfiltered (type 0), else the Sub filter (type 1: each
    byte less the byte 3 before it, mod 256), which one pass of numpy computes (read 3HW, write 3HW)."""
    rows = image.reshape(image.shape[0], -1)
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = 0 if level == 0 else 1
    if level == 0:
        out[:, 1:] = rows
    else:
        out[:, 1:4] = rows[:, :3]
        np.subtract(rows[:, 3:], rows[:, :-3], out=out[:, 4:])
    return out


def write_chunk(handle: IO[bytes], kind: bytes, data: bytes | np.ndarray) -> None:
    view = memoryview(data).cast("B")
    handle.write(struct.pack(">I", len(view)) + kind)
    handle.write(view)
    handle.write(struct.pack(">I", zlib.crc32(view, zlib.crc32(kind))))


def write_png(handle: IO[bytes], image: np.ndarray, level: int) -> None:
    """An (H, W, 3) uint8 image as an 8-bit RGB PNG: level 0 stored here (Pillow filters even what it stores: 15x
    slower), 1-3 here where imagecodecs is installed (one filter, libdeflate), the others by Pillow."""
    if level not in PNG_LEVELS:
        raise ValueError(f"PNG level must be in 0..9, got {level}")
    if level != 0 and (level not in FAST_PNG_LEVELS or imagecodecs_module() is None):
        from PIL import Image

        Image.fromarray(image).save(handle, format="PNG", compress_level=level)
        return
    height, width = image.shape[:2]
    handle.write(PNG_SIGNATURE)
    write_chunk(handle, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))  # 8-bit RGB, no interlace
    write_chunk(handle, b"IDAT", deflate(filtered_rows(np.ascontiguousarray(image), level), level))
    write_chunk(handle, b"IEND", b"")


def write_jpeg(handle: IO[bytes], image: np.ndarray, quality: int) -> None:
    """Baseline JPEG, 4:2:0, at quality: the bytes Pillow writes with its defaults, by imagecodecs where installed."""
    codecs = imagecodecs_module()
    if codecs is None:
        from PIL import Image

        Image.fromarray(image).save(handle, format="JPEG", quality=quality)
    else:
        handle.write(codecs.jpeg8_encode(np.ascontiguousarray(image), level=quality, subsampling="420"))


def write_encoded(handle: IO[bytes], image: np.ndarray, fmt: str, quality: int, png_level: int) -> None:
    """An (H, W, 3) uint8 image in Pillow's format name `fmt` (PNG, JPEG, WEBP, BMP, TIFF) to handle."""
    if fmt == "PNG":
        write_png(handle, image, png_level)
    elif fmt == "JPEG":
        write_jpeg(handle, image, quality)
    else:
        from PIL import Image

        options = {"quality": quality} if fmt == "WEBP" else {}
        Image.fromarray(image).save(handle, format=fmt, **options)
