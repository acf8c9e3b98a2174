"""Folder runs on Ray Data (`run --executor ray`) on a local Ray instance of 2 CPUs: the same outputs, byte for byte,
and the same manifest as the local runner; resume; a denoising actor killed mid-run loses nothing."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, random_image
from helpers import SMALL, randomize_bn
from image_files import bad_tree, snapshot
from typer.testing import CliRunner

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.cli import app
from fastdenoise.images import iter_entries, save_rgb
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.pipeline.cluster import (
    ITEM_COLUMNS,
    ClusterConfig,
    Denoise,
    decode,
    denoise_on_cluster,
    item_columns,
    write,
)
from fastdenoise.pipeline.lock import LockError, OutputLock, lock_name
from fastdenoise.pipeline.manifest import MANIFEST
from fastdenoise.pipeline.outputs import OutputTree, triage
from fastdenoise.pipeline.predictions import MASK_SUFFIX, PREDICTIONS, Predictor
from fastdenoise.pipeline.runner import RunConfig, denoise_folder

ray = pytest.importorskip("ray", reason="needs Ray Data: pip install 'fastdenoise[ray]'")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
FP32 = BackendConfig(device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module; workers import this checkout's fastdenoise and the test helpers."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, logging_level="WARNING", log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.fixture
def model() -> Denoiser:
    return randomize_bn(Denoiser(SMALL))


def rows_of(dst: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (dst / MANIFEST).read_text().splitlines()]
    assert len(rows) == len({r["input"] for r in rows}), "one row per input"
    return {r["input"]: r for r in rows}


def files_of(dst: Path) -> dict[str, bytes]:
    return {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file() and p.name != MANIFEST}


def without_times(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.endswith("mtime_ns")}


def photos(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        save_rgb(random_image(rng, *size), folder / f"sub{i % 3}" / f"p{i:03d}.png")


def test_ray_run_equals_the_local_run_and_a_rerun_skips_everything(local_ray, tmp_path, model):
    src, dst, local = tmp_path / "in", tmp_path / "ray", tmp_path / "local"
    bad_tree(src, tmp_path / "outside", np.random.default_rng(5))
    cfg = RunConfig(batch=1, tile=64, overlap=16)  # batch 1: each image exactly as alone, in both runs
    before = snapshot(tmp_path)
    summary = denoise_on_cluster(src, dst, model, FP32, cfg)
    assert snapshot(tmp_path, skip=dst) == before  # inputs untouched, nothing written outside OUTPUT
    expected = denoise_folder(src, local, make_backend(model, FP32), cfg)
    assert (summary.ok, summary.failed, summary.ignored, summary.skipped) == (
        expected.ok,
        expected.failed,
        expected.ignored,
        0,
    )
    assert summary.ok >= 10 and summary.failed >= 3 and summary.megapixels == pytest.approx(expected.megapixels)
    ours, theirs = rows_of(dst), rows_of(local)
    assert {k: without_times(r) for k, r in ours.items()} == {k: without_times(r) for k, r in theirs.items()}
    assert files_of(dst) == files_of(local)  # byte for byte, and no temporary file left

    again = denoise_on_cluster(src, dst, model, FP32, cfg)
    assert (again.ok, again.skipped, again.failed) == (0, summary.ok, summary.failed)
    assert files_of(dst) == files_of(local)


def test_ray_stages_hold_the_output_lock_keep_the_pixel_budget_and_refuse_nan_outputs(local_ray, tmp_path, model):
    """The local runner's reliability rules in the Ray stages (called here in this process, as the pipeline calls
    them), with the same rows as the local runner."""
    src, dst, local = tmp_path / "in", tmp_path / "ray", tmp_path / "local"
    photos(src, 3, (24, 32))
    save_rgb(random_image(np.random.default_rng(3), 40, 56), src / "big.png")
    cfg = RunConfig(batch=1, max_pixels=24 * 32)
    dst.mkdir()
    held = OutputLock(dst)  # another live run on OUTPUT
    with pytest.raises(LockError, match="another run is writing here"):
        denoise_on_cluster(src, dst, model, FP32, cfg)
    held.release()
    assert not (dst / MANIFEST).exists() and not (dst / lock_name(0)).exists()

    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # broken weights: every output NaN
    tree = OutputTree(dst, cfg.quality)
    items = [triage(e, tree, ".png", False, {}, False) for e in iter_entries(src)]
    batch = {k: np.array([c[k] for c in item_columns(items)], dtype=object) for k in ITEM_COLUMNS}
    decoded = decode(batch, cfg.loader, cfg.workers, cfg.max_pixels)
    rows = [json.loads(r) for r in write(Denoise(model, FP32, cfg, None)(decoded), str(dst), cfg.quality, None)["row"]]
    assert files_of(dst) == {}, "nothing written for a NaN output"
    denoise_folder(src, local, make_backend(model, FP32), cfg)
    assert {r["input"]: r for r in rows} == rows_of(local)
    assert "over the pixel budget" in rows_of(local)["big.png"]["error"]
    assert all("NaN or Inf" in rows_of(local)[f"sub{i}/p00{i}.png"]["error"] for i in range(3))


@pytest.mark.slow
def test_killing_the_denoising_actor_mid_run_loses_nothing(local_ray, tmp_path, model):
    """SIGKILL the actor while it denoises a batch: Ray restarts it and resends the batch; every input ends with one
    valid output and one row, the same bytes as the local runner's."""
    src, dst = tmp_path / "in", tmp_path / "ray"
    photos(src, 24, (64, 96))
    cfg = RunConfig(batch=1)  # each image as alone: the same bytes as the local runner's
    killed: list[tuple[int, int]] = []  # (pid, rows in the manifest part when killed)

    def busy_actor() -> int | None:
        """The denoising actor's pid while it runs a batch (its process title names the method it runs)."""
        import psutil

        try:
            children = psutil.Process().children(recursive=True)  # only the processes this test started
        except psutil.Error:  # one gone while listing
            return None
        for proc in children:
            try:
                title = " ".join(proc.cmdline()).strip()
            except psutil.Error:
                continue
            if "MapBatches(Denoise)" in title and title.endswith(".submit"):
                return proc.pid
        return None

    def kill_the_actor_mid_batch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            pid = busy_actor()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                part = dst / "manifest.part0.jsonl"
                killed.append((pid, len(part.read_text().splitlines()) - 1 if part.exists() else 0))
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_actor_mid_batch, daemon=True)
    killer.start()
    summary = denoise_on_cluster(src, dst, model, FP32, cfg, cluster=ClusterConfig(actors=1))
    killer.join(timeout=5)
    assert killed and killed[0][1] < 24, f"the actor was not killed mid-run: {killed}"
    assert (summary.ok, summary.failed) == (24, 0)
    rows = rows_of(dst)
    assert len(rows) == 24 and {r["status"] for r in rows.values()} == {"ok"}
    denoise_folder(src, tmp_path / "local", make_backend(model, FP32), cfg)
    assert files_of(dst) == files_of(tmp_path / "local")


@pytest.mark.slow
def test_changed_inputs_are_redone_and_a_head_runs_on_the_actors(local_ray, tmp_path, model):
    from test_run_task import TinyClassifier, TinySegmenter  # importable by the workers too

    src, dst = tmp_path / "in", tmp_path / "ray"
    photos(src, 6, (40, 56))
    segment = Predictor(TinySegmenter(), "segment", name="tiny")
    cfg = RunConfig(batch=1)
    first = denoise_on_cluster(src, dst, model, FP32, cfg, predictor=segment)
    assert (first.ok, first.masks) == (6, 6)
    local = tmp_path / "local"
    denoise_folder(src, local, make_backend(model, FP32), cfg, predictor=segment)
    assert files_of(dst) == files_of(local)  # outputs and masks, byte for byte
    save_rgb(random_image(np.random.default_rng(9), 40, 56), src / "sub1" / "p001.png")  # changed input
    (dst / "sub2" / f"p002{MASK_SUFFIX}").unlink()  # a lost mask
    second = denoise_on_cluster(src, dst, model, FP32, cfg, predictor=segment)
    assert (second.ok, second.skipped, second.masks) == (2, 4, 6)
    classify = Predictor(TinyClassifier(), "classify", top_k=2, name="tiny")
    third = denoise_on_cluster(src, dst, model, FP32, RunConfig(batch=2), predictor=classify)
    assert third.ok == 6 and third.predictions == str(dst / PREDICTIONS)  # another head: everything redone
    rows = rows_of(dst)
    assert all(len(r["top"]) == 2 and r["head"] == classify.key for r in rows.values())


@pytest.mark.slow
def test_cli_executor_ray_runs_resumes_and_reports_a_pipeline_failure(local_ray, tmp_path, weights):
    src, dst = tmp_path / "in", tmp_path / "out"
    photos(src, 5, (24, 32))
    (src / "broken.png").write_bytes(b"not an image")
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
        "--executor",
        "ray",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # strict: the broken file fails
    assert "5 denoised, 0 skipped, 1 failed" in result.output
    assert "broken.png" in rows_of(dst)["broken.png"]["error"]
    again = CliRunner().invoke(app, [*args, "--no-strict"])
    assert again.exit_code == 0 and "0 denoised, 5 skipped, 1 failed" in again.output
    # onnxruntime with an ONNX file that is not one: every actor fails to build; one line, exit 4, manifest kept
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a model")
    failed = CliRunner().invoke(app, [*args, "--overwrite", "--backend", "onnxruntime", "--engine", str(bad)])
    assert failed.exit_code == 4, failed.output
    # Ray prints its own notes (a task failed, the worker's traceback) as it retries; ours is the one error line
    (line,) = [line for line in failed.output.splitlines() if line.startswith("error:")]
    assert "the Ray pipeline failed" in line and "bad.onnx: not usable by onnxruntime" in line
    assert len(rows_of(dst)) == 6


def test_address_needs_the_ray_executor(tmp_path, weights, make_image):
    save_rgb(make_image(20, 28), tmp_path / "in" / "a.png")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--address", "auto"])
    assert result.exit_code == 2 and "--address is for --executor ray" in result.output
    assert not (tmp_path / "out").exists()


def test_ensemble_is_refused_on_the_ray_executor(tmp_path, weights, make_image):
    save_rgb(make_image(20, 28), tmp_path / "in" / "a.png")
    args = ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(weights), "--executor", "ray"]
    result = CliRunner().invoke(app, [*args, "--ensemble"])
    assert result.exit_code == 2 and "--ensemble is not available with --executor ray" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_actors_get_trust_engine_in_their_backend_config(weights):
    from fastdenoise.cli import backend_options

    for trust in (False, True):
        _, cfg = backend_options(weights, "eager", "cpu", "fp32", trust_engine=trust, build=False)
        assert isinstance(cfg, BackendConfig) and cfg.trust_engine is trust


def test_cluster_config_checks_the_actor_count():
    with pytest.raises(ValueError, match="actors must be >= 1"):
        ClusterConfig(actors=0)
