import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL

from fastdenoise.models.checkpoint import save_weights
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.models.zoo import SelfEnsemble, bundled_models, choose_weights, estimate_sigma, per_sigma_models
from fastdenoise.noise import add_noise, to_uint8


@pytest.fixture
def zoo(tmp_path) -> Path:
    for name in ("blind", "sigma15", "sigma25", "sigma50", "joint-classify"):
        save_weights(Denoiser(SMALL), tmp_path / f"{name}.safetensors")
    return tmp_path


def test_choose_weights_by_name_path_and_nearest_sigma(zoo, tmp_path):
    assert bundled_models(zoo) == ["blind", "joint-classify", "sigma15", "sigma25", "sigma50"]
    assert per_sigma_models(zoo) == {15.0: "sigma15", 25.0: "sigma25", 50.0: "sigma50"}
    pick = lambda **kw: choose_weights(kw.get("model"), kw.get("weights"), kw.get("sigma"), zoo).stem
    assert pick() == "blind"
    assert pick(sigma=10) == "sigma15" and pick(sigma=30) == "sigma25" and pick(sigma=45) == "sigma50"
    assert pick(sigma=20) == "sigma15"  # a tie goes to the lower level
    assert pick(sigma=5) == pick(sigma=40) == pick(sigma=60) == "blind"  # beyond PER_SIGMA_REACH of every level
    assert pick(sigma=70, model="joint-classify") == "joint-classify"
    assert choose_weights(None, tmp_path / "mine.safetensors", 25, zoo) == tmp_path / "mine.safetensors"
    with pytest.raises(ValueError, match="not bundled; choose one of blind"):
        pick(model="sigma35")
    with pytest.raises(ValueError, match="give one"):
        choose_weights("blind", tmp_path / "x.safetensors", None, zoo)


def test_no_per_sigma_models_means_blind(tmp_path):
    save_weights(Denoiser(SMALL), tmp_path / "blind.safetensors")
    assert choose_weights(None, None, 35.0, tmp_path).stem == "blind"


@pytest.mark.parametrize("sigma", [10, 25, 50, 75])
def test_estimate_sigma_on_synthetic_noise(make_image, sigma):
    errors = [estimate_sigma(to_uint8(add_noise(make_image(160, 200), sigma, 3, i))) - sigma for i in range(4)]
    assert max(abs(e) for e in errors) < 0.12 * sigma + 2.0, errors  # the bound stated in docs/training.md


def test_estimate_sigma_orders_levels(make_image):
    image = make_image(96, 128)
    estimates = [estimate_sigma(to_uint8(add_noise(image, s, 0, 0))) for s in (5, 20, 40, 70)]
    assert estimates == sorted(estimates) and estimates[0] < 12


def test_self_ensemble_inverts_every_transform():
    class Identity:
        device = torch.device("cpu")

        def __call__(self, x):
            return x

    x = torch.rand(2, 3, 10, 14)
    torch.testing.assert_close(SelfEnsemble(Identity())(x), x, rtol=0, atol=1e-6)


def test_self_ensemble_of_the_network_is_its_average_over_views():
    model = Denoiser(SMALL).eval()

    class Eager:
        device = torch.device("cpu")

        @torch.no_grad()
        def __call__(self, x):
            return model(x)

    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        flipped = model(x.flip(3)).flip(3)
        rotated = torch.rot90(model(torch.rot90(x, 1, (2, 3))), -1, (2, 3))
    out = SelfEnsemble(Eager())(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x).detach(), atol=1e-4)  # a real average, not the plain output
    assert not torch.allclose(flipped, rotated, atol=1e-4)


def test_sigma_auto_routes_each_image_to_the_weights_nearest_its_estimate(zoo, make_image, tmp_path):
    """--sigma auto in the folder run: each row holds the estimate and the weights that ran, and an image's output is
    what those weights alone give it."""
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.images import load_rgb, save_rgb
    from fastdenoise.models.checkpoint import load_denoiser
    from fastdenoise.models.zoo import SigmaRouter
    from fastdenoise.pipeline.runner import RunConfig, denoise_folder

    src, levels = tmp_path / "in", {"a.png": 10, "b.png": 50, "c.png": 12}
    for i, (name, sigma) in enumerate(levels.items()):
        save_rgb(to_uint8(add_noise(make_image(96, 120), sigma, 7, i)), src / name)
    build = lambda path: make_backend(load_denoiser(path), BackendConfig(device="cpu", precision="fp32"))
    built: list[str] = []
    router = SigmaRouter(
        lambda p, level: built.append(p.stem) or build(p), lambda s: choose_weights(None, None, s, zoo)
    )
    cfg = RunConfig(loader="pil", workers=1, batch=4)
    summary = denoise_folder(src, tmp_path / "out", build(zoo / "blind.safetensors"), cfg, router=router)
    rows = {r["input"]: r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert {n: r["weights"] for n, r in rows.items()} == {"a.png": "sigma15", "b.png": "sigma50", "c.png": "sigma15"}
    assert all(abs(rows[n]["sigma_est"] - s) < 0.12 * s + 2.0 for n, s in levels.items()), rows
    assert sorted(built) == ["sigma15", "sigma50"] and summary.routes == {"sigma15": 2, "sigma50": 1}
    for name, row in rows.items():  # the routed output is the chosen model's own
        alone = tmp_path / f"alone-{name}"
        denoise_folder(src / name, alone, build(zoo / f"{row['weights']}.safetensors"), cfg)
        assert np.array_equal(load_rgb(tmp_path / "out" / row["output"]), load_rgb(alone / name))


def test_run_sigma_auto_on_the_cli_records_estimates_and_refuses_what_it_cannot_route(tmp_path, make_image, weights):
    from typer.testing import CliRunner

    from fastdenoise.cli import app
    from fastdenoise.images import save_rgb

    src = tmp_path / "in"
    save_rgb(to_uint8(add_noise(make_image(64, 80), 30, 1, 0)), src / "x.png")
    save_rgb(make_image(5, 6), src / "tiny.png")  # too small for the 7px patches of the estimate
    common = ["run", str(src), str(tmp_path / "out"), "--weights", str(weights), "--device", "cpu", "--loader", "pil"]
    result = CliRunner().invoke(app, [*common, "--sigma", "auto", "--backend", "eager"])
    assert result.exit_code == 1, result.output  # tiny.png failed
    rows = {r["input"]: r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert rows["x.png"]["weights"] == weights.stem and abs(rows["x.png"]["sigma_est"] - 30) < 5.6
    assert rows["tiny.png"]["error"].startswith("cannot estimate its noise level (image of 5x6 is smaller")
    assert f"noise level estimated {rows['x.png']['sigma_est']:.1f}-" in result.output
    assert "weights: per image (--sigma auto)" in result.output
    refused = CliRunner().invoke(app, [*common, "--sigma", "auto", "--engine", str(weights)])
    assert refused.exit_code == 2
    said = "error: --sigma auto runs a model per noise level: not with --executor ray or --engine (yet)"
    assert refused.output.strip() == said
    bad = CliRunner().invoke(app, [*common, "--sigma", "300"])
    assert bad.exit_code == 2 and bad.output.strip() == "error: --sigma: '300' is not a noise level in 0-255 or 'auto'"


def test_sigma_auto_binds_a_noise_map_model_to_each_images_estimate(tmp_path, make_image):
    """A noise-map model under --sigma auto: each image runs at its own estimate (on the LEVEL_STEP grid), and its
    output is what `--sigma <that level>` gives it."""
    from helpers import SMALL, randomize_bn
    from typer.testing import CliRunner

    from fastdenoise.cli import app
    from fastdenoise.images import load_rgb, save_rgb
    from fastdenoise.models.checkpoint import save_weights
    from fastdenoise.models.denoiser import Denoiser, with_noise_map
    from fastdenoise.models.zoo import grid_level

    model = with_noise_map(randomize_bn(Denoiser(SMALL)))
    torch.nn.init.normal_(model.conv0[0].weight[:, 3:], std=0.5)
    save_weights(model, tmp_path / "cond.safetensors")
    src = tmp_path / "in"
    for i, sigma in enumerate((10, 45)):
        save_rgb(to_uint8(add_noise(make_image(64, 80), sigma, 3, i)), src / f"n{sigma}.png")
    common = [
        "--weights",
        str(tmp_path / "cond.safetensors"),
        "--device",
        "cpu",
        "--backend",
        "eager",
        "--loader",
        "pil",
        "--precision",
        "fp32",
    ]
    result = CliRunner().invoke(app, ["run", str(src), str(tmp_path / "auto"), "--sigma", "auto", *common])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "auto" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["level"] for r in rows) == sorted(grid_level(r["sigma_est"]) for r in rows)
    assert len({r["level"] for r in rows}) == 2
    for row in rows:
        fixed = tmp_path / f"at-{row['level']}"
        one = CliRunner().invoke(
            app, ["run", str(src / row["input"]), str(fixed), "--sigma", str(row["level"]), *common]
        )
        assert one.exit_code == 0, one.output
        assert np.array_equal(load_rgb(tmp_path / "auto" / row["output"]), load_rgb(fixed / row["output"]))


def test_jpeg_inputs_run_the_jpeg_model_and_the_others_the_default(zoo, make_image, tmp_path, monkeypatch):
    """A run with the JPEG model bundled and no model named: files holding a JPEG (whatever their name) run it, the
    others the default; each row names its weights and each output is what its model alone gives it."""
    from helpers import randomize_bn
    from typer.testing import CliRunner

    from fastdenoise.cli import app
    from fastdenoise.images import load_rgb, save_rgb
    from fastdenoise.models import zoo as zoo_module

    src = tmp_path / "in"
    for i, name in enumerate(("a.png", "b.jpg", "c.jpg")):
        save_rgb(to_uint8(add_noise(make_image(64, 80), 25, 3, i)), src / name)
    (src / "c.jpg").rename(src / "c-named.png")  # a JPEG under a PNG name is still a JPEG
    save_rgb(make_image(64, 80), src / "d-clean.jpg")  # a clean JPEG: below JPEG_MIN_SIGMA, the default runs
    jpeg = tmp_path / "jpeg.safetensors"
    save_weights(randomize_bn(Denoiser(SMALL)), jpeg)
    blind = tmp_path / "blind-small.safetensors"
    save_weights(randomize_bn(Denoiser(SMALL)), blind)
    monkeypatch.setattr(zoo_module, "jpeg_model", lambda folder=None: jpeg)
    monkeypatch.setattr(zoo_module, "choose_weights", lambda model, weights, sigma, folder=None: weights or blind)
    common = ["--device", "cpu", "--loader", "pil", "--backend", "eager", "--precision", "fp32"]
    result = CliRunner().invoke(app, ["run", str(src), str(tmp_path / "out"), *common])
    assert result.exit_code == 0, result.output
    rows = {r["input"]: r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    expected = {"a.png": blind.stem, "b.jpg": "jpeg", "c-named.png": "jpeg", "d-clean.jpg": blind.stem}
    assert {n: r["weights"] for n, r in rows.items()} == expected
    assert "sigma_est" not in rows["a.png"] and rows["d-clean.jpg"]["sigma_est"] < 3 <= rows["b.jpg"]["sigma_est"]
    assert f"JPEG inputs: {jpeg}" in result.output and f"images per weights: {blind.stem} 2, jpeg 2" in result.output
    for name, row in rows.items():  # the routed output is the chosen model's own
        alone = CliRunner().invoke(
            app,
            [
                "run",
                str(src / name),
                str(tmp_path / f"alone-{name}"),
                *common,
                "--weights",
                str(tmp_path / f"{row['weights']}.safetensors"),
            ],
        )
        assert alone.exit_code == 0, alone.output
        assert np.array_equal(
            load_rgb(tmp_path / "out" / row["output"]), load_rgb(tmp_path / f"alone-{name}" / row["output"])
        )
    auto = CliRunner().invoke(app, ["run", str(src), str(tmp_path / "auto"), *common, "--sigma", "auto"])
    assert auto.exit_code == 0, auto.output
    rows = {r["input"]: r for r in map(json.loads, (tmp_path / "auto" / "manifest.jsonl").read_text().splitlines())}
    assert {n: r["weights"] for n, r in rows.items()} == expected  # JPEG inputs still run the JPEG model
    assert all(r["sigma_est"] >= 0 for r in rows.values())
    named = CliRunner().invoke(app, ["run", str(src), str(tmp_path / "named"), *common, "--weights", str(blind)])
    assert named.exit_code == 0 and "JPEG inputs" not in named.output  # a named model runs every image
    rows = [json.loads(r) for r in (tmp_path / "named" / "manifest.jsonl").read_text().splitlines()]
    assert all("weights" not in r for r in rows)


def test_plan_weights_is_the_choice_run_makes():
    """`run`'s choice of weights, in the library (zoo.plan_weights): the CLI and fastdenoise.denoise_folder share it."""
    from fastdenoise.models.checkpoint import bundled_weights
    from fastdenoise.models.zoo import plan_weights

    folder = bundled_weights().parent
    plain = plan_weights()
    assert plain.default == folder / "blind.safetensors" and not plain.estimate
    assert plain.jpeg == folder / "jpeg.safetensors" and plain.describe() == "blind (bundled)"
    assert plan_weights(sigma=27).default.stem == "sigma25" and plan_weights("sigma50", sigma=27).jpeg is None
    auto = plan_weights(auto=True)
    assert auto.estimate and auto.describe() == "per image (--sigma auto)"
    assert (auto.choose(48.0).stem, auto.choose(None).stem) == ("sigma50", "blind")
    task = plan_weights(task="classify")
    assert task.estimate and task.default.stem == "task-aware" and task.jpeg is None
    assert (task.choose(5.0).stem, task.choose(20.0).stem) == ("blind", "task-aware")
    assert "the task-aware model from an estimated sigma of 10, blind below" in task.describe()
    low = plan_weights(task="segment", sigma=5.0)
    assert low.default.stem == "blind" and not low.estimate
    fixed = plan_weights(task="classify", fixed=True)  # an --engine or Ray: one model runs all
    assert fixed.default.stem == "task-aware" and not fixed.estimate and fixed.jpeg is None
    assert plan_weights(fixed=True).jpeg is None
    with pytest.raises(ValueError, match="give one"):
        plan_weights("blind", Path("mine.safetensors"))
