"""SIGINT / SIGTERM: one line and exit 130 / 143 at any moment of a command, no core dump, and a rerun finishes the rest
(fastdenoise.interrupts, the runner's stop, and OpenVINO's signal stack: the crash of issue 30)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, random_image

from fastdenoise import interrupts
from fastdenoise.images import load_rgb, save_rgb

WORD = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
needs_openvino = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("openvino", "onnxscript")), reason="needs openvino and onnxscript"
)


def test_after_start_up_signals_raise_and_sigterm_is_told_apart(monkeypatch):
    monkeypatch.setattr(interrupts, "_phase", None)
    with pytest.raises(interrupts.Terminated):
        interrupts.on_signal(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt) as raised:
        interrupts.on_signal(signal.SIGINT, None)
    assert not isinstance(raised.value, interrupts.Terminated)


def test_importing_the_cli_changes_no_signal_handler():
    script = (
        "import signal; before = signal.getsignal(signal.SIGTERM); import fastdenoise.cli; "
        "assert signal.getsignal(signal.SIGTERM) is before; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def photos(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(7)
    paths = [folder / f"p{i:03d}.png" for i in range(count)]
    for path in paths:
        save_rgb(random_image(rng, 64, 80), path)
    return paths


def ok_rows(part: Path) -> int:
    return part.read_bytes().count(b'"status": "ok"') if part.exists() else 0


def signal_at(command: list[str], cwd: Path, env: dict, signum: int, moment: str) -> subprocess.CompletedProcess:
    """Run `command`, send `signum` at `moment` ('start': 1 s in, while torch and the backend load; 'run': once three
    images are done, after OpenVINO has compiled and run), and return the finished process."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started, part = time.monotonic(), Path(command[5]) / "manifest.part0.jsonl"
    due = (lambda: time.monotonic() - started > 1.0) if moment == "start" else (lambda: ok_rows(part) >= 3)
    while proc.poll() is None and time.monotonic() - started < 240 and not due():
        time.sleep(0.01)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """Weights and a cache folder shared by the OpenVINO runs, so the ONNX export is made once."""
    from helpers import SMALL, randomize_bn

    from fastdenoise.models.checkpoint import save_weights
    from fastdenoise.models.denoiser import Denoiser

    folder = tmp_path_factory.mktemp("openvino")
    save_weights(randomize_bn(Denoiser(SMALL)), folder / "small.safetensors")
    return folder / "small.safetensors", folder / "cache"


@needs_openvino
@pytest.mark.parametrize("moment", ["start", "run"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_on_openvino_stops_with_its_exit_code_and_a_rerun_finishes(tmp_path, exported, signum, moment):
    weights, cache = exported
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 60)
    command = [
        sys.executable,
        "-m",
        "fastdenoise",
        "run",
        str(src),
        str(dst),
        "--weights",
        str(weights),
        "--backend",
        "openvino",
        "--precision",
        "fp32",
        "--batch",
        "2",
        "--workers",
        "1",
        "--loader",
        "pil",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "FASTDENOISE_CACHE": str(cache)}
    stopped = signal_at(command, tmp_path, env, signum, moment)
    lines = stopped.stderr.strip().splitlines()
    assert stopped.returncode == 128 + signum, f"exit {stopped.returncode}: {stopped.stderr[-2000:]}"
    assert "Traceback" not in stopped.stderr and not list(tmp_path.glob("core*"))
    assert lines[-1] in (
        f"error: {WORD[signum]} while starting",
        "stopped early: stop requested; the same command again does the rest",
    ), stopped.stderr
    if moment == "run":
        assert lines[-1].startswith("stopped early") and 3 <= ok_rows(dst / "manifest.jsonl") < len(paths)
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = [json.loads(line) for line in (dst / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["input"] for r in rows) == sorted(p.name for p in paths)
    assert {r["status"] for r in rows} <= {"ok", "skipped"}
    assert all(load_rgb(dst / r["output"]).shape == (64, 80, 3) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.15, 0.4, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0, 4.0])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_start_up_answers_a_signal_at_any_delay_with_one_line(tmp_path, weights, signum, delay):
    photos(tmp_path / "in", 4)
    command = [sys.executable, "-m", "fastdenoise", "run", "in", "out", "--weights", str(weights), "--device", "cpu"]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    lines = err.strip().splitlines()
    if proc.returncode == 0:  # it finished first: nothing to check at this delay on this machine
        return
    assert proc.returncode == 128 + signum and len(lines) == 1 and "Traceback" not in err, err
