import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastdenoise.cli import app
from fastdenoise.images import save_rgb

runner = CliRunner()


@pytest.fixture
def photos(tmp_path, make_image) -> Path:
    for i, (h, w) in enumerate([(36, 44), (36, 44), (21, 19)]):
        save_rgb(make_image(h, w), tmp_path / "photos" / f"p{i}.png")
    return tmp_path / "photos"


def test_run_writes_outputs_and_summary(photos, tmp_path, weights):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(photos), str(out), "--weights", str(weights), "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "3 denoised, 0 skipped, 0 failed" in result.output and "MP/s" in result.output
    assert sorted(p.name for p in out.glob("*.png")) == ["p0.png", "p1.png", "p2.png"]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok"] * 3


def test_run_exit_code_reports_failures(photos, tmp_path, weights):
    (photos / "zero.jpg").write_bytes(b"")
    args = ["run", str(photos), str(tmp_path / "o"), "--weights", str(weights), "--precision", "fp32"]
    assert runner.invoke(app, args).exit_code == 1
    assert runner.invoke(app, [*args, "--no-strict", "--overwrite"]).exit_code == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "{tmp}/absent", "{tmp}/out"], "does not exist"),
        (["run", "{photos}", "{photos}/inner"], "inside"),
        (["run", "{photos}", "{tmp}/out", "--weights", "{tmp}/garbage.safetensors"], "garbage.safetensors"),
        (["eval", "{photos}", "--sigma", "25,300"], "sigma"),
        (["demo", "--sigma", "-3"], "sigma"),
        (["train", "{photos}", "--out", "{tmp}/r", "--sigma", "60-10"], "sigma"),
    ],
)
def test_bad_input_is_one_line_error(args, message, photos, tmp_path):
    (tmp_path / "garbage.safetensors").write_bytes(b"\x01" * 64)
    (tmp_path / "empty").mkdir()
    filled = [a.format(tmp=tmp_path, photos=photos) for a in args]
    result = runner.invoke(app, filled)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_eval_writes_json_and_markdown(photos, tmp_path, weights):
    out = tmp_path / "ev"
    result = runner.invoke(app, ["eval", str(photos), "--sigma", "15,50", "--weights", str(weights), "--out", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "eval.json").read_text())
    rows = payload["results"][0]["rows"]
    assert len(rows) == 6 and {r["sigma"] for r in rows} == {15.0, 50.0}
    assert "| fastdenoise |" in (out / "eval.md").read_text()


def test_train_then_resume_via_cli(photos, tmp_path):
    out = tmp_path / "run"
    base = ["train", str(photos), "--out", str(out), "--patch", "16", "--batch", "2", "--sigma", "5-50", "--amp", "off"]
    assert runner.invoke(app, [*base, "--steps", "2"]).exit_code == 0
    refused = runner.invoke(app, [*base, "--steps", "3"])
    assert refused.exit_code == 2 and "--resume" in refused.output
    resumed = runner.invoke(app, [*base, "--steps", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "model.safetensors").exists()


def test_demo_with_bundled_weights(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "astronaut" in result.output
    assert len(list((tmp_path / "demo").glob("*.png"))) == 4


def test_bundled_weights_denoise_the_samples(tmp_path):
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.checkpoint import load_denoiser
    from fastdenoise.demo import run_demo
    from fastdenoise.evaluate import backend_denoiser

    backend = make_backend(load_denoiser(), BackendConfig(device="cpu", precision="fp32"))
    for sigma in (15, 50):
        rows = run_demo(backend_denoiser(backend), tmp_path / f"demo{sigma}", sigma)
        assert all(r["psnr"] > r["noisy_psnr"] + 5 for r in rows), rows


def test_train_joint_label_free(tmp_path, make_image):
    for i in range(3):
        save_rgb(make_image(64, 80), tmp_path / "photos" / f"{i}.png")
    args = ["train", str(tmp_path / "photos"), "-o", str(tmp_path / "run"), "--task", "classify", "--target", "softmax",
            "--patch", "32", "--batch", "2", "--steps", "2", "--device", "cpu", "--amp", "off", "--compile", "off"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "joint.json").is_file() and (tmp_path / "run" / "model.safetensors").is_file()


def test_joint_options_need_task(photos, tmp_path):
    result = runner.invoke(app, ["train", str(photos), "-o", str(tmp_path / "r"), "--lam", "0.3"])
    assert result.exit_code == 2 and "--task" in result.output


def test_train_one_denoiser_against_both_heads_label_free_and_balanced(tmp_path, make_image, data_dir, monkeypatch):
    monkeypatch.setenv("FASTDENOISE_DATA", str(data_dir))  # where the ESPNetv2 weights are found
    if not (data_dir / "weights" / "espnetv2").is_dir():
        pytest.skip("no ESPNetv2 weights under the shared data")
    for i in range(2):
        save_rgb(make_image(40, 48), tmp_path / "photos" / f"{i}.png")
    args = ["train", str(tmp_path / "photos"), "-o", str(tmp_path / "run"), "--task", "classify,segment", "--target", "argmax",
            "--balance", "0.3", "--balance", "1.0", "--patch", "32", "--batch", "1", "--steps", "1", "--device", "cpu", "--amp", "off",
            "--compile", "off"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    joint = json.loads((tmp_path / "run" / "joint.json").read_text())
    assert joint["heads"] == [] and joint["tasks"] == ["classify", "segment"] and joint["balance"] == [0.3, 1.0]
    assert joint["head_weights"][0] is None and joint["head_weights"][1].endswith(".pth")
    row = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert row["ratio_0"] == pytest.approx(0.3, rel=1e-5) and row["ratio_1"] == pytest.approx(1.0, rel=1e-5)


def test_train_rejects_an_unknown_task_and_mismatched_weights(photos, tmp_path):
    result = runner.invoke(app, ["train", str(photos), "-o", str(tmp_path / "r"), "--task", "classify,detect"])
    assert result.exit_code == 2 and "--task" in result.output and "detect" in result.output
    result = runner.invoke(app, ["train", str(photos), "-o", str(tmp_path / "r"), "--task", "classify,segment", "--target", "argmax",
                                 "--lam", "1", "--balance", "1"])  # fmt: skip
    assert result.exit_code == 2 and "not both" in result.output
