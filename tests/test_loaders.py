import sys
from pathlib import Path

import numpy as np
import pytest
from image_files import broken_samples, format_samples
from PIL import Image

import fastdenoise.pipeline.loaders as loaders
from fastdenoise.images import load_rgb
from fastdenoise.pipeline.loaders import DaliLoader, PilLoader, make_loader

needs_dali = pytest.mark.skipif(
    not loaders.dali_available(), reason="nvidia-dali not installed (pip install nvidia-dali-cuda130)"
)


class Item:
    def __init__(self, path: Path) -> None:
        self.path = path


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("samples")
    return format_samples(root / "good", rng) | broken_samples(root / "bad", rng)


def by_name(decoded) -> dict:
    return {Path(d.item.path).name: d for d in decoded}


def test_pil_loader_keeps_order_and_reports_each_bad_file(samples):
    items = [Item(p) for p in samples.values()]
    decoded = list(PilLoader(workers=2, depth=3)(items))
    assert [d.item for d in decoded] == items
    errors = {Path(d.item.path).name: str(d.error) for d in decoded if d.error}
    assert set(errors) == {"truncated.jpg", "truncated_png.png", "zero.jpg", "text.jpg"}
    assert all(name in message for name, message in errors.items())
    assert all(d.image.dtype == np.uint8 and d.image.shape[2] == 3 for d in decoded if not d.error)


def test_orientation_and_alpha_follow_the_documented_rules(samples):
    with Image.open(samples["exif6.jpg"]) as im:
        raw = np.array(im.convert("RGB"))
    assert np.array_equal(load_rgb(samples["exif6.jpg"]), np.rot90(raw, k=-1))  # 6: rotate 90 degrees clockwise
    with Image.open(samples["rgba.png"]) as im:
        rgba = np.array(im).astype(np.float64)
    expected = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
    assert np.abs(load_rgb(samples["rgba.png"]) - expected).max() <= 1  # composited on white
    dark = load_rgb(samples["dark16.png"])
    with Image.open(samples["dark16.png"]) as im:
        assert dark.max() == round(np.array(im).max() / 257)  # 16-bit stays 16-bit however dark


@needs_dali
def test_dali_and_pil_loaders_give_identical_pixels(samples, monkeypatch):
    items = [Item(p) for p in samples.values()]
    pil = by_name(PilLoader()(items))
    fallbacks = []
    load = loaders.timed_load
    monkeypatch.setattr(
        loaders, "timed_load", lambda path, *rest: (fallbacks.append(Path(path).name), load(path, *rest))[1]
    )
    dali = by_name(DaliLoader(batch=3, workers=2, chunk=8)(items))
    assert set(dali) == set(pil)
    for name in pil:
        a, b = pil[name], dali[name]
        assert (a.error is None) == (b.error is None), name
        if a.error:
            assert str(a.error) == str(b.error)
        else:
            assert a.image.shape == b.image.shape and np.array_equal(a.image, b.image), name
    # DALI really decoded the common cases (JPEG incl. every EXIF orientation, PNG, grey, palette, WebP, BMP, PNM);
    # Pillow only got the cases routed to it and the batches DALI failed on.
    routed = {
        "rgba.png",
        "grey_alpha.png",
        "palette_transparent.png",
        "grey16.png",
        "dark16.png",
        "rgb16.png",
        "cmyk.jpg",
        "alpha.webp",
        "plain_tiff.tif",
        "zero.jpg",
        "text.jpg",
    }
    decoded_by_dali = set(pil) - set(fallbacks)
    assert {
        "q90.jpg",
        "progressive.jpg",
        "exif6.jpg",
        "exif3.jpg",
        "grey.png",
        "palette.png",
        "lossy.webp",
    } <= decoded_by_dali
    assert routed <= set(fallbacks)
    assert len(set(fallbacks) - routed) <= 2 * 3  # the two batches holding the truncated files


def test_make_loader_explains_a_missing_dali(monkeypatch):
    assert isinstance(make_loader("auto", device="cpu"), PilLoader)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    assert isinstance(make_loader("auto", device="cuda"), PilLoader)
    with pytest.raises(ImportError, match="pip install nvidia-dali"):
        make_loader("dali")
    with pytest.raises(ValueError):
        make_loader("opencv")


@needs_dali
def test_dali_that_cannot_build_hands_everything_to_pillow(samples, monkeypatch):
    def broken(self, files):
        raise RuntimeError("no CUDA driver")

    monkeypatch.setattr(DaliLoader, "pipeline", broken)
    items = [Item(samples[name]) for name in ("q90.jpg", "grey.png", "exif6.jpg")]
    with pytest.warns(UserWarning, match="Pillow instead"):
        decoded = list(DaliLoader(batch=2)(items))
    assert [d.item for d in decoded] == items
    assert all(np.array_equal(d.image, load_rgb(d.item.path)) for d in decoded)


def jpeg_bytes(rng: np.random.Generator, h: int, w: int, **options) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90, **options)
    return buf.getvalue()


def claim_size(data: bytes, h: int, w: int) -> bytes:
    """The JPEG with its frame header (SOF) patched to say h x w; the scan data stays that of the small image."""
    sof = next(data.find(m) for m in (b"\xff\xc0", b"\xff\xc2") if data.find(m) > 0)
    return data[: sof + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + data[sof + 9 :]


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_whose_header_claims_more_than_its_data_is_an_error_quickly(tmp_path, progressive):
    import time

    from fastdenoise.images import ImageError, read_header

    rng = np.random.default_rng(27)
    small = jpeg_bytes(rng, 64, 64, progressive=progressive)
    cases = {
        "claims.jpg": claim_size(small, 2000, 3000),
        "cut.jpg": small[: len(small) // 2],
        "tiny_claims.jpg": claim_size(jpeg_bytes(rng, 8, 8), 7000, 9000),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        tick = time.perf_counter()
        with pytest.raises(ImageError, match=name):
            load_rgb(tmp_path / name)
        assert time.perf_counter() - tick < 2.0, name
    with pytest.raises(ImageError, match="shorter than its header says"):
        read_header(tmp_path / "claims.jpg")  # the dry run and the DALI loader see it too
    decoded = list(PilLoader(workers=1)([Item(tmp_path / name) for name in cases]))  # what a run gets: error rows
    assert all(d.image is None and str(d.error).startswith(str(tmp_path)) for d in decoded)
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(small)
    assert load_rgb(whole).shape == (64, 64, 3) and read_header(whole).height == 64  # a whole file still decodes
