import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, random_image
from helpers import SMALL, randomize_bn

from fastdenoise.distributed import Shard, shard_from_env, take
from fastdenoise.images import iter_entries, load_rgb, save_rgb
from fastdenoise.models.checkpoint import save_weights
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.pipeline.manifest import MANIFEST
from fastdenoise.pipeline.summary import PROBLEMS_KEPT, RunSummary, combined


def test_shards_partition_the_listing_and_balance():
    items = list(range(23))
    shards = [list(take(items, Shard(r, 4))) for r in range(4)]
    assert sorted(x for s in shards for x in s) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shard_from_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert shard_from_env() == Shard(1, 3, 0)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="rank"):
        shard_from_env()


def test_torchrun_two_processes_split_the_files_and_rank0_merges(tmp_path, rng):
    src, dst = tmp_path / "in", tmp_path / "out"
    for i in range(11):
        save_rgb(random_image(rng, 24 + 4 * (i % 2), 32), src / f"d{i % 2}" / f"p{i:02d}.png")
    (src / "d0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (src / "readme.txt").write_text("not an image")
    weights = tmp_path / "small.safetensors"
    save_weights(randomize_bn(Denoiser(SMALL)), weights)
    run = [
        "run",
        str(src),
        str(dst),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--loader",
        "pil",
        "--no-strict",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "fastdenoise",
        *run,
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # rank 0 alone prints the closing lines, with the whole job's counts
    assert done.stdout.count("weights: ") == 1 and "rank 1/2" not in done.stdout, done.stdout
    counts = [line for line in done.stdout.splitlines() if " denoised, " in line]
    assert len(counts) == 1 and counts[0].startswith("11 denoised, 0 skipped, 1 failed, 1 not an image; "), counts
    assert "  failed: d0/broken.jpg: " in done.stdout and "  ignored: readme.txt: " in done.stdout
    rows = [json.loads(line) for line in (dst / MANIFEST).read_text().splitlines()]
    assert sorted(r["input"] for r in rows) == sorted(e.rel for e in iter_entries(src))  # each file once, all ranks
    assert {r["input"]: r["status"] for r in rows if r["status"] != "ok"} == {
        "d0/broken.jpg": "error",
        "readme.txt": "ignored",
    }
    assert not list(dst.glob("manifest.part*"))
    for row in rows:
        if row["status"] == "ok":
            assert load_rgb(dst / row["output"]).shape == (row["height"], row["width"], 3)
    # one process afterwards trusts what the two wrote
    again = subprocess.run(
        [sys.executable, "-m", "fastdenoise", *run], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0 and "0 denoised, 11 skipped, 1 failed, 1 not an image" in again.stdout, (
        again.stdout + again.stderr
    )


def test_the_jobs_summary_adds_up_the_ranks():
    rng = np.random.default_rng(28)
    parts = []
    for rank in range(int(rng.integers(2, 5))):
        part = RunSummary(
            ok=int(rng.integers(0, 50)),
            failed=int(rng.integers(0, 3)),
            megapixels=float(rng.random()),
            seconds=float(rng.random()),
        )
        part.stages["compute"] = float(rng.random())
        part.routes["blind"] = int(rng.integers(1, 9))
        part.problems["error"] = [(f"r{rank}/{i}.png", "broken") for i in range(int(rng.integers(0, 8)))]
        part.estimates = [5.0 + rank, 20.0 + rank, 100.0, part.routes["blind"]]  # low, high, sum, count
        parts.append(part)
    parts[-1].stopped, parts[-1].cause = "stop requested", "request"
    job = combined(parts)
    assert job.ok == sum(p.ok for p in parts) and job.failed == sum(p.failed for p in parts)
    assert job.megapixels == pytest.approx(sum(p.megapixels for p in parts))
    assert job.seconds == max(p.seconds for p in parts)  # the ranks ran side by side
    assert job.stages["compute"] == pytest.approx(sum(p.stages["compute"] for p in parts))
    assert job.routes["blind"] == sum(p.routes["blind"] for p in parts)
    assert job.problems["error"] == [x for p in parts for x in p.problems["error"]][:PROBLEMS_KEPT]
    assert job.estimates == [5.0, 20.0 + len(parts) - 1, 100.0 * len(parts), job.routes["blind"]]
    assert (job.stopped, job.cause) == ("stop requested", "request")
