"""`fastdenoise run` as a new user meets it: the summary names what failed and what ran; two photos of one stem are
both denoised; one file as INPUT, --include/--exclude, --dry-run, --ref; grey in, grey out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fastdenoise.cli import app
from fastdenoise.images import load_rgb, save_rgb
from fastdenoise.metrics import psnr, ssim
from fastdenoise.pipeline.summary import PROBLEMS_KEPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def run(src: Path, dst: Path, weights: Path, *extra: str):
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
        "--loader",
        "pil",
        "--workers",
        "1",
        *extra,
    ]
    return runner.invoke(app, args)


def rows_of(dst: Path) -> dict[str, dict]:
    return {r["input"]: r for r in map(json.loads, (dst / "manifest.jsonl").read_text().splitlines())}


def test_summary_names_failed_and_ignored_files_up_to_ten_and_what_ran(tmp_path, make_image, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    for name in ("good0.png", "good1.png"):
        save_rgb(make_image(20, 28), src / name)
    (src / "broken.png").write_text("not a png")
    for i in range(12):
        (src / f"n{i:02d}.txt").write_text("notes")
    result = run(src, dst, weights, "--backend", "eager")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line]  # the transient progress bar leaves a blank line
    rows = rows_of(dst)
    assert lines[0].startswith("2 denoised, 0 skipped, 1 failed, 12 not images; 0.00 MP in ")
    named = [line for line in lines if line.startswith(("  failed: ", "  ignored: "))]
    expected = {f"  failed: broken.png: {rows['broken.png']['error']}"}
    expected |= {f"  ignored: n{i:02d}.txt: not an image extension (.txt)" for i in range(12)}
    assert len(named) == 10 and set(named) <= expected and named[0].startswith("  failed: broken.png: ")
    assert "  ... and 3 more failed or ignored (see the manifest)" in lines
    assert f"backend: eager float32 on cpu; weights: {weights}" in lines
    assert rows["broken.png"]["output"] is None and rows["broken.png"]["error"]  # a failed row names no output


def test_a_run_with_everything_done_shows_no_rate_and_skipped_rows_no_error(tmp_path, make_image, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    for name in ("a.png", "b.png"):
        save_rgb(make_image(16, 24), src / name)
    assert run(src, dst, weights).exit_code == 0
    again = run(src, dst, weights)
    assert again.exit_code == 0, again.output
    first = again.output.strip().splitlines()[0]
    assert first.startswith("0 denoised, 2 skipped, 0 failed, 0 not images; nothing denoised in ")
    assert first.endswith(f" s; manifest: {dst / 'manifest.jsonl'}") and "MP/s" not in again.output
    assert all(r["status"] == "skipped" and r["error"] is None and r["output"] for r in rows_of(dst).values())


def test_two_photos_of_one_stem_are_both_denoised(tmp_path, make_image, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    save_rgb(make_image(16, 20), src / "a.png")
    Image.fromarray(make_image(24, 12)).save(src / "a.jpg", quality=95)
    result = run(src, dst, weights)
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("2 denoised, 0 skipped, 0 failed, 0 not images;")
    rows = rows_of(dst)  # the first by name keeps the plain name, the later one keeps its extension in it
    assert (rows["a.jpg"]["output"], rows["a.png"]["output"]) == ("a.png", "a.png.png")
    assert load_rgb(dst / "a.png").shape == (24, 12, 3) and load_rgb(dst / "a.png.png").shape == (16, 20, 3)


def test_one_file_as_input_denoises_only_it(tmp_path, make_image, weights):
    save_rgb(make_image(20, 20), tmp_path / "photo.png")
    save_rgb(make_image(20, 20), tmp_path / "other.png")
    result = run(tmp_path / "photo.png", tmp_path / "out", weights)
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("1 denoised, 0 skipped, 0 failed, 0 not images;")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.jsonl", "photo.png"]
    refused = run(tmp_path / "photo.png", tmp_path, weights)
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        f"error: {tmp_path}: output folder may not be the input file's folder: the output could overwrite it"
    )


def test_a_linked_input_whose_real_file_is_in_output_is_refused_and_kept(tmp_path, make_image, weights):
    real = tmp_path / "out" / "photo.png"
    save_rgb(make_image(20, 20), real)
    before = real.read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "photo.png").symlink_to(real)
    refused = run(tmp_path / "in" / "photo.png", tmp_path / "out", weights)
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        f"error: {tmp_path / 'out'}: output folder may not be the input file's folder: the output could overwrite it"
    )
    assert real.read_bytes() == before and sorted(p.name for p in real.parent.iterdir()) == ["photo.png"]


def test_include_and_exclude_globs_narrow_the_run(tmp_path, make_image, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    for name in ("a.png", "b.jpg", "sub/c.png", "sub/d.png"):
        save_rgb(make_image(12, 12), src / name)
    result = run(src, dst, weights, "--include", "*.png", "--exclude", "sub/d*")
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("2 denoised, 0 skipped, 0 failed, 0 not images;")
    assert sorted(rows_of(dst)) == ["a.png", "sub/c.png"]  # left-out files get no row
    nothing = run(src, tmp_path / "none", weights, "--include", "*.webp")
    assert nothing.exit_code == 2 and nothing.output.startswith(f"error: {src}: no images found matching --include")


def test_dry_run_names_the_files_that_would_fail_then_how_many_more(tmp_path, make_image, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    save_rgb(make_image(40, 48), src / "big.png")  # 1920 pixels, over --max-pixels 1000
    save_rgb(make_image(20, 24), src / "ok.png")
    (src / "bad.png").write_bytes(np.random.default_rng(28).bytes(64))
    result = run(src, dst, weights, "--dry-run", "--max-pixels", "1000")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "dry run: 1 image to denoise (0.00 MP), 0 done earlier, 2 would fail, 0 not images; nothing written",
        f"  would fail: bad.png: {src / 'bad.png'}: not a recognised image format",
        f"  would fail: big.png: {src / 'big.png'}: 48x40 = 0.0 MP is over the pixel budget of 0.001 MP "
        "(--max-pixels); not decoded",
    ]
    for i in range(PROBLEMS_KEPT):
        (src / f"a{i:02d}.png").write_bytes(b"")
    lines = run(src, dst, weights, "--dry-run", "--max-pixels", "1000").output.splitlines()
    assert lines[1] == f"  would fail: a00.png: {src / 'a00.png'}: not a recognised image format"
    assert len(lines) == 2 + PROBLEMS_KEPT and lines[-1] == "  ... and 2 more would fail"
    assert not dst.exists()


def test_dry_run_counts_images_and_megapixels_and_writes_nothing(tmp_path, make_image, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    save_rgb(make_image(300, 200), src / "a.png")
    save_rgb(make_image(100, 50), src / "sub" / "b.png")
    (src / "notes.txt").write_text("notes")
    result = run(src, dst, weights, "--dry-run")
    assert result.exit_code == 0, result.output
    assert (
        result.output
        == "dry run: 2 images to denoise (0.07 MP), 0 done earlier, 0 would fail, 1 not an image; nothing written\n"
    )
    assert not dst.exists()
    assert run(src, dst, weights, "--include", "sub/*").exit_code == 0
    again = run(src, dst, weights, "--dry-run")
    assert (
        again.output
        == "dry run: 1 image to denoise (0.06 MP), 1 done earlier, 0 would fail, 1 not an image; nothing written\n"
    )


def test_ref_reports_psnr_and_ssim_per_image_and_overall(tmp_path, make_image, weights):
    src, dst, clean = tmp_path / "in", tmp_path / "out", tmp_path / "clean"
    rng = np.random.default_rng(8)
    for name in ("a.png", "sub/b.png"):
        image = make_image(32, 40)
        save_rgb(image, clean / name)
        noisy = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
        save_rgb(noisy, src / name)
    save_rgb(make_image(32, 40), src / "alone.png")  # no reference
    result = run(src, dst, weights, "--ref", str(clean))
    assert result.exit_code == 0, result.output
    rows = rows_of(dst)
    for name in ("a.png", "sub/b.png"):
        out, ref = load_rgb(dst / rows[name]["output"]), load_rgb(clean / name)
        assert rows[name]["psnr"] == pytest.approx(psnr(out, ref), abs=1e-4)
        assert rows[name]["ssim"] == pytest.approx(ssim(out, ref), abs=1e-5)
    assert "no reference image for alone.png" in rows["alone.png"]["ref_error"]
    mean_psnr = (rows["a.png"]["psnr"] + rows["sub/b.png"]["psnr"]) / 2
    mean_ssim = (rows["a.png"]["ssim"] + rows["sub/b.png"]["ssim"]) / 2
    expected = f"reference: mean PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.4f} over 2 images; 1 without a reference"
    assert expected in result.output.splitlines()


def test_grey_inputs_give_grey_outputs(tmp_path, make_image, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    colour = make_image(24, 32)
    Image.fromarray(colour[..., 1]).save(src.mkdir() or src / "mode_l.png")  # a greyscale (mode L) file
    save_rgb(np.repeat(colour[..., :1], 3, axis=2), src / "grey_rgb.png")  # RGB with three equal channels
    save_rgb(colour, src / "colour.png")
    result = run(src, dst, weights)
    assert result.exit_code == 0, result.output
    for name in ("mode_l.png", "grey_rgb.png"):
        out = load_rgb(dst / name).astype(int)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2]), name
    out = load_rgb(dst / "colour.png").astype(int)
    assert np.abs(out[..., 0] - out[..., 1]).max() > 10  # colour stays colour


def test_a_ref_image_over_max_pixels_is_a_ref_error_not_a_decode(tmp_path, make_image, weights):
    src, dst, clean = tmp_path / "in", tmp_path / "out", tmp_path / "clean"
    save_rgb(make_image(20, 28), src / "a.png")
    save_rgb(make_image(40, 56), clean / "a.png")  # 2240 pixels: over the budget below, which the input is not
    result = run(src, dst, weights, "--ref", str(clean), "--max-pixels", "1000")
    assert result.exit_code == 0, result.output
    row = rows_of(dst)["a.png"]
    assert row["status"] == "ok" and "psnr" not in row
    assert row["ref_error"] == (
        f"{clean / 'a.png'}: 56x40 = 0.0 MP is over the pixel budget of 0.001 MP (--max-pixels); not decoded"
    )


def test_int8_runs_without_a_data_folder_calibrating_on_the_demo_photos(tmp_path, make_image, weights, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    pytest.importorskip("skimage")
    from fastdenoise.backends import openvino

    monkeypatch.setenv("FASTDENOISE_DATA", str(tmp_path / "no-data"))  # a data folder that is not there
    monkeypatch.setenv("FASTDENOISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    seen = []
    small = openvino.Calibration(crops=4, size=32)  # the default's source (the demo photos), fewer crops: fast
    monkeypatch.setattr(openvino, "default_calibration", lambda: seen.append(small) or small)
    save_rgb(make_image(20, 28), tmp_path / "in" / "a.png")
    args = ["--device", "cpu", "--backend", "openvino", "--precision", "int8"]

    result = run(tmp_path / "in", tmp_path / "out", weights, *args)

    assert result.exit_code == 0, result.output
    assert seen == [small] and small.folder is None
    assert load_rgb(tmp_path / "out" / "a.png").shape == (20, 28, 3)
    irs = list((tmp_path / "cache").rglob(f"*_int8_{small.key}.xml"))
    assert len(irs) == 1 and "FakeQuantize" in irs[0].read_text()


def test_a_run_into_a_log_prints_plain_progress_lines(tmp_path, make_image, weights, monkeypatch):
    monkeypatch.setattr("fastdenoise.progress.PLAIN_EVERY", 0.0)  # a line each image instead of each 30 s
    src = tmp_path / "in"
    count = int(np.random.default_rng(28).integers(2, 6))
    for i in range(count):
        save_rgb(make_image(20, 24), src / f"p{i}.png")
    result = run(src, tmp_path / "out", weights)  # CliRunner's output is no terminal, as a log file is not
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("denoise: ")]
    assert [line.split(",")[0] for line in lines] == [
        f"denoise: {i}/{count} ({i / count:.0%})" for i in range(1, count + 1)
    ]
    assert re.fullmatch(r"denoise: 1/\d+ \(\d+%\), \d:\d\d:\d\d elapsed, \d:\d\d:\d\d left; p\d\.png", lines[0])
