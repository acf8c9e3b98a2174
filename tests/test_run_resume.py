"""Resuming `fastdenoise run` on an OUTPUT made with other weights or settings (issue 27): a manifest row vouches for
an output only for the weights and the pixel-changing settings that made it; a resumed row keeps its fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastdenoise.cli import app
from fastdenoise.images import load_rgb, save_rgb

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
        "--backend",
        "eager",
        *extra,
    ]
    return CliRunner().invoke(app, args)


def rows_of(dst: Path) -> dict[str, dict]:
    return {r["input"]: r for r in map(json.loads, (dst / "manifest.jsonl").read_text().splitlines())}


@pytest.fixture
def other_weights(tmp_path) -> Path:
    from helpers import SMALL, randomize_bn

    from fastdenoise.models.checkpoint import save_weights
    from fastdenoise.models.denoiser import Denoiser

    torch_seeded = Denoiser(SMALL)
    for p in torch_seeded.parameters():
        p.data.add_(0.05 * p.data.sign())
    path = tmp_path / "other.safetensors"
    save_weights(randomize_bn(torch_seeded), path)
    return path


@pytest.fixture
def photos(tmp_path, make_image) -> Path:
    src = tmp_path / "in"
    for name in ("a.png", "sub/b.png"):
        save_rgb(make_image(20, 28), src / name)
    return src


def test_other_weights_on_the_same_output_redo_every_image(photos, tmp_path, weights, other_weights):
    dst = tmp_path / "out"
    assert run(photos, dst, weights).exit_code == 0
    first = {name: load_rgb(dst / row["output"]) for name, row in rows_of(dst).items()}
    again = run(photos, dst, other_weights)
    assert again.exit_code == 0, again.output
    assert again.output.strip().startswith("2 denoised, 0 skipped"), again.output
    rows = rows_of(dst)
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert any(not np.array_equal(first[n], load_rgb(dst / r["output"])) for n, r in rows.items())
    assert run(photos, dst, other_weights).output.strip().startswith("0 denoised, 2 skipped")  # same weights: done


@pytest.mark.parametrize(
    "change", [("--precision", "bf16"), ("--ensemble",), ("--format", "jpg"), ("--quality", "80", "--format", "jpg")]
)
def test_a_setting_that_changes_pixels_redoes_the_images(photos, tmp_path, weights, change):
    dst = tmp_path / "out"
    base = ("--format", "jpg", "--quality", "95") if "--quality" in change else ()
    assert run(photos, dst, weights, *base).exit_code == 0
    again = run(photos, dst, weights, *change)
    assert again.exit_code == 0, again.output
    assert again.output.strip().startswith("2 denoised, 0 skipped"), (change, again.output)


def test_settings_that_keep_pixels_still_skip(photos, tmp_path, weights):
    dst = tmp_path / "out"
    assert run(photos, dst, weights, "--batch", "2").exit_code == 0
    again = run(photos, dst, weights, "--batch", "1", "--tile", "512", "--overlap", "32", "--workers", "2")
    assert again.output.strip().startswith("0 denoised, 2 skipped"), (
        again.output
    )  # every image is smaller than the tile


def test_a_tile_change_redoes_only_images_larger_than_a_tile(tmp_path, make_image, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    save_rgb(make_image(20, 28), src / "small.png")
    save_rgb(make_image(72, 40), src / "large.png")
    assert run(src, dst, weights, "--tile", "64", "--overlap", "16").exit_code == 0
    again = run(src, dst, weights, "--tile", "48", "--overlap", "16")
    assert again.output.strip().startswith("1 denoised, 1 skipped"), again.output
    assert rows_of(dst)["large.png"]["status"] == "ok" and rows_of(dst)["small.png"]["status"] == "skipped"


def test_rows_record_what_made_the_output(photos, tmp_path, weights):
    from fastdenoise.engines.export import weights_sha256
    from fastdenoise.models.checkpoint import load_denoiser

    dst = tmp_path / "out"
    assert run(photos, dst, weights, "--ensemble").exit_code == 0
    made = rows_of(dst)["a.png"]["made_by"]
    assert made["weights_sha256"] == weights_sha256(load_denoiser(weights))
    assert (made["precision"], made["ensemble"], made["format"]) == ("fp32", True, ".png")
    assert "quality" not in made and "tile" not in made  # PNG is lossless; each image fits in one tile


def test_a_resumed_sigma_auto_run_keeps_each_rows_estimate_and_weights(photos, tmp_path, weights):
    dst = tmp_path / "out"
    assert run(photos, dst, weights, "--sigma", "auto").exit_code == 0
    first = rows_of(dst)
    again = run(photos, dst, weights, "--sigma", "auto")
    assert again.output.strip().startswith("0 denoised, 2 skipped"), again.output
    for name, row in rows_of(dst).items():
        assert row["status"] == "skipped"
        assert (row["sigma_est"], row["weights"]) == (first[name]["sigma_est"], first[name]["weights"])
        assert row["made_by"] == first[name]["made_by"]


@pytest.mark.parametrize("narrow", ["include", "exclude", "single-file"])
def test_a_narrowed_run_into_a_finished_output_keeps_the_other_rows(tmp_path, weights, make_image, narrow):
    src, dst = tmp_path / "in", tmp_path / "out"
    names = ["a.png", "sub/b.png", "sub/c.png"]
    for name in names:
        save_rgb(make_image(20, 28), src / name)
    assert run(src, dst, weights).exit_code == 0
    before = rows_of(dst)
    save_rgb(make_image(20, 28), src / "a.png")  # changed: the narrowed run redoes it
    extra = {"include": ("--include", "a.*"), "exclude": ("--exclude", "sub/*"), "single-file": ()}[narrow]
    target = src / "a.png" if narrow == "single-file" else src

    result = run(target, dst, weights, *extra)

    assert result.exit_code == 0, result.output
    after = rows_of(dst)
    assert set(after) == set(names) and after["a.png"]["status"] == "ok"
    assert after["a.png"]["input_mtime_ns"] != before["a.png"]["input_mtime_ns"]
    assert all(after[n] == before[n] for n in names[1:])  # the other rows as they were
    assert run(src, dst, weights).exit_code == 0  # and a whole run afterwards still vouches for all three
    assert {r["status"] for r in rows_of(dst).values()} == {"skipped"}


def test_ref_into_the_output_is_refused_in_one_line(photos, tmp_path, weights):
    dst = tmp_path / "out"
    dst.mkdir()
    for ref in (dst, dst / "sub"):
        ref.mkdir(exist_ok=True)
        result = run(photos, dst, weights, "--ref", str(ref))
        assert result.exit_code == 2, result.output
        assert (
            result.output.strip() == f"error: {ref}: --ref may not be the output folder or inside it (each output "
            "its own reference)"
        )
    assert not (dst / "a.png").exists()


def test_an_output_equal_to_its_reference_scores_null_psnr_not_infinity(tmp_path, make_image):
    from fastdenoise.pipeline.manifest import row_line
    from fastdenoise.pipeline.outputs import reference_scores

    image = make_image(20, 28)
    save_rgb(image, tmp_path / "ref" / "a.png")

    scores = reference_scores(tmp_path / "ref", "a.png", image)

    assert scores["psnr"] is None and scores["ssim"] == pytest.approx(1.0)
    json.loads(row_line({"input": "a.png"} | scores), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
