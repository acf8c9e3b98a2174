"""The Python API (fastdenoise.load, fastdenoise.denoise_folder): its docstring and docs examples run, and it gives
the pixels `fastdenoise run` writes, for numpy, Pillow and torch inputs alike."""

import doctest
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import ROOT
from helpers import SMALL, randomize_bn
from PIL import Image
from typer.testing import CliRunner

import fastdenoise
from fastdenoise import api
from fastdenoise.cli import app
from fastdenoise.images import load_rgb, save_rgb
from fastdenoise.models.checkpoint import save_weights
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.models.zoo import grid_level

runner = CliRunner()


def run_cli(src, out, *options: str):
    """`fastdenoise run src out --backend eager --device cpu ...`: its output of src/x.png."""
    result = runner.invoke(app, ["run", str(src), str(out), "--backend", "eager", "--device", "cpu", *options])
    assert result.exit_code == 0, result.output
    return load_rgb(out / "x.png")


@pytest.fixture
def photo(tmp_path, make_image):
    """src/x.png: a random (noisy, smooth) photo, and its pixels."""
    image = make_image(44, 60)
    save_rgb(image, tmp_path / "src" / "x.png")
    return tmp_path / "src", image


def test_the_docstring_examples_run():
    failed, tried = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert failed == 0 and tried >= 10


def test_the_docs_page_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the page writes photos/ and denoised/ where it runs
    save_rgb(np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8), tmp_path / "photos" / "a.png")
    failed, tried = doctest.testfile(
        str(ROOT / "docs" / "python-api.md"), module_relative=False, optionflags=doctest.ELLIPSIS
    )
    assert failed == 0 and tried > 5


def test_numpy_pillow_and_tensor_inputs_give_the_pixels_run_writes(photo, tmp_path):
    src, image = photo
    written = run_cli(src, tmp_path / "out")
    model = fastdenoise.load("blind")
    assert np.array_equal(model.denoise(image), written)  # (H, W, 3) uint8
    assert np.array_equal(model.denoise(np.stack([image, image])), np.stack([written, written]))
    assert np.array_equal(np.asarray(model.denoise(Image.open(src / "x.png"))), written)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    assert torch.equal(model.denoise(chw), torch.from_numpy(written).permute(2, 0, 1))  # uint8 in, uint8 out
    floats = model.denoise(chw[None].float() / 255)  # (1, 3, H, W) float: unrounded, in [0, 1]
    assert floats.dtype == torch.float32 and floats.shape == (1, 3, 44, 60) and 0 <= floats.min() <= floats.max() <= 1
    rounded = floats[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(rounded, written) and not torch.equal(floats * 255, floats.mul(255).round())
    as_float = model.denoise(image.astype(np.float64) / 255)
    assert as_float.dtype == np.float64 and np.abs(as_float * 255 - written).max() <= 0.5 + 1e-6
    assert not np.array_equal(written, image)  # it did denoise


def test_a_large_image_goes_tile_by_tile_as_in_run(photo, tmp_path):
    src, image = photo
    written = run_cli(src, tmp_path / "out", "--tile", "32", "--overlap", "8")
    assert np.array_equal(fastdenoise.load("blind", tile=32, overlap=8).denoise(image), written)
    assert not np.array_equal(written, run_cli(src, tmp_path / "whole"))  # the tiles did make a difference


def test_sigma_binds_a_noise_map_model_and_picks_the_per_sigma_model(photo, tmp_path):
    src, image = photo
    path = tmp_path / "mapped.safetensors"
    torch.manual_seed(5)
    save_weights(randomize_bn(Denoiser(replace(SMALL, noise_map=True))), path)
    mapped = fastdenoise.load(path, precision="fp32")
    assert np.array_equal(
        mapped.denoise(image, sigma=30),
        run_cli(src, tmp_path / "o30", "-w", str(path), "--sigma", "30", "--precision", "fp32"),
    )
    assert not np.array_equal(mapped.denoise(image, sigma=30), mapped.denoise(image, sigma=10))
    with pytest.raises(ValueError, match="takes the noise level"):
        mapped.denoise(image)
    blind = fastdenoise.load("blind")
    assert np.array_equal(blind.denoise(image, sigma=27), fastdenoise.load("sigma25").denoise(image))
    assert np.array_equal(blind.denoise(image, sigma=27), run_cli(src, tmp_path / "s27", "--sigma", "27"))
    assert np.array_equal(blind.denoise(image, sigma=5), blind.denoise(image))  # no per-sigma model within reach
    with pytest.raises(ValueError, match="takes no sigma"):
        fastdenoise.load("sigma25").denoise(image, sigma=25)
    with pytest.raises(ValueError, match="give a noise level in 0-255, or 'auto'"):
        blind.denoise(image, sigma="loud")


def test_sigma_auto_estimates_each_image_and_routes_it_as_run_does(tmp_path, make_image):
    from fastdenoise.noise import add_noise, to_uint8

    src = tmp_path / "src"
    images = [to_uint8(add_noise(make_image(48, 56), sigma, 3, i)) for i, sigma in enumerate((14, 47))]
    path = tmp_path / "mapped.safetensors"
    torch.manual_seed(6)
    save_weights(randomize_bn(Denoiser(replace(SMALL, noise_map=True))), path)
    mapped, blind = fastdenoise.load(path, precision="fp32"), fastdenoise.load("blind")
    for i, image in enumerate(images):
        save_rgb(image, src / "x.png")
        assert np.array_equal(blind.denoise(image, sigma="auto"), run_cli(src, tmp_path / f"b{i}", "--sigma", "auto"))
        assert np.array_equal(
            mapped.denoise(image, sigma="auto"),
            run_cli(src, tmp_path / f"m{i}", "-w", str(path), "--sigma", "auto", "--precision", "fp32"),
        )
    assert abs(blind.estimate_sigma(images[0]) - 14) < 4 and abs(blind.estimate_sigma(images[1]) - 47) < 6
    batch = np.stack(images)  # each image of a batch at its own level: the two differ by 33
    alone = [mapped.denoise(image, sigma="auto") for image in images]
    assert np.array_equal(mapped.denoise(batch, sigma="auto"), np.stack(alone))
    as_tensor = torch.from_numpy(batch).permute(0, 3, 1, 2)
    assert np.array_equal(mapped.denoise(as_tensor, sigma="auto").permute(0, 2, 3, 1).numpy(), np.stack(alone))
    assert not np.array_equal(alone[1], mapped.denoise(images[1], sigma=grid_level(blind.estimate_sigma(images[0]))))
    with pytest.raises(ValueError, match="takes no sigma"):
        fastdenoise.load("sigma25").denoise(images[0], sigma="auto")


def test_load_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="neither a bundled model .*blind.* nor a weights file"):
        fastdenoise.load("sigma30")
    with pytest.raises(ValueError, match="'nonsense' is not a valid BackendKind"):
        fastdenoise.load("blind", backend="nonsense")
    model = fastdenoise.load("blind")
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\)"):
        model.denoise(np.ones((8, 8), np.uint8))
    with pytest.raises(TypeError, match="not list"):
        model.denoise([[1, 2, 3]])


def test_denoise_folder_runs_the_folder_pipeline(tmp_path, make_image):
    src, dst = tmp_path / "in", tmp_path / "out"
    images = {"a.png": make_image(40, 48), "sub/b.png": make_image(36, 52)}
    for name, image in images.items():
        save_rgb(image, src / name)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x07" * 40)  # a PNG signature and nothing after it
    summary = fastdenoise.denoise_folder(src, dst, backend="eager", device="cpu")
    assert (summary.ok, summary.failed) == (2, 1)
    rows = {r["input"]: r for r in map(json.loads, (dst / "manifest.jsonl").read_text().splitlines())}
    assert rows["broken.png"]["status"] == "error" and "broken.png" in rows["broken.png"]["error"]
    model = fastdenoise.load("blind")
    for name, image in images.items():
        assert rows[name]["status"] == "ok" and np.array_equal(load_rgb(dst / name), model.denoise(image))
    again = fastdenoise.denoise_folder(src, dst, backend="eager", device="cpu")  # resumes: the two are done
    assert (again.ok, again.skipped, again.failed) == (0, 2, 1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        fastdenoise.denoise_folder(src, dst, bogus=1)


def test_denoise_folder_with_sigma_auto_routes_each_image_as_run_does(tmp_path, make_image):
    from fastdenoise.noise import add_noise, to_uint8

    src = tmp_path / "in"
    for i, sigma in enumerate((12, 48)):
        save_rgb(to_uint8(add_noise(make_image(48, 56), sigma, 7, i)), src / f"{i}.png")
    fastdenoise.denoise_folder(src, tmp_path / "api", sigma="auto", backend="eager", device="cpu", workers=1)
    result = runner.invoke(
        app,
        [
            "run",
            str(src),
            str(tmp_path / "cli"),
            "--sigma",
            "auto",
            "--backend",
            "eager",
            "--device",
            "cpu",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [
        {
            r["input"]: (r["weights"], r["sigma_est"])
            for r in map(json.loads, (tmp_path / out / "manifest.jsonl").read_text().splitlines())
        }
        for out in ("api", "cli")
    ]
    assert rows[0] == rows[1] and [w for w, _ in rows[0].values()] == ["sigma15", "sigma50"], rows
    for name in rows[0]:
        assert np.array_equal(load_rgb(tmp_path / "api" / name), load_rgb(tmp_path / "cli" / name))


def test_import_fastdenoise_stays_light():
    code = "import sys, fastdenoise; print('torch' in sys.modules, callable(fastdenoise.load), 'torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.split() == ["False", "True", "True"], done.stdout + done.stderr


def test_torch_hub_loads_the_bundled_models_from_a_checkout():
    model = torch.hub.load(str(ROOT), "sigma25", source="local", precision="fp32")
    assert isinstance(model, api.ImageDenoiser) and model.model.name == "sigma25"
    assert torch.hub.load(str(ROOT), "task_aware", source="local").model.name == "task-aware"
