"""The output lock: a second run on one OUTPUT refuses at once naming the holder; a dead holder does not keep it."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import ROOT
from test_reliability import ENV, assert_outputs_valid, cli_command, photos, rows_of, start_and_wait_for_rows

from fastdenoise.pipeline.lock import LockError, OutputLock, lock_name
from fastdenoise.pipeline.manifest import MANIFEST
from fastdenoise.pipeline.runner import RunConfig, denoise_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_one_holder_per_rank_released_on_exit(tmp_path):
    first = OutputLock(tmp_path, rank=0)
    facts = json.loads((tmp_path / lock_name(0)).read_text())
    assert (facts["pid"], facts["host"]) == (os.getpid(), socket.gethostname()) and first.taken_over is None
    with pytest.raises(LockError, match=f"pid {os.getpid()} on {socket.gethostname()}"):
        OutputLock(tmp_path, rank=0)
    other_rank = OutputLock(tmp_path, rank=1)  # the shards of one torchrun job each hold their own part
    first.release()
    other_rank.release()
    assert list(tmp_path.iterdir()) == []
    OutputLock(tmp_path, rank=0).release()  # free again


def test_a_lock_file_left_by_a_dead_run_is_taken_over(tmp_path, backend):
    src, dst = tmp_path / "in", tmp_path / "out"
    photos(src, 3)
    dst.mkdir()
    pid = dead_pid()
    (dst / lock_name(0)).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 1.7e9}))
    summary = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    assert summary.ok == 3 and f"pid {pid} on {socket.gethostname()}" in summary.taken_over
    assert not (dst / lock_name(0)).exists()


def test_a_planted_lock_link_is_refused(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    dst = tmp_path / "out"
    dst.mkdir()
    os.symlink(target, dst / lock_name(0))
    with pytest.raises(ValueError, match="symlink"):
        OutputLock(dst)
    assert target.read_text() == "keep"


def test_a_second_run_on_the_same_output_refuses_and_the_first_loses_no_row(tmp_path, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 150, size=(64, 64))
    command = cli_command(src, dst, weights)
    first = start_and_wait_for_rows(command, dst / "manifest.part0.jsonl", rows=4)
    first.send_signal(signal.SIGSTOP)  # held mid-run, however long the second one takes to start
    try:
        second = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "another run" in lines[0] and f"pid {first.pid} " in lines[0], lines
    rows = rows_of(dst / MANIFEST)
    assert sorted(r["input"] for r in rows) == sorted(p.relative_to(src).as_posix() for p in paths)
    assert {r["status"] for r in rows} == {"ok"}
    assert_outputs_valid(dst, rows)


HOLD_RANK1 = """
import sys, time
from fastdenoise.pipeline.lock import OutputLock
lock = OutputLock(sys.argv[1], rank=1, world=2)
print("held", flush=True)
time.sleep(600)
"""


def test_a_plain_run_never_takes_over_while_a_rank_of_a_torchrun_run_still_writes(tmp_path, weights):
    from typer.testing import CliRunner

    from fastdenoise.cli import app

    src, dst = tmp_path / "in", tmp_path / "out"
    photos(src, 2)
    dst.mkdir()
    (dst / lock_name(0)).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))  # rank 0 died
    rank1 = subprocess.Popen([sys.executable, "-c", HOLD_RANK1, str(dst)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert rank1.stdout.readline().strip() == "held"
        args = [
            "run",
            str(src),
            str(dst),
            "--weights",
            str(weights),
            "--backend",
            "eager",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--loader",
            "pil",
        ]
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == 2, refused.output
        (line,) = refused.output.strip().splitlines()
        assert line.startswith(f"error: {dst}: another run is writing here (pid {rank1.pid} ") and lock_name(1) in line
        assert not list(dst.rglob("*.png")) and not (dst / MANIFEST).exists()
    finally:
        rank1.kill()
        rank1.wait()

    done = CliRunner().invoke(app, args)  # its holder dead: the stale rank-1 lock goes too

    assert done.exit_code == 0, done.output
    assert len(list(dst.rglob("*.png"))) == 2 and not list(dst.glob(".fastdenoise.rank*.lock"))


def test_a_plain_resume_removes_the_stale_lock_files_of_a_killed_torchrun_run(tmp_path, backend):
    src, dst = tmp_path / "in", tmp_path / "out"
    photos(src, 2)
    dst.mkdir()
    for rank in range(3):
        (dst / lock_name(rank)).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))

    summary = denoise_folder(src, dst, backend, RunConfig(loader="pil"))

    assert summary.ok == 2 and sorted(p.name for p in dst.iterdir() if p.name.startswith(".")) == []
    two = OutputLock(dst, rank=0, world=2)  # under torchrun, rank 0 leaves the other ranks' locks alone
    one = OutputLock(dst, rank=1, world=2)
    assert (dst / lock_name(1)).exists()
    two.release()
    one.release()
