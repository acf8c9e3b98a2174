"""The null backend through the runner (bench/host_pipeline.py times the host side with it): every output holds its
input's pixels; and `run --png-level`: its range, and the same pixels at every level."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fastdenoise.backends.null import FloatNullBackend, NullBackend
from fastdenoise.cli import app
from fastdenoise.encoders import write_encoded
from fastdenoise.images import load_rgb
from fastdenoise.pipeline.runner import RunConfig, denoise_folder

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def inputs(folder: Path, make_image, sizes: list[tuple[int, int]]) -> list[Path]:
    """One PNG and one JPEG of each size, in two subfolders."""
    paths = []
    for k, (h, w) in enumerate(sizes):
        for suffix, options in ((".png", {}), (".jpg", {"quality": 90})):
            path = folder / f"d{k % 2}" / f"img{k}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_image(h, w)).save(path, **options)
            paths.append(path)
    return paths


@pytest.mark.parametrize("backend", [NullBackend, FloatNullBackend])  # bytes in and out; the float round trip
@pytest.mark.parametrize("batch,tile", [(1, 1024), (4, 1024), (3, 64)])  # tile 64: the larger images go in tiles
def test_a_null_backend_run_writes_each_inputs_own_pixels(tmp_path, make_image, batch, tile, backend):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = inputs(src, make_image, [(48, 64), (48, 64), (48, 64), (37, 53), (130, 90)])
    summary = denoise_folder(src, dst, backend(), RunConfig(batch=batch, tile=tile, overlap=16, workers=2))
    assert summary.ok == len(paths) and summary.failed == 0
    rows = [json.loads(line) for line in (dst / "manifest.jsonl").read_text().splitlines()]
    outputs = {row["input"]: row["output"] for row in rows if row.get("status") == "ok"}
    assert sorted(outputs) == sorted(p.relative_to(src).as_posix() for p in paths)
    for rel, out in outputs.items():
        assert np.array_equal(load_rgb(dst / out), load_rgb(src / rel)), rel  # bit-exact: the input as decoded


def test_a_null_backend_jpeg_run_encodes_the_inputs_pixels(tmp_path, make_image):
    src, dst = _mkdir(tmp_path / "in"), tmp_path / "out"
    for k in range(3):
        Image.fromarray(make_image(40 + k, 56)).save(src / f"{k}.png")
    denoise_folder(src, dst, NullBackend(), RunConfig(format="jpg", quality=88))
    for k in range(3):
        expected = io.BytesIO()
        write_encoded(expected, load_rgb(src / f"{k}.png"), "JPEG", 88, 1)
        assert (dst / f"{k}.jpg").read_bytes() == expected.getvalue()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def run_cli(src: Path, dst: Path, weights: Path, *extra: str):
    args = [
        "run",
        str(src),
        str(dst),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--backend",
        "eager",
        "--loader",
        "pil",
        "--workers",
        "1",
        *extra,
    ]
    return runner.invoke(app, args)


@pytest.mark.parametrize("value,bound", [("10", "must be <= 9"), ("-1", "must be >= 0")])
def test_png_level_out_of_range_is_one_line_naming_the_bound(tmp_path, make_image, weights, value, bound):
    Image.fromarray(make_image(16, 16)).save(_mkdir(tmp_path / "in") / "a.png")
    result = run_cli(tmp_path / "in", tmp_path / "out", weights, "--png-level", value)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: --png-level: {bound}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_every_png_level_writes_the_same_pixels(tmp_path, make_image, weights):
    src = _mkdir(tmp_path / "in")
    for k in range(2):
        Image.fromarray(make_image(40, 52 + 4 * k)).save(src / f"{k}.png")
    pixels, sizes = {}, {}
    for level in ("0", "1", "6", None):
        dst = tmp_path / f"out-{level}"
        result = run_cli(src, dst, weights, *(["--png-level", level] if level else []))
        assert result.exit_code == 0, result.output
        pixels[level] = [load_rgb(dst / f"{k}.png") for k in range(2)]
        sizes[level] = sum((dst / f"{k}.png").stat().st_size for k in range(2))
        rows = [json.loads(line) for line in (dst / "manifest.jsonl").read_text().splitlines()]
        assert all("png_level" not in str(row.get("made_by")) for row in rows if "input" in row)
    for level in ("0", "6", None):
        assert all(np.array_equal(a, b) for a, b in zip(pixels[level], pixels["1"])), level
    assert sizes["0"] > sizes["1"] > sizes["6"] and sizes[None] == sizes["1"]  # the default is level 1


def test_the_benchmark_times_an_arm_and_reports_scaling(tmp_path, make_image):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import host_pipeline
    finally:
        sys.path.remove(str(ROOT / "bench"))
    src = _mkdir(tmp_path / "src")
    for k in range(3):
        Image.fromarray(make_image(40, 56)).save(src / f"{k}.jpg", quality=90)
    row = host_pipeline.run_arm(src, {"format": "png"}, 3, _mkdir(tmp_path / "tmp"))
    assert row["images"] == 3 and row["mp_per_s"] > 0 and row["mp_per_cpu_s"] > 0 and row["bytes_per_image"] > 0
    for options in ({"floats": True}, {"ranks": True}):  # the float round trip; a process per CPU: the same files
        other = host_pipeline.run_arm(src, {"format": "png"}, 3, tmp_path / "tmp", **options)
        assert other["images"] == 3 and other["mp_per_cpu_s"] > 0 and other["bytes_per_image"] == row["bytes_per_image"]
    arm = {"best_mp_per_s": 10.0, "median_mp_per_s": 9.0, "best_mp_per_cpu_s": 11.0}
    two = {"best_mp_per_s": 19.0, "median_mp_per_s": 18.0, "best_mp_per_cpu_s": 10.0}
    entries = {"cpus 0": {"cpus": 1, "arms": {"a": arm}}, "cpus 0,1": {"cpus": 2, "arms": {"a": two}}}
    table = host_pipeline.scaling(entries)
    assert (
        table["a: cpus 0 -> cpus 0,1"]["best"] == pytest.approx(1.9) and table["a: cpus 0 -> cpus 0,1"]["median"] == 2.0
    )
