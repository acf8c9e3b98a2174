"""Image files at the two ends of every pipeline: listing, decoding to RGB uint8, atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}


class ImageError(ValueError):
    """A file that cannot be read as an image; the message names the file and the reason."""


def iter_images(root: Path) -> Iterator[Path]:
    """Yield image files under root, recursively, in sorted order, streaming one folder at a time.

    Hidden files and folders are skipped; symlinks that leave root or loop are not followed.
    """
    root = Path(root)
    real_root = root.resolve()

    def walk(folder: Path, seen: frozenset[str]) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_root) or str(target) in seen:
                    continue
            if entry.is_dir():
                real = str(path.resolve())
                if real not in seen:
                    yield from walk(path, seen | {real})
            elif path.suffix.lower() in EXTENSIONS:
                yield path

    yield from walk(root, frozenset({str(real_root)}))


def list_images(root: Path) -> list[Path]:
    """Sorted list of the image files under root (see `iter_images`)."""
    return list(iter_images(root))


def load_rgb(path: Path) -> np.ndarray:
    """Decode any supported file to an (H, W, 3) uint8 RGB array, EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(im, dtype=np.float64)
                scale = 65535.0 if array.max() > 255 else 255.0
                grey = np.clip(np.rint(array / scale * 255.0), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                # Composite on white so transparent pixels have a defined colour.
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as err:
        raise ImageError(f"{path}: no such file") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not a recognised image format") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode ({err})") from err


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation, read from the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not a recognised image format") from err
    except OSError as err:
        raise ImageError(f"{path}: cannot read header ({err})") from err
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def save_rgb(image: np.ndarray, path: Path, quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 image atomically: a temporary name in the same folder, then rename."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unsupported output format {suffix!r}; use one of {sorted(FORMATS)}")
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {"compress_level": 1} if fmt == "PNG" else {}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(image).save(handle, format=fmt, **options)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
