"""Generated image files for the loader and reliability tests: every format and mode the loaders meet, and a folder
of good and bad inputs with what a run should make of each."""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import random_image
from PIL import Image


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def png16_rgb(array: np.ndarray, path: Path) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), encoded by hand: signature, IHDR, IDAT, IEND."""
    h, w, _ = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, 2, 0, 0, 0])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def flat_png(path: Path, height: int, width: int, colour: tuple[int, int, int]) -> None:
    """A single-colour 8-bit RGB PNG of any size, compressed row by row (a 12000x12000 one is ~420 KB on disk and
    never whole in memory here): the kind of file that is small on disk and huge once decoded."""
    row = b"\x00" + bytes(colour) * width
    squeeze = zlib.compressobj(9)
    data = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def format_samples(folder: Path, rng: np.random.Generator) -> dict[str, Path]:
    """One file per format / mode / orientation case, all valid images, odd sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = random_image(rng, 37, 53)
    alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    files: dict[str, tuple[Image.Image, dict]] = {
        "rgb.png": (Image.fromarray(rgb), {}),
        "grey.png": (Image.fromarray(rgb[..., 1]), {}),
        "rgba.png": (Image.fromarray(np.dstack([rgb, alpha])), {}),
        "grey_alpha.png": (Image.fromarray(np.dstack([rgb[..., 0], alpha])), {}),
        "palette.png": (Image.fromarray(rgb).convert("P"), {}),
        "palette_transparent.png": (Image.fromarray(rgb).convert("P"), {"transparency": 5}),
        "grey16.png": (Image.fromarray(rgb[..., 2].astype(np.uint16) * 257 + 3), {}),
        "dark16.png": (Image.fromarray(rgb[..., 2].astype(np.uint16) // 4), {}),  # 16-bit, every value < 256
        "q90.jpg": (Image.fromarray(rgb), {"quality": 90}),
        "q95_444.jpg": (Image.fromarray(rgb), {"quality": 95, "subsampling": 0}),
        "q75_422.jpg": (Image.fromarray(rgb), {"quality": 75, "subsampling": 1}),
        "progressive.jpg": (Image.fromarray(rgb), {"quality": 85, "progressive": True}),
        "grey_jpeg.jpg": (Image.fromarray(rgb[..., 0]), {"quality": 90}),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), {"quality": 90}),
        "exif6_png.png": (Image.fromarray(rgb), {"exif": exif(6)}),
        "one.png": (Image.fromarray(rgb[:1, :1]), {}),
        "one_jpeg.jpg": (Image.fromarray(rgb[:1, :1]), {"quality": 90}),
        "three_by_five.png": (Image.fromarray(rgb[:3, :5]), {}),
        "lossy.webp": (Image.fromarray(rgb), {"quality": 80}),
        "lossless.webp": (Image.fromarray(rgb), {"lossless": True}),
        "alpha.webp": (Image.fromarray(np.dstack([rgb, alpha])), {"lossless": True}),
        "plain.bmp": (Image.fromarray(rgb), {}),
        "plain_tiff.tif": (Image.fromarray(rgb), {}),
        "plain_ppm.ppm": (Image.fromarray(rgb), {}),
        "plain_pgm.pgm": (Image.fromarray(rgb[..., 0]), {}),
    }
    for k in range(1, 9):
        files[f"exif{k}.jpg"] = (Image.fromarray(rgb), {"quality": 90, "exif": exif(k)})
    paths = {}
    for name, (image, options) in files.items():
        image.save(folder / name, **options)
        paths[name] = folder / name
    png16_rgb(rgb.astype(np.uint16) * 257 + 11, folder / "rgb16.png")
    paths["rgb16.png"] = folder / "rgb16.png"
    return paths


def broken_samples(folder: Path, rng: np.random.Generator) -> dict[str, Path]:
    """Files with an image extension that are not decodable images."""
    folder.mkdir(parents=True, exist_ok=True)
    big = random_image(rng, 120, 160)
    jpeg, png = folder / "truncated.jpg", folder / "truncated_png.png"
    Image.fromarray(big).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    Image.fromarray(big).save(png)
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is a text file with an image extension\n" * 20)
    return {p.name: p for p in (jpeg, png, folder / "zero.jpg", folder / "text.jpg")}


@dataclass(frozen=True)
class Expect:
    status: str  # ok, error, ignored
    reason: str = ""  # a substring of the manifest's error for error / ignored rows
    shape: tuple[int, int] | None = None  # output (H, W) for ok rows


def bad_tree(root: Path, outside: Path, rng: np.random.Generator) -> dict[str, Expect]:
    """The issue's mix of good and bad inputs under root (plus a file in `outside` that a symlink points at);
    returns what each row of the manifest should say, by relative input path."""
    expect: dict[str, Expect] = {}
    samples = format_samples(root / "formats", rng)
    for name, path in samples.items():
        with Image.open(path) as im:
            w, h = im.size
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        expect[f"formats/{name}"] = Expect("ok", shape=(w, h) if turned else (h, w))
    # two inputs of one stem: the later one keeps its extension in its output name, both are denoised
    Image.fromarray(random_image(rng, 9, 9)).save(root / "formats" / "three_by_five.webp")
    expect["formats/three_by_five.webp"] = Expect("ok", shape=(9, 9))
    for name in broken_samples(root / "broken", rng):
        expect[f"broken/{name}"] = Expect(
            "error",
            {"zero.jpg": "not a recognised image", "text.jpg": "not a recognised image"}.get(name, "cannot decode"),
        )
    nested = root / "nested" / "deeper" / "deepest"
    nested.mkdir(parents=True)
    Image.fromarray(random_image(rng, 20, 12)).save(nested / "n.png")
    expect["nested/deeper/deepest/n.png"] = Expect("ok", shape=(20, 12))
    Image.fromarray(random_image(rng, 150, 90)).save(root / "larger than tile.png")
    expect["larger than tile.png"] = Expect("ok", shape=(150, 90))
    Image.fromarray(random_image(rng, 16, 24)).save(root / "ünïcödé naïve.png")
    expect["ünïcödé naïve.png"] = Expect("ok", shape=(16, 24))
    Image.fromarray(random_image(rng, 16, 24)).save(root / "with space.jpg", quality=90)
    expect["with space.jpg"] = Expect("ok", shape=(16, 24))
    Image.fromarray(random_image(rng, 8, 8)).save(root / ".hidden.png")
    expect[".hidden.png"] = Expect("ignored", "hidden")
    (root / ".cache").mkdir()
    Image.fromarray(random_image(rng, 8, 8)).save(root / ".cache" / "x.png")
    expect[".cache"] = Expect("ignored", "hidden")
    (root / "notes.txt").write_text("not an image")
    expect["notes.txt"] = Expect("ignored", "not an image extension")
    outside.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_image(rng, 8, 8)).save(outside / "secret.png")
    os.symlink(outside / "secret.png", root / "outside_link.png")
    expect["outside_link.png"] = Expect("ignored", "outside the input folder")
    os.symlink(outside, root / "outside_dir")
    expect["outside_dir"] = Expect("ignored", "outside the input folder")
    os.symlink("..", root / "nested" / "loop")  # nested/loop -> root: a cycle
    expect["nested/loop"] = Expect("ignored", "loop")
    os.symlink("self_link.png", root / "self_link.png")
    expect["self_link.png"] = Expect("ignored", "loop")
    os.symlink("missing.png", root / "dangling.png")
    expect["dangling.png"] = Expect("ignored", "broken symlink")
    os.symlink("nested/deeper/deepest/n.png", root / "inside_link.png")  # inside the input: followed
    expect["inside_link.png"] = Expect("ok", shape=(20, 12))
    os.mkfifo(root / "pipe.png")  # would block a naive open() forever
    expect["pipe.png"] = Expect("ignored", "not a regular file")
    return expect


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every path under root (symlinks not followed) with its type, size, mtime and content hash."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if skip is not None and path.is_relative_to(skip):
                continue
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None
            link = os.readlink(path) if path.is_symlink() else None
            found[str(path.relative_to(root))] = (
                st.st_mode,
                st.st_size if digest else 0,
                st.st_mtime_ns if digest else 0,
                digest,
                link,
            )
    return found
