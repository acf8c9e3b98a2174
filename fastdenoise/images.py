"""Image files at the two ends of every pipeline: listing every input (with a reason for each one that is not an image
to denoise), decoding to RGB uint8, atomic writes that never follow a planted link."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fastdenoise.choices import ImageFormat
from fastdenoise.encoders import DEFAULT_PNG_LEVEL, imagecodecs_module, write_encoded
from fastdenoise.files import atomic_write

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
FORMATS = {f.value: f.suffix for f in ImageFormat}  # output format -> the suffix its files get
PIL_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


class ImageError(ValueError):
    """A file that cannot be read as an image; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing found under the input folder: an image to denoise (problem None) or a file or folder left alone."""

    path: Path
    rel: str  # relative to the input folder, '/'-separated
    problem: str | None = None
    # A later file of a folder with the stem of an earlier one (a.png after a.jpg) keeps its extension in its output
    # name (a.png.png), so both are denoised; see `writers.output_path`.
    keep_extension: bool = False


def follow_link(path: Path, real_root: Path) -> tuple[Path | None, str | None]:
    """Where a symlink under the input folder leads, or why it is not followed (a loop, broken, leaves the folder)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # RuntimeError: a loop, on Python < 3.13
        loop = isinstance(err, RuntimeError) or getattr(err, "errno", None) == errno.ELOOP
        return None, "symlink loop, not followed" if loop else "broken symlink"
    if not real.is_relative_to(real_root):
        return None, "symlink to outside the input folder, not followed"
    return real, None


def iter_entries(root: Path) -> Iterator[Entry]:
    """Yield every file under root once, in sorted order, streaming one folder at a time.

    Images come with problem None; everything else (other extensions, hidden files and folders, special files,
    symlinks that leave root, loop or dangle) comes with the reason it is left alone. Of images that share a stem in
    one folder (a.jpg, a.png) the first by name keeps the plain output name and each later one keeps its extension
    in it (`Entry.keep_extension`); the rare name that would still collide (an input named like such an output) is
    left alone with the reason.
    """
    root = Path(root)
    real_root = root.resolve()

    def walk(folder: Path, rel: str, chain: frozenset[str]) -> Iterator[Entry]:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as err:
            yield Entry(folder, rel or ".", f"cannot list folder: {err.strerror or err}")
            return
        stems: dict[str, str] = {}
        for entry in entries:
            path, name = Path(entry.path), f"{rel}{entry.name}"
            if entry.name.startswith("."):
                yield Entry(path, name, "hidden, not searched")
                continue
            real, problem = follow_link(path, real_root) if entry.is_symlink() else (None, None)
            if problem:
                yield Entry(path, name, problem)
                continue
            try:
                mode = path.stat().st_mode
            except OSError as err:
                if path.suffix.lower() in EXTENSIONS:  # an image that vanished (or went unreadable) since the listing:
                    yield Entry(path, name)  # the run tries it and gives it an error row
                else:
                    yield Entry(path, name, f"cannot stat: {err.strerror or err}")
                continue
            if stat.S_ISDIR(mode):
                real_dir = str(real or path.resolve())
                if real_dir in chain:
                    yield Entry(path, name, "symlink loop, not followed")
                else:
                    yield from walk(path, name + "/", chain | {real_dir})
            elif not stat.S_ISREG(mode):
                yield Entry(path, name, "not a regular file")
            elif path.suffix.lower() not in EXTENSIONS:
                yield Entry(path, name, f"not an image extension ({path.suffix or 'none'})")
            elif path.stem in stems and entry.name in stems:
                yield Entry(path, name, f"output name taken by {rel}{stems[entry.name]}: outputs would collide")
            elif path.stem in stems:
                stems[entry.name] = entry.name
                yield Entry(path, name, keep_extension=True)
            else:
                stems[path.stem] = entry.name
                yield Entry(path, name)

    yield from walk(root, "", frozenset({str(real_root)}))


def iter_images(root: Path) -> Iterator[Path]:
    """Yield the image files under root (see `iter_entries`), streaming."""
    return (e.path for e in iter_entries(root) if e.problem is None)


def list_images(root: Path) -> list[Path]:
    """The image files under root (see `iter_entries`)."""
    return list(iter_images(root))


@dataclass(frozen=True, slots=True)
class Header:
    """What the file header says, read without decoding pixels."""

    format: str
    mode: str
    height: int  # after EXIF orientation
    width: int
    transparency: bool


def read_header(path: Path) -> Header:
    """Format, mode, oriented size and whether the image has transparency, from the header alone (and, for a JPEG,
    that its data is not shorter than that size needs: `check_data`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            alpha = "A" in im.mode or "a" in im.mode or "transparency" in im.info
            fmt, mode = im.format or "", im.mode
        check_data(path, fmt, w, h)
    except FileNotFoundError as err:
        raise ImageError(f"{path}: no such file") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not a recognised image format") from err
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot read header ({err})") from err
    h, w = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    return Header(fmt, mode, h, w, alpha)


def stored_as_jpeg(path: Path) -> bool:
    """Whether the file holds a JPEG (its first bytes, whatever its name says); False where it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(3) == b"\xff\xd8\xff"
    except OSError:
        return False


# A JPEG marker in entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart marker (RSTn) or a fill 0xFF.
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended, progressive: every 8x8 block costs >= 1 bit


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def jpeg_blocks(frame: bytes) -> int:
    """8x8 blocks of every component of a start-of-frame segment (its payload)."""
    height, width, count = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big"), frame[5]
    factors = [(frame[7 + 3 * k] >> 4, frame[7 + 3 * k] & 15) for k in range(count)]
    hmax, vmax = max(h for h, _ in factors), max(v for _, v in factors)
    return sum(ceil_div(ceil_div(width * h, hmax), 8) * ceil_div(ceil_div(height * v, vmax), 8) for h, v in factors)


def scan_length(handle: BinaryIO, enough: int) -> int:
    """Bytes of entropy-coded data from here to the next marker (left unread), or to `enough` if that comes first."""
    seen, carry = 0, b""
    while seen < enough:
        chunk = handle.read(1 << 16)
        if not chunk:
            break
        data, carry = carry + chunk, b""
        found = JPEG_MARKER.search(data)
        if found:
            handle.seek(found.start() - len(data), os.SEEK_CUR)
            return seen + found.start()
        if data.endswith(b"\xff"):  # perhaps the first byte of a marker
            data, carry = data[:-1], b"\xff"
        seen += len(data)
    return seen


def jpeg_data(handle: BinaryIO) -> tuple[int, int]:
    """(bytes of entropy-coded data, counted until there are enough; bits the frame needs at least), read through
    the first image's segments (0, 0 for frame types not checked: lossless, hierarchical, arithmetic-coded)."""
    needed = seen = 0
    handle.read(2)  # SOI
    while not needed or seen * 8 < needed:
        marker = handle.read(2)
        if len(marker) < 2 or marker[0] != 0xFF or marker[1] == 0xD9:  # the end, or not a marker where one belongs
            break
        kind = marker[1]
        if kind == 0xFF:  # a fill byte before the marker
            handle.seek(-1, os.SEEK_CUR)
            continue
        if 0xD0 <= kind <= 0xD7 or kind == 0x01:  # markers without a length
            continue
        length = int.from_bytes(handle.read(2), "big")
        if kind in HUFFMAN_FRAMES:
            needed = jpeg_blocks(handle.read(length - 2))
            continue
        if 0xC3 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            return 0, 0
        handle.seek(length - 2, os.SEEK_CUR)  # skipped, not read: an APP segment may be large
        if kind == 0xDA:  # start of scan: its entropy-coded data follows
            seen += scan_length(handle, ceil_div(needed, 8) - seen)
    return seen, needed


def check_data(path: Path, fmt: str, width: int, height: int) -> None:
    """Raise ImageError where a JPEG's scans hold fewer bytes than its header's size needs (truncated, or a header
    patched to claim more): libjpeg would fill the rest with grey and call it a whole image."""
    if fmt not in ("JPEG", "MPO"):
        return
    try:
        with open(path, "rb") as handle:
            seen, needed = jpeg_data(handle)
    except (IndexError, ValueError):  # a frame header cut short: the decoder says what is wrong
        return
    if seen * 8 < needed:
        raise ImageError(
            f"{path}: the data is shorter than its header says ({width}x{height} needs at least "
            f"{-(-needed // 8)} bytes of image data, the file has {seen}): truncated or corrupt"
        )


def too_large(header: Header, max_pixels: int | None) -> bool:
    return max_pixels is not None and header.height * header.width > max_pixels


def check_pixels(path: Path, height: int, width: int, max_pixels: int | None) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError(
            f"{path}: {width}x{height} = {height * width / 1e6:.1f} MP is over the pixel budget of "
            f"{max_pixels / 1e6:g} MP (--max-pixels); not decoded"
        )


def pil_rgb(im) -> np.ndarray:
    """A Pillow image as (H, W, 3) uint8 RGB: 16-bit greyscale scaled to 8 bits, transparency composited on white."""
    from PIL import Image

    if im.mode.startswith("I"):  # 16-bit greyscale (PNG, TIFF), or 32-bit integer
        array = np.asarray(im, dtype=np.float64)
        # 16-bit files span 0..65535 however dark they are; only a plain "I" image of 8-bit data is not.
        sixteen = im.mode.startswith("I;16") or im.format == "PNG" or array.max() > 255
        grey = np.clip(np.rint(array / (65535.0 if sixteen else 255.0) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        # Composite on white so transparent pixels have a defined colour.
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.array(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)  # convert would copy RGB


def png_has_exif(path: Path) -> bool:
    """Whether a PNG holds an eXIf chunk, wherever it is, read from the chunk headers alone (Pillow's getexif decodes
    the whole image to find one after the pixels)."""
    with open(path, "rb") as handle:
        handle.seek(8)  # the signature
        while len(header := handle.read(8)) == 8:
            if header[4:] in (b"eXIf", b"IEND"):
                return header[4:] == b"eXIf"
            handle.seek(int.from_bytes(header[:4], "big") + 4, os.SEEK_CUR)  # the data and its CRC
    return False


def plain_decode(path: Path, im) -> np.ndarray | None:
    """An opened file that Pillow would hand back as it is (a JPEG in RGB or grey, an 8-bit RGB PNG without a
    transparent colour; no EXIF rotation) decoded by imagecodecs (libjpeg-turbo, libpng) straight into numpy: the same
    pixels (tests/test_encoders.py) for a third of Pillow's CPU time (it decodes into 4-byte pixels, then copies).
    None where imagecodecs is absent or does not decode it whole."""
    codecs = imagecodecs_module()
    if codecs is None:
        return None
    jpeg = im.format == "JPEG" and im.mode in ("RGB", "L") and im.getexif().get(0x0112, 1) == 1  # EXIF orientation
    png = im.format == "PNG" and im.mode == "RGB" and "transparency" not in im.info and not png_has_exif(path)
    if not (jpeg or png):
        return None
    data = Path(path).read_bytes()
    if not data.endswith(b"\xff\xd9" if jpeg else b"IEND\xaeB`\x82"):
        return None  # cut short (libjpeg would fill the rest with grey), or followed by more: Pillow says which
    try:
        image = (codecs.jpeg8_decode if jpeg else codecs.png_decode)(data)
    except (codecs.Jpeg8Error, codecs.PngError):
        return None  # Pillow decodes it, or says what is wrong
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image if image.shape == (im.height, im.width, 3) and image.dtype == np.uint8 else None


def load_rgb(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode any supported file to an (H, W, 3) uint8 RGB array, EXIF orientation applied; a file whose header says
    more than max_pixels is refused (ImageError) before any pixel is decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            check_pixels(path, im.height, im.width, max_pixels)  # Image.open reads the header only
            check_data(path, im.format or "", im.width, im.height)
            plain = plain_decode(path, im)
            if plain is not None:
                return plain
            ImageOps.exif_transpose(im, in_place=True)  # not in place, it copies even an image it leaves as it is
            return pil_rgb(im)
    except FileNotFoundError as err:
        raise ImageError(f"{path}: no such file") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not a recognised image format") from err
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too many pixels ({err})") from err
    except (OSError, SyntaxError, ValueError, MemoryError) as err:
        raise ImageError(f"{path}: cannot decode ({err})") from err


def make_folders(root: Path, folder: Path) -> None:
    """mkdir -p of folder, a folder under root, without following a link at any step below root: a symlinked folder
    planted in root is refused (PermissionError) before anything is created through it."""
    parts = Path(folder).relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for k, part in enumerate(parts):
            with suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as err:
                if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                where = Path(root, *parts[: k + 1])
                reason = "a symlink: it could lead outside the output folder" if where.is_symlink() else "not a folder"
                raise PermissionError(errno.EACCES, f"{where} is {reason}; not followed", str(where)) from None
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def save_rgb(image: np.ndarray, path: Path, quality: int = 95, png_level: int = DEFAULT_PNG_LEVEL) -> None:
    """Write an (H, W, 3) uint8 image atomically (`files.atomic_write`): a final name only ever holds a whole file.
    quality: JPEG/WebP; png_level: PNG's compression level, 0-9 (`encoders.write_png`)."""
    path = Path(path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    fmt = PIL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported output format {path.suffix!r}; use one of {sorted(FORMATS)}")
    atomic_write(path, lambda handle: write_encoded(handle, image, fmt, quality, png_level), unique=False)
