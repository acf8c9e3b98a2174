"""Bad input, interrupted runs, full disks: every input accounted for, nothing lost, nothing written where it must not be."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import fastdenoise.runner as runner_module
from fastdenoise.cli import app
from fastdenoise.images import load_rgb, save_rgb
from fastdenoise.loaders import dali_available
from fastdenoise.manifest import MANIFEST
from fastdenoise.runner import RunConfig, check_folders, denoise_folder
from conftest import ROOT, random_image
from image_files import bad_tree, snapshot

needs_dali = pytest.mark.skipif(
    not dali_available(), reason="nvidia-dali not installed (pip install nvidia-dali-cuda130)"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def photos(folder: Path, count: int, size: tuple[int, int] = (40, 56), seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = [folder / f"sub{i % 3}" / f"p{i:04d}.png" for i in range(count)]
    for path in paths:
        save_rgb(random_image(rng, *size), path)
    return paths


def assert_outputs_valid(dst: Path, rows: list[dict]) -> None:
    """Every ok / skipped row has a decodable output; no temporary file is left; nothing else is in dst."""
    done = {r["output"] for r in rows if r["status"] in ("ok", "skipped")}
    for output in done:
        assert load_rgb(dst / output).ndim == 3
    files = {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()}
    assert files == done | {MANIFEST}


@pytest.mark.parametrize("loader", ["pil", pytest.param("dali", marks=needs_dali)])
def test_every_input_is_accounted_for_and_nothing_else_is_touched(tmp_path, backend, loader):
    src, dst = tmp_path / "in", tmp_path / "out"
    expect = bad_tree(src, tmp_path / "outside", np.random.default_rng(3))
    before = snapshot(tmp_path)
    summary = denoise_folder(src, dst, backend, RunConfig(batch=3, tile=64, overlap=16, loader=loader))
    rows = rows_of(dst / MANIFEST)
    assert sorted(r["input"] for r in rows) == sorted(expect)  # one row per file or folder found, no more
    for row in rows:
        want = expect[row["input"]]
        assert row["status"] == want.status, row
        if want.status == "ok":
            assert load_rgb(dst / row["output"]).shape[:2] == want.shape == (row["height"], row["width"]), row
        else:
            assert want.reason in row["error"], row
    counts = {s: sum(e.status == s for e in expect.values()) for s in ("ok", "error", "ignored")}
    assert (summary.ok, summary.failed, summary.ignored, summary.skipped) == (
        counts["ok"],
        counts["error"],
        counts["ignored"],
        0,
    )
    assert snapshot(tmp_path, skip=dst) == before  # inputs unmodified, nothing written outside the output folder
    assert_outputs_valid(dst, rows)


def test_exit_codes_strict_and_fail_fast(tmp_path, weights):
    src = tmp_path / "in"
    photos(src, 4)
    (src / "sub0" / "a_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    base = [
        "run",
        str(src),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--loader",
        "pil",
        "--batch",
        "1",
    ]
    strict = CliRunner().invoke(app, [*base[:2], str(tmp_path / "o1"), *base[2:]])
    assert strict.exit_code == 1 and "4 denoised, 0 skipped, 1 failed" in strict.output
    relaxed = CliRunner().invoke(app, [*base[:2], str(tmp_path / "o2"), *base[2:], "--no-strict"])
    assert relaxed.exit_code == 0
    fast = CliRunner().invoke(app, [*base[:2], str(tmp_path / "o3"), *base[2:], "--fail-fast", "--workers", "1"])
    assert fast.exit_code == 1 and "--fail-fast" in fast.output
    statuses = [r["status"] for r in rows_of(tmp_path / "o3" / MANIFEST)]
    assert statuses.count("error") == 1 and len(statuses) < 5  # sub0/a_broken.png comes first among its folder


def test_output_may_not_hold_or_be_inside_the_input(tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    with pytest.raises(ValueError, match="hold the input"):
        check_folders(tmp_path / "data" / "raw", tmp_path / "data")
    with pytest.raises(ValueError, match="inside"):
        check_folders(tmp_path / "data", tmp_path / "data" / "raw" / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        check_folders(tmp_path / "data", tmp_path / "file")


def test_a_symlink_planted_in_the_output_is_not_written_through(tmp_path, backend):
    src, dst, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    photos(src, 6)
    elsewhere.mkdir()
    dst.mkdir()
    os.symlink(elsewhere, dst / "sub1")  # outputs of in/sub1/* would land in elsewhere/
    save_rgb(random_image(np.random.default_rng(0), 8, 8), src / "sub0" / "p9999.png")
    (dst / "sub0").mkdir()
    os.symlink(elsewhere / "stolen.png", dst / "sub0" / ".p9999.png.part")  # a planted temporary name
    summary = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    rows = {r["input"]: r for r in rows_of(dst / MANIFEST)}
    assert list(elsewhere.iterdir()) == []
    assert all(
        r["status"] == "error" and "outside the output folder" in r["error"]
        for k, r in rows.items()
        if k.startswith("sub1/")
    )
    assert rows["sub0/p9999.png"]["status"] == "ok" and summary.failed == 2


def test_stop_request_ends_after_the_batch_in_flight_and_a_rerun_finishes(tmp_path, backend):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 24)
    stop = __import__("threading").Event()
    first = denoise_folder(
        src, dst, backend, RunConfig(batch=2, loader="pil"), lambda row: row["status"] == "ok" and stop.set(), stop=stop
    )
    assert first.cause == "request" and 1 <= first.ok < len(paths)
    rows = rows_of(dst / MANIFEST)
    assert not list(dst.glob("manifest.part*"))  # merged
    assert_outputs_valid(dst, rows)
    second = denoise_folder(src, dst, backend, RunConfig(batch=2, loader="pil"))
    assert second.stopped is None and second.skipped == first.ok and second.ok + second.skipped == len(paths)
    rows = rows_of(dst / MANIFEST)
    assert sorted(r["input"] for r in rows) == sorted(p.relative_to(src).as_posix() for p in paths)
    assert_outputs_valid(dst, rows)


def test_changed_input_or_output_is_redone(tmp_path, backend):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 3)
    denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    save_rgb(random_image(np.random.default_rng(9), 40, 56), paths[0])  # new content, new mtime
    os.utime(paths[0], ns=(1, 1))
    (dst / paths[1].relative_to(src)).write_bytes(b"clobbered")  # someone replaced an output
    again = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    assert (again.ok, again.skipped) == (2, 1)
    assert_outputs_valid(dst, rows_of(dst / MANIFEST))


class DiskFull:
    """Stands in for the image writer: the first `room` writes succeed, then ENOSPC, as on a full disk."""

    def __init__(self, room: int) -> None:
        self.room, self.write = room, runner_module.write_image

    def __call__(self, image, path, quality=95):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.room -= 1
        return self.write(image, path, quality)


def test_disk_full_stops_cleanly_and_a_later_run_resumes(tmp_path, backend, monkeypatch):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 20)
    monkeypatch.setattr(runner_module, "write_image", DiskFull(room=5))
    first = denoise_folder(src, dst, backend, RunConfig(batch=2, workers=1, loader="pil"))
    assert first.cause == "output" and "No space left" in first.stopped and first.ok == 5
    rows = rows_of(dst / MANIFEST)
    assert all("No space left" in r["error"] for r in rows if r["status"] == "error") and first.failed >= 1
    assert_outputs_valid(dst, rows)
    monkeypatch.undo()
    second = denoise_folder(src, dst, backend, RunConfig(batch=2, loader="pil"))
    assert second.stopped is None and (second.skipped, second.ok) == (5, len(paths) - 5)
    assert_outputs_valid(dst, rows_of(dst / MANIFEST))


def test_unwritable_subfolder_fails_its_inputs_only(tmp_path, backend, monkeypatch):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 9)
    write = runner_module.write_image

    def read_only_sub1(image, path, quality=95):
        if Path(path).parent.name == "sub1":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return write(image, path, quality)

    monkeypatch.setattr(runner_module, "write_image", read_only_sub1)
    first = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    assert first.stopped is None and (first.ok, first.failed) == (6, 3)
    monkeypatch.undo()
    second = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    assert (second.ok, second.skipped, second.failed) == (3, 6, 0)
    assert len(list(dst.rglob("*.png"))) == len(paths)


def test_cli_disk_full_exit_code_and_message(tmp_path, weights, monkeypatch):
    src = tmp_path / "in"
    photos(src, 6)
    monkeypatch.setattr(runner_module, "write_image", DiskFull(room=2))
    args = [
        "run",
        str(src),
        str(tmp_path / "out"),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--loader",
        "pil",
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3 and "No space left" in result.output and "again" in result.output


# -- real processes: a kill, a SIGTERM ------------------------------------------------------------------------------


def cli_command(src: Path, dst: Path, weights: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fastdenoise", "run", str(src), str(dst), "--weights", str(weights), "--device", "cpu",
            "--precision", "fp32", "--batch", "2", "--workers", "1", "--loader", "pil", *extra]  # fmt: skip


ENV = os.environ | {"OMP_NUM_THREADS": "1"}  # see the one_torch_thread fixture


def start_and_wait_for_rows(command: list[str], part: Path, rows: int, timeout: float = 120.0) -> subprocess.Popen:
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if part.exists() and part.read_bytes().count(b'"status": "ok"') >= rows:
            return proc
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"the run ended or stalled before {rows} rows: {proc.communicate()}")


def test_sigkill_then_the_same_command_finishes_with_one_output_per_input(tmp_path, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 150, size=(64, 64))
    command = cli_command(src, dst, weights)
    proc = start_and_wait_for_rows(command, dst / "manifest.part0.jsonl", rows=6)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (dst / MANIFEST).exists(), "the run finished before the kill; the test proves nothing"
    journaled = [r for r in rows_of(dst / "manifest.part0.jsonl") if r.get("status") == "ok"]
    for output in dst.rglob("p*.png"):  # a final name only ever holds a complete image
        assert load_rgb(output).shape == (64, 64, 3)
    again = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = rows_of(dst / MANIFEST)
    assert sorted(r["input"] for r in rows) == sorted(p.relative_to(src).as_posix() for p in paths)
    assert sum(r["status"] == "skipped" for r in rows) == len(journaled)
    assert {r["status"] for r in rows} == {"ok", "skipped"}
    assert_outputs_valid(dst, rows)


def test_sigterm_stops_after_the_batch_and_flushes_the_manifest(tmp_path, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 150, size=(64, 64))
    command = cli_command(src, dst, weights)
    proc = start_and_wait_for_rows(command, dst / "manifest.part0.jsonl", rows=4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert b"stopped early" in err
    rows = rows_of(dst / MANIFEST)
    assert 4 <= len(rows) < len(paths) and not list(dst.glob("manifest.part*"))
    assert_outputs_valid(dst, rows)
    again = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    final = rows_of(dst / MANIFEST)
    assert len(final) == len(paths) and sum(r["status"] == "skipped" for r in final) == len(rows)
    assert_outputs_valid(dst, final)


# -- memory ---------------------------------------------------------------------------------------------------------


PEAK_RSS = """
import atexit, sys


def peak() -> None:
    # VmHWM belongs to this process's own address space; ru_maxrss would start from the parent's size (kept over exec)
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print("peak_rss_kib", kib, file=sys.stderr)


atexit.register(peak)
from fastdenoise.cli import main

sys.argv = ["fastdenoise", *sys.argv[1:]]
main()
"""


def peak_rss_mib(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Run `fastdenoise run` in a child that reports its own peak RSS at exit."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command[3:]], cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=3000
    )
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("peak_rss_kib")][-1]
    return int(line.split()[1]) / 1024, done


def tiny_files(src: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for i in range(count):
        folder = src / f"d{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png", compress_level=0)


def run_many(tmp_path: Path, weights: Path, count: int) -> tuple[float, float]:
    src, dst = tmp_path / "many", tmp_path / "many_out"
    tiny_files(src, count)
    command = cli_command(src, dst, weights, "--batch", "64", "--loader", "auto")
    first, done = peak_rss_mib(command)
    assert done.returncode == 0, done.stderr[-2000:]
    second, done = peak_rss_mib(command)  # everything skipped: the manifest is read back, streamed
    assert done.returncode == 0 and f"0 denoised, {count} skipped" in done.stdout
    print(f"\n{count} files: peak RSS {first:.0f} MiB (run), {second:.0f} MiB (rerun, all skipped)")
    return first, second


def test_many_small_files_run_in_bounded_memory(tmp_path, weights):
    first, second = run_many(tmp_path, weights, 200)
    assert first < 1500 and second < 1500


@pytest.mark.slow
def test_hundred_thousand_files_run_in_bounded_memory(tmp_path, weights):
    first, second = run_many(tmp_path, weights, 100_000)
    assert first < 1500 and second < 1500


@pytest.mark.slow
def test_6000x4000_photo_is_tiled(tmp_path, backend):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(random_image(np.random.default_rng(0), 4000, 6000)).save(src / "big.jpg", quality=90)
    summary = denoise_folder(src, tmp_path / "out", backend, RunConfig(tile=512, overlap=32))
    assert summary.ok == 1 and load_rgb(tmp_path / "out" / "big.png").shape == (4000, 6000, 3)
