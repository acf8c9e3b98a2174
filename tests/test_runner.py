import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.images import load_rgb, save_rgb
from fastdenoise.model import Denoiser
from fastdenoise.runner import RunConfig, denoise_folder
from helpers import SMALL, randomize_bn


@pytest.fixture
def backend():
    return make_backend(randomize_bn(Denoiser(SMALL)), BackendConfig(device="cpu", precision="fp32"))


@pytest.fixture
def tree(tmp_path, make_image) -> Path:
    src = tmp_path / "in"
    sizes = {"a.png": (32, 48), "b.jpg": (32, 48), "sub/c.png": (17, 23), "sub/deeper/d.png": (32, 48), "big.png": (150, 90)}
    for name, (h, w) in sizes.items():
        save_rgb(make_image(h, w), src / name)
    Image.fromarray(make_image(20, 30)[..., 0]).save(src / "sub" / "grey.png")  # greyscale
    (src / "broken.png").write_bytes(b"not an image at all")
    (src / "notes.txt").write_text("ignored: not an image extension")
    return src


def manifest(dst: Path) -> list[dict]:
    return [json.loads(line) for line in (dst / "manifest.jsonl").read_text().splitlines()]


def test_folder_run_mirrors_tree_and_reports_every_input(tree, tmp_path, backend):
    dst = tmp_path / "out"
    summary = denoise_folder(tree, dst, backend, RunConfig(batch=2, tile=64, overlap=16))
    rows = {r["input"]: r for r in manifest(dst)}
    assert set(rows) == {"a.png", "b.jpg", "sub/c.png", "sub/deeper/d.png", "big.png", "sub/grey.png", "broken.png"}
    assert rows["broken.png"]["status"] == "error" and "broken.png" in rows["broken.png"]["error"]
    assert (summary.ok, summary.failed, summary.skipped) == (6, 1, 0)
    for name, row in rows.items():
        if row["status"] != "ok":
            continue
        out = dst / row["output"]
        assert out.suffix == ".png" and out.exists()
        assert load_rgb(out).shape == load_rgb(tree / name).shape
    assert (dst / "b.png").exists()  # format change keeps the mirrored name
    assert not list(dst.rglob("*.part"))


def test_batched_equals_one_by_one(tree, tmp_path, backend):
    denoise_folder(tree, tmp_path / "batched", backend, RunConfig(batch=4))
    denoise_folder(tree, tmp_path / "single", backend, RunConfig(batch=1))
    for name in ("a.png", "b.png", "sub/deeper/d.png"):
        a, b = load_rgb(tmp_path / "batched" / name), load_rgb(tmp_path / "single" / name)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_existing_outputs_are_skipped_unless_overwrite(tree, tmp_path, backend):
    dst = tmp_path / "out"
    denoise_folder(tree, dst, backend, RunConfig())
    stamp = (dst / "a.png").stat().st_mtime_ns
    again = denoise_folder(tree, dst, backend, RunConfig())
    assert again.skipped == 6 and again.ok == 0
    assert (dst / "a.png").stat().st_mtime_ns == stamp
    forced = denoise_folder(tree, dst, backend, RunConfig(overwrite=True))
    assert forced.ok == 6


def test_refuses_output_inside_input_and_missing_or_empty_input(tree, tmp_path, backend):
    with pytest.raises(ValueError, match="inside"):
        denoise_folder(tree, tree / "out", backend, RunConfig())
    with pytest.raises(ValueError, match="does not exist"):
        denoise_folder(tmp_path / "absent", tmp_path / "o", backend, RunConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        denoise_folder(tmp_path / "empty", tmp_path / "o", backend, RunConfig())
