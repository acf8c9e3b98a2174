import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
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
    result = runner.invoke(
        app, ["run", str(photos), str(out), "--weights", str(weights), "--device", "cpu", "--precision", "fp32"]
    )
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
        *[
            (cmd, f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
            for device in ("tpu", "gpu", "cuda:abc")
            for cmd in (
                ["run", "{photos}", "{tmp}/out", "--device", device],
                ["eval", "{photos}", "--device", device],
                ["demo", "--out", "{tmp}/demo", "--device", device],
                ["train", "{photos}", "--out", "{tmp}/r", "--steps", "1", "--patch", "16", "--device", device],
            )
        ],
    ],
)
def test_bad_input_is_one_line_error(args, message, photos, tmp_path):
    (tmp_path / "garbage.safetensors").write_bytes(b"\x01" * 64)
    (tmp_path / "empty").mkdir()
    filled = [a.format(tmp=tmp_path, photos=photos) for a in args]
    result = runner.invoke(app, filled)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_ctrl_c_while_starting_is_one_line_and_exit_130(tmp_path, photos):
    """SIGINT while torch is being imported (seconds on a cold start): stopped when the import log shows torch."""
    command = [sys.executable, "-X", "importtime", "-m", "fastdenoise", "run", str(photos), str(tmp_path / "out")]
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.split("|")[-1].strip() == "torch._C":  # torch's core extension is loaded; torch is still importing
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    said = [ln for ln in rest.splitlines() if not ln.startswith("import time:")]
    assert proc.returncode == 130 and said == ["error: interrupted while starting"], (proc.returncode, rest[-2000:])
    assert not (tmp_path / "out").exists()


def test_eval_writes_json_and_markdown(photos, tmp_path, weights):
    out = tmp_path / "ev"
    result = runner.invoke(app, ["eval", str(photos), "--sigma", "15,50", "--weights", str(weights), "--out", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "eval.json").read_text())
    rows = payload["results"][0]["rows"]
    assert len(rows) == 6 and {r["sigma"] for r in rows} == {15.0, 50.0}
    assert "| fastdenoise |" in (out / "eval.md").read_text()
    stored = runner.invoke(
        app,
        [
            "eval",
            str(photos),
            "--sigma",
            "15,50",
            "--weights",
            str(weights),
            "--out",
            str(tmp_path / "evj"),
            "--jpeg",
            "75",
        ],
    )
    assert stored.exit_code == 0, stored.output
    jpeg_rows = json.loads((tmp_path / "evj" / "eval.json").read_text())["results"][0]["rows"]
    assert all(r["jpeg"] == 75 for r in jpeg_rows) and "stored as JPEG 75" in stored.output
    for plain, jpeg in zip(rows, jpeg_rows):  # the same noise, then JPEG: the input the model sees is another
        assert plain["image"] == jpeg["image"] and plain["noisy_psnr"] != jpeg["noisy_psnr"]


def test_train_then_resume_via_cli(photos, tmp_path):
    out = tmp_path / "run"
    base = ["train", str(photos), "--out", str(out), "--patch", "16", "--batch", "2", "--sigma", "5-50", "--amp", "off"]
    assert runner.invoke(app, [*base, "--steps", "2"]).exit_code == 0
    refused = runner.invoke(app, [*base, "--steps", "3"])
    assert refused.exit_code == 2 and "--resume" in refused.output
    resumed = runner.invoke(app, [*base, "--steps", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "model.safetensors").exists()
    tuned = runner.invoke(
        app,
        [*base[:2], "--out", str(tmp_path / "ft"), *base[4:], "--steps", "1", "--init", str(out / "model.safetensors")],
    )
    assert tuned.exit_code == 0, tuned.output
    frozen = [json.loads((folder / "config.json").read_text())["freeze_bn"] for folder in (out, tmp_path / "ft")]
    assert frozen == [False, True]  # a fine-tune keeps its init's BatchNorm statistics unless --batch-bn


def test_demo_with_bundled_weights(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "astronaut" in result.output
    assert len(list((tmp_path / "demo").glob("*.png"))) == 4


def test_bundled_weights_denoise_the_samples(tmp_path):
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.evaluation.demo import run_demo
    from fastdenoise.evaluation.evaluate import backend_denoiser
    from fastdenoise.models.checkpoint import load_denoiser

    backend = make_backend(load_denoiser(), BackendConfig(device="cpu", precision="fp32"))
    for sigma in (15, 50):
        rows = run_demo(backend_denoiser(backend), tmp_path / f"demo{sigma}", sigma)
        assert all(r["psnr"] > r["noisy_psnr"] + 5 for r in rows), rows


def test_train_joint_label_free(tmp_path, make_image):
    for i in range(3):
        save_rgb(make_image(64, 80), tmp_path / "photos" / f"{i}.png")
    args = [
        "train",
        str(tmp_path / "photos"),
        "-o",
        str(tmp_path / "run"),
        "--task",
        "classify",
        "--target",
        "softmax",
        "--patch",
        "32",
        "--batch",
        "2",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--amp",
        "off",
        "--compile",
        "off",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "joint.json").is_file() and (tmp_path / "run" / "model.safetensors").is_file()


def test_joint_options_need_task(photos, tmp_path):
    result = runner.invoke(app, ["train", str(photos), "-o", str(tmp_path / "r"), "--lam", "0.3"])
    assert result.exit_code == 2 and "--task" in result.output


def test_resume_restores_the_runs_own_settings(photos, tmp_path):
    out = tmp_path / "run"
    first = [
        "train",
        str(photos),
        "--out",
        str(out),
        "--patch",
        "16",
        "--batch",
        "2",
        "--sigma",
        "5-50",
        "--amp",
        "off",
        "--steps",
        "2",
        "--schedule",
        "constant",
        "--ema",
        "0.9",
        "--loss",
        "l1",
    ]
    assert runner.invoke(app, first).exit_code == 0
    resumed = runner.invoke(app, ["train", "--out", str(out), "--resume", "--steps", "3", "--lr", "5e-4"])
    assert resumed.exit_code == 0, resumed.output
    stored = json.loads((out / "config.json").read_text())
    assert stored["sigma"] == [5.0, 50.0] and stored["patch"] == 16 and stored["loss"] == "l1" and stored["ema"] == 0.9
    assert stored["steps"] == 3 and stored["lr"] == 5e-4  # the options that may change did
    for flag, value in [("--sigma", "25"), ("--patch", "24"), ("--loss", "mse"), ("--batch", "4")]:
        refused = runner.invoke(app, ["train", "--out", str(out), "--resume", "--steps", "4", flag, value])
        assert refused.exit_code == 2 and f"started with {flag}" in refused.output, (flag, refused.output)
    other = runner.invoke(app, ["train", str(tmp_path), "--out", str(out), "--resume", "--steps", "4"])
    assert other.exit_code == 2 and "started with DATA" in other.output
    same = runner.invoke(app, ["train", str(photos), "--out", str(out), "--resume", "--steps", "4", "--sigma", "5-50"])
    assert same.exit_code == 0, same.output
    assert runner.invoke(app, ["train", "--out", str(tmp_path / "none")]).exit_code == 2


def test_sigterm_stops_training_with_a_checkpoint_and_exit_143(photos, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "fastdenoise",
        "train",
        str(photos),
        "--out",
        str(out),
        "--patch",
        "16",
        "--batch",
        "2",
        "--amp",
        "off",
        "--steps",
        "100000",
        "--ckpt-every",
        "100000",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output
    assert "Traceback" not in output and "--resume" in output
    from fastdenoise.models.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["step"] >= 20  # saved on the signal, not at a --ckpt-every multiple


def test_models_by_name_and_self_ensemble(photos, tmp_path):
    bad = runner.invoke(app, ["eval", str(photos), "--sigma", "25", "--model", "sigma99", "-o", str(tmp_path / "e")])
    assert bad.exit_code == 2 and "not bundled; choose one of" in bad.output and "Traceback" not in bad.output
    both = runner.invoke(
        app, ["run", str(photos), str(tmp_path / "o"), "--model", "blind", "--weights", str(photos / "p0.png")]
    )
    assert both.exit_code == 2 and "give one" in both.output
    runs = {}
    for extra in ([], ["--ensemble"]):
        out = tmp_path / f"e{len(extra)}"
        result = runner.invoke(
            app, ["eval", str(photos), "--sigma", "30", "--model", "blind", "--limit", "2", "-o", str(out), *extra]
        )
        assert result.exit_code == 0, result.output
        runs[len(extra)] = json.loads((out / "eval.json").read_text())
    assert runs[1]["meta"]["ensemble"] and runs[1]["meta"]["weights"]["30"].endswith("blind.safetensors")
    plain, averaged = ([r["psnr"] for r in runs[k]["results"][0]["rows"]] for k in (0, 1))
    assert plain != averaged  # the ensemble changes the output


def foreign_identity_onnx(path: Path) -> Path:
    """An ONNX graph made elsewhere (no fastdenoise metadata) that hands its input back as the output."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_foreign_onnx_is_refused_unless_trusted(photos, tmp_path, weights):
    engine = foreign_identity_onnx(tmp_path / "identity.onnx")
    base = [
        "run",
        str(photos),
        str(tmp_path / "out"),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--backend",
        "onnxruntime",
        "--engine",
        str(engine),
    ]
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "identity.onnx: no fastdenoise metadata" in refused.output
    assert "--trust-engine" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    trusted = runner.invoke(app, [*base, "--trust-engine"])
    assert trusted.exit_code == 0, trusted.output
    from fastdenoise.images import load_rgb

    assert (load_rgb(tmp_path / "out" / "p2.png") == load_rgb(photos / "p2.png")).all()  # it ran what it was given


def test_train_one_denoiser_against_both_heads_label_free_and_balanced(tmp_path, make_image, data_dir, monkeypatch):
    monkeypatch.setenv("FASTDENOISE_DATA", str(data_dir))  # where the ESPNetv2 weights are found
    if not (data_dir / "weights" / "espnetv2").is_dir():
        pytest.skip("no ESPNetv2 weights under the shared data")
    for i in range(2):
        save_rgb(make_image(40, 48), tmp_path / "photos" / f"{i}.png")
    args = [
        "train",
        str(tmp_path / "photos"),
        "-o",
        str(tmp_path / "run"),
        "--task",
        "classify,segment",
        "--target",
        "argmax",
        "--balance",
        "0.3",
        "--balance",
        "1.0",
        "--patch",
        "32",
        "--batch",
        "1",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--amp",
        "off",
        "--compile",
        "off",
    ]
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
    result = runner.invoke(
        app,
        [
            "train",
            str(photos),
            "-o",
            str(tmp_path / "r"),
            "--task",
            "classify,segment",
            "--target",
            "argmax",
            "--lam",
            "1",
            "--balance",
            "1",
        ],
    )
    assert result.exit_code == 2 and "not both" in result.output


def test_eval_jpeg_routes_each_image_as_run_does(make_image):
    from fastdenoise.cli.evaluate import jpeg_routed
    from fastdenoise.noise import add_noise, store_jpeg

    pick = jpeg_routed(lambda x, s: "default", lambda x, s: "jpeg")
    clean = make_image(64, 80)
    assert pick(store_jpeg(clean / 255.0, 90), 0) == "default"  # a clean JPEG keeps the default model
    assert pick(store_jpeg(add_noise(clean, 25, 0, 0), 90), 25) == "jpeg"
