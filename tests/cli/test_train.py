"""`fastdenoise train` as a user sees it: the progress line shows only known numbers, a steady ETA, one message on
Ctrl-C, and a too-small image named by its file."""

import errno
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT
from typer.testing import CliRunner

from fastdenoise.cli import app
from fastdenoise.images import save_rgb
from fastdenoise.training.fit import ProgressStats

runner = CliRunner()
FAST = ["--batch", "2", "--amp", "off", "--compile", "off", "--device", "cpu"]


@pytest.fixture
def photos(tmp_path, make_image):
    for i in range(2):
        save_rgb(make_image(36, 44), tmp_path / "photos" / f"p{i}.png")
    return tmp_path / "photos"


def test_progress_shows_only_known_numbers():
    stats = ProgressStats(total=100)
    assert stats.text() == ""  # before the first step: no `loss nan`, no `0.00 it/s`
    stats.step, stats.loss = 1, 0.0123
    assert stats.text() == "loss 1.23e-02"
    stats.timed(2.0, 0.5)
    stats.step = 10
    assert stats.text() == "loss 1.23e-02  2.00 it/s  0.500 Mpx/s  ETA 0:00:45"
    stats.psnr = 28.456
    assert stats.text() == "loss 1.23e-02  val 28.46 dB  2.00 it/s  0.500 Mpx/s  ETA 0:00:45"


def test_the_eta_moves_little_after_one_slow_window():
    stats = ProgressStats(total=10_000)
    etas, raw = [], []
    for step, rate in zip(range(100, 900, 100), [10.0, 10.0, 10.0, 1.0, 10.0, 10.0, 10.0, 10.0]):
        stats.step = step
        stats.timed(rate, rate / 100)
        etas.append(stats.eta())
        raw.append((stats.total - step) / rate)
    jump = max(b / a for a, b in itertools.pairwise(etas))
    raw_jump = max(b / a for a, b in itertools.pairwise(raw))
    assert raw_jump > 9 and jump < 2.0, (etas, raw)
    assert etas[-1] == pytest.approx((stats.total - 800) / stats.rate) and stats.rate < 10.0


def test_train_progress_without_val_has_no_val_and_no_nan(photos, tmp_path):
    args = ["train", str(photos), "-o", str(tmp_path / "run"), "--patch", "16", "--steps", "3", *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    bar = result.output.splitlines()[0]  # the bar's last state: CliRunner's output is no terminal, as a log is not
    numbers = r"loss \d\.\d\de-\d\d  \d+\.\d\d it/s  \d+\.\d{3} Mpx/s  ETA 0:00:00"
    assert re.fullmatch(rf"train: 3/3 \(100%\), \d:\d\d:\d\d elapsed; {numbers}", bar), bar
    assert result.output.splitlines()[1] == f"weights: {tmp_path / 'run' / 'model.safetensors'}"


def test_a_too_small_image_is_named_by_its_file(photos, tmp_path, make_image):
    save_rgb(make_image(20, 30), photos / "tiny.png")
    args = ["train", str(photos), "-o", str(tmp_path / "run"), "--patch", "24", "--steps", "1", *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: 1 training image is smaller than the 24px patch (first: {photos / 'tiny.png'}, 30x20)"
    ]


def test_ctrl_c_says_one_thing(photos, tmp_path):
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
        "--steps",
        "100000",
        "--ckpt-every",
        "100000",
        *FAST,
    ]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    said = [line for line in (stdout + stderr).splitlines() if not line.startswith("train ")]  # the bar's last frame
    assert len(said) == 1 and re.fullmatch(
        rf"stopped at step \d+: the last checkpoint is {re.escape(str(out / 'last.pt'))}; continue with --out "
        rf"{re.escape(str(out))} --resume",
        said[0],
    ), stdout + stderr


def train_args(photos, out, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        str(photos),
        "-o",
        str(out),
        "--patch",
        "16",
        "--steps",
        str(steps),
        "--ckpt-every",
        "2",
        *FAST,
        *extra,
    ]


def test_resume_trains_in_the_out_given_never_where_config_json_points(photos, tmp_path, monkeypatch):
    from fastdenoise.models.checkpoint import load_checkpoint

    first, copy = tmp_path / "first", tmp_path / "copy"
    assert runner.invoke(app, train_args(photos, first, 2)).exit_code == 0
    shutil.copytree(first, copy)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    resumed = runner.invoke(app, ["train", "-o", str(copy), "--resume", "--steps", "4"])
    assert resumed.exit_code == 0, resumed.output
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # the run the copy came from is untouched
    assert load_checkpoint(copy / "last.pt")["step"] == 4
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy)
    stored = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**stored, "out": "elsewhere"}))  # a relative out: not followed
    monkeypatch.chdir(tmp_path)
    again = runner.invoke(app, ["train", "-o", str(copy), "--resume", "--steps", "6"])
    assert again.exit_code == 0, again.output
    assert load_checkpoint(copy / "last.pt")["step"] == 6 and not (tmp_path / "elsewhere").exists()


def start_training(photos, out):
    """A long `fastdenoise train` in its own process, returned once it has logged a step."""
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
        "--steps",
        "100000",
        "--ckpt-every",
        "100000",
        *FAST,
    ]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not ((out / "log.jsonl").exists() and (out / "log.jsonl").read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.2)
    return proc


def test_a_second_train_on_one_out_stops_at_once_naming_the_holder(photos, tmp_path):
    out = tmp_path / "run"
    first = start_training(photos, out)
    try:
        second = runner.invoke(app, train_args(photos, out, 2))
        resumed = runner.invoke(app, ["train", "-o", str(out), "--resume", "--steps", "2"])
    finally:
        first.kill()
        first.communicate()
    host = re.escape(socket.gethostname())
    for refused in (second, resumed):
        assert refused.exit_code == 2, refused.output
        assert re.fullmatch(
            rf"error: {re.escape(str(out))}: another run is writing here \(pid {first.pid} on {host}, "
            r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; lock \.fastdenoise\.rank0\.lock\); .*",
            refused.output.strip(),
        ), refused.output
    assert not (out / "last.pt").exists()  # neither wrote a checkpoint
    after = runner.invoke(app, train_args(photos, out, 2))  # the killed holder left its lock file: taken over
    assert after.exit_code == 0, after.output
    notes = [line for line in after.output.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and f"took over the output lock of a run no longer running (pid {first.pid} " in notes[0]
    assert not list(out.glob(".fastdenoise.*.lock"))  # released at the end


def test_links_planted_in_out_are_never_written_through(photos, tmp_path, rng):
    out, outside = tmp_path / "run", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    kept = {name: rng.bytes(64) for name in ("config.json", "log.jsonl")}
    for name, content in kept.items():
        (outside / name).write_bytes(content)
        (out / name).symlink_to(outside / name)
    for name in ("last.pt", "best.safetensors", "model.safetensors"):  # dangling: a write through them creates a file
        (out / name).symlink_to(outside / f"new-{name}")
    refused = runner.invoke(app, train_args(photos, out, 2, "--val", str(photos), "--val-every", "1"))
    assert refused.exit_code == 2
    assert refused.output.strip() == f"error: {out / 'log.jsonl'}: is a symlink, not written through; remove it"
    (out / "log.jsonl").unlink()
    result = runner.invoke(app, train_args(photos, out, 2, "--val", str(photos), "--val-every", "1"))
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == kept  # nothing written or made outside OUT
    written = ("config.json", "log.jsonl", "last.pt", "best.safetensors", "model.safetensors")
    assert all((out / name).is_file() and not (out / name).is_symlink() for name in written)


def tamper(saved: dict, how: str) -> None:
    if how == "missing":
        del saved["scaler"]
    elif how == "wrong type":
        saved["optimizer"] = [1.0, 2.0]
    elif how == "float step":
        saved["step"] = 1e9
    else:
        saved["step"] = 10**9  # today: the run "finishes" at once


@pytest.mark.parametrize(
    "how,reason",
    [
        ("missing", "no 'scaler' entry"),
        ("wrong type", "its 'optimizer' is a list, not a dict"),
        ("float step", "its 'step' is a float, not an int"),
        ("huge step", "its 'step' 1000000000 is not the step its LR schedule reached (2)"),
    ],
)
def test_a_tampered_checkpoint_is_refused_in_one_line_before_any_work(photos, tmp_path, how, reason):
    out = tmp_path / "run"
    assert runner.invoke(app, train_args(photos, out, 2)).exit_code == 0
    saved = torch.load(out / "last.pt", weights_only=True)
    tamper(saved, how)
    torch.save(saved, out / "last.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = runner.invoke(app, ["train", "-o", str(out), "--resume", "--steps", "6"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {out / 'last.pt'}: cannot resume: {reason}"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not even config.json rewritten


class FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are written, as on a full disk."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_disk_full_at_a_checkpoint_is_one_line_and_keeps_the_last_one(photos, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert runner.invoke(app, train_args(photos, out, 2)).exit_code == 0
    kept = ("last.pt", "model.safetensors")  # config.json gets --steps 4, log.jsonl the rows of steps 3 and 4
    names, before = sorted(os.listdir(out)), {name: (out / name).read_bytes() for name in kept}
    save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, handle: save(obj, FullDisk(handle, 4096)))
    result = runner.invoke(app, ["train", "-o", str(out), "--resume", "--steps", "4"])
    assert result.exit_code == 3, result.output  # as `run`: stopped because OUT cannot be written
    said = [line for line in result.output.splitlines() if not line.startswith("train ")]  # the bar's last frame
    last = out / "last.pt"
    assert said == [
        f"error: {last}: cannot write it ({os.strerror(errno.ENOSPC)}); {last} keeps step 2: continue with "
        f"--out {out} --resume once OUT can be written"
    ], result.output
    assert {name: (out / name).read_bytes() for name in kept} == before and sorted(os.listdir(out)) == names
    assert torch.load(last, weights_only=True)["step"] == 2


@pytest.mark.parametrize("text,reason", [("{not json", "unreadable run config"), ("[1, 2]", "not a run config")])
def test_a_damaged_config_json_is_one_line_on_resume(tmp_path, text, reason):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(text)
    result = runner.invoke(app, ["train", "-o", str(tmp_path / "run"), "--resume"])
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"error: {tmp_path / 'run' / 'config.json'}: {reason}")


def test_noise_map_training_starts_from_blind_and_run_then_needs_the_level(photos, tmp_path):
    from fastdenoise.models.checkpoint import DEFAULT_WEIGHTS, bundled_weights, load_denoiser

    blind = bundled_weights().parent / DEFAULT_WEIGHTS
    out = tmp_path / "cond"
    args = [
        "train",
        str(photos),
        "--out",
        str(out),
        "--noise-map",
        "--sigma",
        "0-75",
        "--steps",
        "1",
        "--batch",
        "2",
        "--patch",
        "24",
        "--init",
        str(blind),
        "--amp",
        "off",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["spec"]["noise_map"] is True
    assert load_denoiser(out / "model.safetensors").spec.noise_map
    refused = runner.invoke(app, ["run", str(photos), str(tmp_path / "o"), "--weights", str(out / "model.safetensors")])
    assert refused.exit_code == 2 and "takes the noise level; give --sigma S" in refused.output
    ran = runner.invoke(
        app,
        [
            "run",
            str(photos),
            str(tmp_path / "o"),
            "--weights",
            str(out / "model.safetensors"),
            "--sigma",
            "25",
            "--backend",
            "eager",
        ],
    )
    assert ran.exit_code == 0, ran.output
    joint = runner.invoke(app, [*args[:2], "--out", str(tmp_path / "j"), "--noise-map", "--task", "classify"])
    assert joint.exit_code == 2 and "--noise-map trains the denoiser alone" in joint.output


def test_sigterm_before_the_first_checkpoint_is_exit_143_not_130(tmp_path):
    from fastdenoise import interrupts
    from fastdenoise.cli.train import interrupt_on_sigterm, stopped

    previous = signal.getsignal(signal.SIGTERM)
    try:
        interrupt_on_sigterm()
        with pytest.raises(interrupts.Terminated) as raised:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped(raised.value, tmp_path).exit_code == 143
    assert stopped(KeyboardInterrupt(), tmp_path).exit_code == 130


def test_extra_folders_colour_and_downscale_are_saved_and_resumed_as_started(photos, tmp_path, make_image):
    more = tmp_path / "more"
    save_rgb(make_image(40, 40), more / "m0.png")
    run = tmp_path / "run"
    args = ["train", str(photos), "-o", str(run), "--patch", "16", "--steps", "2", *FAST]
    result = runner.invoke(app, [*args, "--extra", str(more), "--colour", "0.5", "--downscale", "2"])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert (config["extra"], config["colour"], config["downscale"]) == ([str(more)], 0.5, 2.0)
    result = runner.invoke(app, ["train", "-o", str(run), "--resume", "--steps", "3", *FAST[2:]])
    assert result.exit_code == 0, result.output  # the run's own folders and augmentation, from its config.json
    result = runner.invoke(app, ["train", "-o", str(run), "--resume", "--steps", "4", "--colour", "0"])
    assert result.exit_code == 2 and "the run was started with --colour 0.5, not 0.0" in result.output
    kodak = tmp_path / "kodak24"
    shutil.copytree(photos, kodak)
    result = runner.invoke(app, [*args[:3], str(tmp_path / "other"), *args[4:], "--extra", str(kodak)])
    assert result.exit_code == 2 and f"{kodak}: a test set; train on training photos only" in result.output
    result = runner.invoke(
        app, [*args[:3], str(tmp_path / "joint"), *args[4:], "--colour", "0.5", "--task", "classify"]
    )
    assert result.exit_code == 2 and "are for the denoiser alone" in result.output
