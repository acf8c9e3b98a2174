import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, random_image
from helpers import SMALL, randomize_bn

from fastdenoise.checkpoint import save_weights
from fastdenoise.distributed import Shard, shard_from_env, take
from fastdenoise.images import iter_entries, load_rgb, save_rgb
from fastdenoise.manifest import MANIFEST
from fastdenoise.model import Denoiser


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
    assert "rank 0/2" in done.stdout and "rank 1/2" in done.stdout
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
