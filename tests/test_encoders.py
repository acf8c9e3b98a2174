"""The output encoders (PNG at every level, JPEG by imagecodecs or Pillow) and the decoders' fast path
(`images.plain_decode`): the same pixels as Pillow, on random images of odd sizes, with and without imagecodecs."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from fastdenoise import encoders
from fastdenoise.encoders import PNG_LEVELS, write_encoded, write_png
from fastdenoise.images import load_rgb, save_rgb

SIZES = [(1, 1), (7, 13), (33, 64), (96, 71)]


def png_bytes(image: np.ndarray, level: int) -> bytes:
    handle = io.BytesIO()
    write_png(handle, image, level)
    return handle.getvalue()


@pytest.fixture(params=["imagecodecs", "fallback"])
def codecs(request, monkeypatch):
    """Each test twice: with imagecodecs (skipped where it is absent) and as without it (zlib, Pillow)."""
    if request.param == "imagecodecs":
        pytest.importorskip("imagecodecs")
    else:
        monkeypatch.setattr(encoders, "imagecodecs_module", lambda: None)
        monkeypatch.setattr("fastdenoise.images.imagecodecs_module", lambda: None)
    return request.param


@pytest.mark.parametrize("level", list(PNG_LEVELS))
def test_every_png_level_decodes_to_the_same_pixels(level, make_image, codecs):
    for h, w in SIZES:
        image = make_image(h, w)
        data = png_bytes(image, level)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), image)


def test_fast_levels_write_a_plain_rgb_png_and_level_0_stores(make_image, codecs):
    image = make_image(96, 71)
    sizes = {}
    for level in (0, 1, 3):
        data = png_bytes(image, level)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
        assert struct.unpack(">IIBB", data[16:26]) == (71, 96, 8, 2)  # width, height, 8 bits, RGB
        Image.open(io.BytesIO(data)).verify()  # every chunk's CRC
        sizes[level] = len(data)
    assert sizes[0] > 96 * (1 + 71 * 3) > max(sizes[1], sizes[3])  # stored: the scanlines and the headers


def test_without_imagecodecs_png_levels_1_to_9_are_pillows_bytes(make_image, monkeypatch):
    monkeypatch.setattr(encoders, "imagecodecs_module", lambda: None)
    image = make_image(33, 64)
    for level in range(1, 10):
        pillows = io.BytesIO()
        Image.fromarray(image).save(pillows, format="PNG", compress_level=level)
        assert png_bytes(image, level) == pillows.getvalue(), level


@pytest.mark.parametrize("level", [-1, 10])
def test_a_png_level_out_of_range_is_refused_and_nothing_is_left(level, tmp_path, make_image):
    with pytest.raises(ValueError, match="0..9"):
        save_rgb(make_image(8, 8), tmp_path / "a.png", png_level=level)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quality", [1, 50, 75, 92, 100])
def test_jpeg_by_imagecodecs_is_byte_for_byte_pillows(quality, make_image):
    pytest.importorskip("imagecodecs")
    for h, w in SIZES:
        image = make_image(h, w)
        ours, pillows = io.BytesIO(), io.BytesIO()
        write_encoded(ours, image, "JPEG", quality, 1)
        Image.fromarray(image).save(pillows, format="JPEG", quality=quality)
        assert ours.getvalue() == pillows.getvalue()


def pillow_rgb(path) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 90},
        {"quality": 95, "subsampling": 0},
        {"quality": 80, "subsampling": 1},
        {"quality": 85, "progressive": True},
        {"quality": 70, "restart_marker_blocks": 2},
    ],
)
def test_jpegs_decode_to_pillows_pixels(options, tmp_path, make_image, codecs):
    for h, w in SIZES:
        path = tmp_path / f"{h}x{w}.jpg"
        Image.fromarray(make_image(h, w)).save(path, **options)
        assert np.array_equal(load_rgb(path), pillow_rgb(path))
        Image.fromarray(make_image(h, w)[..., 0]).save(path, **options)  # grey
        assert np.array_equal(load_rgb(path), pillow_rgb(path))


def test_exif_rotation_and_cmyk_go_through_pillow(tmp_path, make_image, codecs):
    image = make_image(33, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the output is 64 x 33
    Image.fromarray(image).save(tmp_path / "r.jpg", quality=90, exif=exif)
    Image.fromarray(image).save(tmp_path / "r.png", exif=exif)
    for name in ("r.jpg", "r.png"):
        assert load_rgb(tmp_path / name).shape == (64, 33, 3)
        assert np.array_equal(load_rgb(tmp_path / name), pillow_rgb(tmp_path / name))
    Image.fromarray(image).convert("CMYK").save(tmp_path / "c.jpg", quality=90)
    assert np.array_equal(load_rgb(tmp_path / "c.jpg"), pillow_rgb(tmp_path / "c.jpg"))


def test_pngs_decode_to_pillows_pixels(tmp_path, make_image, codecs):
    image = make_image(33, 64)
    Image.fromarray(image).save(tmp_path / "rgb.png")
    Image.fromarray(image).save(tmp_path / "key.png", transparency=tuple(int(v) for v in image[0, 0]))
    Image.fromarray(image[..., 0]).save(tmp_path / "grey.png")
    for path in sorted(tmp_path.iterdir()):
        assert np.array_equal(load_rgb(path), pillow_rgb(path)), path.name
