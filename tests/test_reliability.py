"""Bad input, interrupted runs, full disks: every input accounted for, nothing lost, nothing written where it must not
be."""

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
import torch
from conftest import ROOT, random_image
from image_files import bad_tree, snapshot
from PIL import Image
from typer.testing import CliRunner

import fastdenoise.pipeline.outputs as outputs_module
from fastdenoise.cli import app
from fastdenoise.images import load_rgb, save_rgb
from fastdenoise.pipeline.loaders import dali_available
from fastdenoise.pipeline.manifest import MANIFEST
from fastdenoise.pipeline.runner import RunConfig, check_folders, denoise_folder

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
        self.room, self.write = room, outputs_module.write_image

    def __call__(self, image, path, *options):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.room -= 1
        return self.write(image, path, *options)


def test_disk_full_stops_cleanly_and_a_later_run_resumes(tmp_path, backend, monkeypatch):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 20)
    monkeypatch.setattr(outputs_module, "write_image", DiskFull(room=5))
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
    write = outputs_module.write_image

    def read_only_sub1(image, path, *options):
        if Path(path).parent.name == "sub1":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return write(image, path, *options)

    monkeypatch.setattr(outputs_module, "write_image", read_only_sub1)
    first = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    assert first.stopped is None and (first.ok, first.failed) == (6, 3)
    monkeypatch.undo()
    second = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    assert (second.ok, second.skipped, second.failed) == (3, 6, 0)
    assert len(list(dst.rglob("*.png"))) == len(paths)


def test_cli_disk_full_exit_code_and_message(tmp_path, weights, monkeypatch):
    src = tmp_path / "in"
    photos(src, 6)
    monkeypatch.setattr(outputs_module, "write_image", DiskFull(room=2))
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
    return [
        sys.executable,
        "-m",
        "fastdenoise",
        "run",
        str(src),
        str(dst),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--batch",
        "2",
        "--workers",
        "1",
        "--loader",
        "pil",
        *extra,
    ]


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
    assert f"took over the output lock of a run no longer running (pid {proc.pid} " in again.stderr
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
    src, dst = tmp_path / f"many{count}", tmp_path / f"many{count}_out"
    tiny_files(src, count)
    command = cli_command(src, dst, weights, "--batch", "64", "--loader", "auto")
    first, done = peak_rss_mib(command)
    assert done.returncode == 0, done.stderr[-2000:]
    second, done = peak_rss_mib(command)  # everything skipped: the manifest is read back, streamed
    assert done.returncode == 0 and f"0 denoised, {count} skipped" in done.stdout
    print(f"\n{count} files: peak RSS {first:.0f} MiB (run), {second:.0f} MiB (rerun, all skipped)")
    return first, second


def test_many_small_files_run_in_bounded_memory(tmp_path, weights):
    # Against a run of one file in the same session: listing and the manifest stream, so 200 files cost next to
    # nothing more (measured: +3 MiB); a run holding every file's row or image would grow with the count.
    alone, _ = run_many(tmp_path, weights, 1)
    first, second = run_many(tmp_path, weights, 200)
    assert first < alone + 48 and second < alone + 48


@pytest.mark.slow
def test_hundred_thousand_files_run_in_bounded_memory(tmp_path, weights):
    alone, _ = run_many(tmp_path, weights, 1)
    first, second = run_many(tmp_path, weights, 100_000)
    assert first < alone + 128 and second < alone + 128  # docs/running-folders.md: 261 MiB (200 files), 312 (100k)


class Recording:
    """A backend that notes the (H, W) of every batch it is given."""

    def __init__(self, backend) -> None:
        self.backend, self.device, self.shapes = backend, backend.device, []

    def __call__(self, x):
        self.shapes.append(tuple(x.shape[2:]))
        return self.backend(x)


def test_an_image_larger_than_the_tile_goes_through_tiles_and_matches_whole(tmp_path, backend):
    src = tmp_path / "in"
    src.mkdir()
    save_rgb(random_image(np.random.default_rng(0), 150, 230), src / "big.png")
    tiled, whole = Recording(backend), Recording(backend)
    assert denoise_folder(src, tmp_path / "tiled", tiled, RunConfig(tile=96, overlap=16, loader="pil")).ok == 1
    assert denoise_folder(src, tmp_path / "whole", whole, RunConfig(tile=256, overlap=16, loader="pil")).ok == 1
    assert whole.shapes == [(150, 230)] and len(tiled.shapes) > 1
    # never more than a tile (the last: < stride longer)
    assert all(h <= 96 + 3 and w <= 96 + 3 for h, w in tiled.shapes)
    a = load_rgb(tmp_path / "tiled" / "big.png").astype(int)
    b = load_rgb(tmp_path / "whole" / "big.png").astype(int)
    diff = np.abs(a - b)  # blended tiles ~ the whole image (as tests/test_tiling.py: max 2e-2, mean 1e-3 of the range)
    assert a.shape == b.shape == (150, 230, 3) and diff.max() <= 5 and diff.mean() < 0.3


@pytest.mark.slow
def test_6000x4000_photo_is_tiled(tmp_path, backend):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(random_image(np.random.default_rng(0), 4000, 6000)).save(src / "big.jpg", quality=90)
    recording = Recording(backend)
    summary = denoise_folder(src, tmp_path / "out", recording, RunConfig(tile=512, overlap=32))
    assert summary.ok == 1 and load_rgb(tmp_path / "out" / "big.png").shape == (4000, 6000, 3)
    assert len(recording.shapes) > 1 and all(h <= 515 and w <= 515 for h, w in recording.shapes)


# -- what a planted link, a small disk or a lying file broke before (issue 19) ---------------------------------------


def test_planted_manifest_links_are_never_written_through(tmp_path, backend):
    src, dst, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    photos(src, 3)
    elsewhere.mkdir()
    for name in ("part.txt", "manifest.txt"):
        (elsewhere / name).write_text("keep\n")
    dst.mkdir()
    os.symlink("../elsewhere/part.txt", dst / "manifest.part0.jsonl")
    with pytest.raises(ValueError, match="manifest.part0.jsonl: is a symlink"):
        denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    (dst / "manifest.part0.jsonl").unlink()
    os.symlink("../elsewhere/manifest.txt", dst / MANIFEST)  # the merged manifest replaces the link, not its target
    assert denoise_folder(src, dst, backend, RunConfig(loader="pil")).ok == 3
    assert [(elsewhere / n).read_text() for n in ("part.txt", "manifest.txt")] == ["keep\n", "keep\n"]
    assert not (dst / MANIFEST).is_symlink() and len(rows_of(dst / MANIFEST)) == 3


def test_a_planted_folder_link_creates_nothing_outside(tmp_path, backend):
    src, dst, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    rng = np.random.default_rng(1)
    for rel in ("a/deep/er/x.png", "b/y.png"):
        save_rgb(random_image(rng, 16, 24), src / rel)
    elsewhere.mkdir()
    dst.mkdir()
    os.symlink(elsewhere, dst / "a")  # in/a/deep/er/x.png would need elsewhere/deep/er made first
    summary = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    assert list(elsewhere.iterdir()) == []
    rows = {r["input"]: r for r in rows_of(dst / MANIFEST)}
    assert (
        rows["a/deep/er/x.png"]["status"] == "error" and "outside the output folder" in rows["a/deep/er/x.png"]["error"]
    )
    assert rows["b/y.png"]["status"] == "ok" and (summary.ok, summary.failed) == (1, 1)


def test_a_torn_last_row_is_cut_and_the_resume_duplicates_nothing(tmp_path, backend):
    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 12)
    stop = __import__("threading").Event()
    denoise_folder(
        src, dst, backend, RunConfig(batch=2, loader="pil"), lambda row: row["status"] == "ok" and stop.set(), stop=stop
    )
    # what a full disk left before: the parts of an unmerged run, the last row cut in the middle
    merged = (dst / MANIFEST).read_bytes()
    (dst / MANIFEST).unlink()
    header = json.dumps({"run_started_ns": 1, "rank": 0}).encode() + b"\n"
    (dst / "manifest.part0.jsonl").write_bytes(header + merged[: len(merged) - 25])
    done = len(merged.splitlines()) - 1  # whole rows left
    again = denoise_folder(src, dst, backend, RunConfig(batch=2, loader="pil"))
    rows = rows_of(dst / MANIFEST)
    assert sorted(r["input"] for r in rows) == sorted(p.relative_to(src).as_posix() for p in paths)  # one row each
    assert again.skipped == done and again.ok == len(paths) - done
    assert_outputs_valid(dst, rows)


class FullAfter:
    """Stands in for the manifest's os.write: the first `room` bytes go to disk, then ENOSPC, as on a full disk
    (the write that crosses the limit writes its first part: a short write, as the kernel does)."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, data[: self.room])
        self.room -= n
        return n


def test_disk_full_inside_a_manifest_row_leaves_whole_rows_and_resumes_exactly(tmp_path, backend, monkeypatch):
    import fastdenoise.pipeline.manifest as manifest_module

    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 16)
    monkeypatch.setattr(manifest_module, "write_some", FullAfter(room=1500))  # the header and a few rows fit
    with pytest.raises(OSError, match="No space left"):
        denoise_folder(src, dst, backend, RunConfig(batch=2, workers=1, loader="pil"))
    part = (dst / MANIFEST).read_bytes()  # merged: the merge writes through another path than the rows
    assert part.endswith(b"\n") and all(json.loads(line) for line in part.splitlines())  # no half row
    monkeypatch.undo()
    again = denoise_folder(src, dst, backend, RunConfig(batch=2, loader="pil"))
    rows = rows_of(dst / MANIFEST)
    assert sorted(r["input"] for r in rows) == sorted(p.relative_to(src).as_posix() for p in paths)
    assert again.skipped == part.count(b'"status": "ok"') >= 1
    assert_outputs_valid(dst, rows)


def mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


def test_a_really_full_small_disk_then_room_made_gives_one_row_per_input(tmp_path, weights):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "600k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        src, dst = tmp_path / "in", disk / "out"
        paths = photos(src, 120, size=(48, 48))  # ~7 KB a PNG output: the disk takes about 80
        command = cli_command(src, dst, weights, "--batch", "16")
        full = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert full.returncode == 3 and "No space left" in full.stderr, full.stderr
        for part in dst.glob("manifest*.jsonl"):  # whatever was left: whole rows only
            assert all(json.loads(line) for line in part.read_bytes().splitlines())
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        again = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        rows = rows_of(dst / MANIFEST)
        assert sorted(r["input"] for r in rows) == sorted(p.relative_to(src).as_posix() for p in paths)
        assert {r["status"] for r in rows} == {"ok", "skipped"}
        assert_outputs_valid(dst, rows)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_images_over_the_pixel_budget_get_an_error_row_undecoded(tmp_path, backend, monkeypatch):
    from image_files import flat_png

    import fastdenoise.images as images_module

    src, dst = tmp_path / "in", tmp_path / "out"
    photos(src, 2)
    flat_png(src / "huge.png", 1500, 1400, (90, 140, 200))
    decoded = []
    load = images_module.np.array
    monkeypatch.setattr(
        images_module.np,
        "array",
        lambda a, *args, **kw: (decoded.append(getattr(a, "size", None)), load(a, *args, **kw))[1],
    )
    summary = denoise_folder(src, dst, backend, RunConfig(loader="pil", max_pixels=2_000_000))
    monkeypatch.undo()
    rows = {r["input"]: r for r in rows_of(dst / MANIFEST)}
    assert (
        rows["huge.png"]["status"] == "error"
        and "1400x1500 = 2.1 MP is over the pixel budget of 2 MP" in rows["huge.png"]["error"]
    )
    assert (1400, 1500) not in decoded and summary.ok == 2
    assert denoise_folder(src, dst, backend, RunConfig(loader="pil", max_pixels=2_100_000)).ok == 1  # within budget


def test_a_big_flat_png_is_refused_in_bounded_memory(tmp_path, weights):
    from image_files import flat_png

    src, dst = tmp_path / "in", tmp_path / "out"
    flat_png(src / "big.png", 4000, 4000, (90, 140, 200))  # 53 KB on disk, 48 MB decoded, ~0.7 GB at run time
    peak, done = peak_rss_mib(cli_command(src, dst, weights, "--max-pixels", "8000000", "--tile", "512"))
    assert done.returncode == 1 and "over the pixel budget" in rows_of(dst / MANIFEST)[0]["error"]
    print(f"\n4000x4000 PNG refused: peak RSS {peak:.0f} MiB")
    assert peak < 600


@pytest.mark.slow
def test_12000x12000_flat_png_is_refused_by_the_default_budget(tmp_path, weights):
    from image_files import flat_png

    src, dst = tmp_path / "in", tmp_path / "out"
    flat_png(src / "bomb.png", 12000, 12000, (90, 140, 200))  # the 420 KB file: > 6 GB RSS before
    peak, done = peak_rss_mib(cli_command(src, dst, weights))
    assert done.returncode == 1 and "144.0 MP is over the pixel budget of 64 MP" in rows_of(dst / MANIFEST)[0]["error"]
    print(f"\n12000x12000 PNG refused: peak RSS {peak:.0f} MiB")
    assert peak < 600


def test_a_name_that_is_not_utf8_gets_its_row_and_the_manifest_stays_json(tmp_path, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    photos(src, 2)
    bad = os.fsencode(src / "sub0") + b"/bad\xff.png"
    with open(bad, "wb") as handle:
        Image.fromarray(random_image(np.random.default_rng(5), 16, 16)).save(handle, format="PNG")
    args = ["run", str(src), str(dst), "--weights", str(weights), "--device", "cpu", "--loader", "pil"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    lines = (dst / MANIFEST).read_bytes().decode("utf-8").splitlines()  # valid UTF-8 throughout
    rows = {row["input"]: row for row in map(json.loads, lines)}
    name = os.fsdecode(b"sub0/bad\xff.png")
    assert rows[name]["status"] == "ok" and load_rgb(dst / rows[name]["output"]).shape == (16, 16, 3)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 denoised, 3 skipped" in again.output


def test_a_name_of_250_bytes_is_written(tmp_path, backend):
    src, dst = tmp_path / "in", tmp_path / "out"
    name = "n" * 246 + ".png"  # 250 bytes: ".<name>.part" would be 256, over the 255-byte limit
    save_rgb(random_image(np.random.default_rng(2), 16, 16), src / name)
    summary = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    assert summary.ok == 1 and load_rgb(dst / name).shape == (16, 16, 3)
    assert_outputs_valid(dst, rows_of(dst / MANIFEST))


def test_an_input_that_vanishes_after_the_listing_gets_an_error_row(tmp_path, backend, monkeypatch):
    import contextlib

    src, dst = tmp_path / "in", tmp_path / "out"
    paths = photos(src, 6)
    victim = paths[3]
    scandir = os.scandir

    listings = []

    def list_then_delete(folder):
        entries = list(scandir(folder))
        if Path(folder) == victim.parent:
            listings.append(folder)
            if len(listings) == 2:  # the run's own listing (the first only checks that there are images)
                victim.unlink()
        return contextlib.nullcontext(entries)

    monkeypatch.setattr(os, "scandir", list_then_delete)
    summary = denoise_folder(src, dst, backend, RunConfig(loader="pil"))
    monkeypatch.undo()
    rows = {r["input"]: r for r in rows_of(dst / MANIFEST)}
    assert victim.relative_to(src).as_posix() in rows, rows
    row = rows[victim.relative_to(src).as_posix()]
    assert row["status"] == "error" and "No such file" in row["error"]
    assert (summary.ok, summary.failed, summary.ignored) == (5, 1, 0)


class NaNFor:
    """A backend that gives NaN (or Inf) for the images whose mean brightness is above a threshold."""

    def __init__(self, backend, threshold: float) -> None:
        self.backend, self.threshold, self.device = backend, threshold, backend.device

    def __call__(self, x):
        y = self.backend(x)
        return torch.where((x.flatten(1).mean(1) > self.threshold)[:, None, None, None], float("nan"), y)


def test_non_finite_outputs_are_errors_not_black_images(tmp_path, backend):
    src, dst = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(4)
    for k, level in enumerate((40, 200, 60, 220)):
        save_rgb(
            np.clip(random_image(rng, 16, 16).astype(int) // 4 + level - 32, 0, 255).astype(np.uint8), src / f"{k}.png"
        )
    summary = denoise_folder(src, dst, NaNFor(backend, 0.5), RunConfig(batch=4, loader="pil"))
    rows = {r["input"]: r for r in rows_of(dst / MANIFEST)}
    assert [rows[f"{k}.png"]["status"] for k in range(4)] == ["ok", "error", "ok", "error"], rows
    assert "NaN or Inf" in rows["1.png"]["error"] and not (dst / "1.png").exists()
    assert summary.failed == 2
    assert_outputs_valid(dst, rows.values())


def test_an_output_below_a_file_is_a_one_line_error_not_a_resume_hint(tmp_path, weights):
    src = tmp_path / "in"
    photos(src, 2)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile is a file, not a folder"):
        check_folders(src, tmp_path / "afile" / "out")
    result = CliRunner().invoke(
        app, ["run", str(src), str(tmp_path / "afile" / "out"), "--weights", str(weights), "--device", "cpu"]
    )
    assert result.exit_code == 2 and "again" not in result.output and "not a folder" in result.output


def test_an_output_it_may_not_write_says_to_fix_it_not_just_to_resume(tmp_path, make_image, weights):
    """OUTPUT's manifest a folder: one line, exit 3, advice that fits a refusal (a full disk keeps "resume")."""
    save_rgb(make_image(24, 32), tmp_path / "in" / "a.png")
    (tmp_path / "out" / MANIFEST).mkdir(parents=True)
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--weights",
            str(weights),
            "--backend",
            "eager",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'out'}: ")
    assert lines[0].endswith("; fix that, then the same command again resumes"), lines
