"""Data-parallel training (fit under a process group / torchrun) on CPU with gloo."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import ddp_worker
import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT, random_image

from fastdenoise.images import save_rgb
from fastdenoise.models.checkpoint import load_checkpoint
from fastdenoise.training.fit import fit


def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    steps, world = 4, 2
    ddp, joined = tmp_path / "ddp", tmp_path / "one"
    mp.start_processes(
        ddp_worker.train_rank, args=(world, str(tmp_path / "init"), str(ddp), steps), nprocs=world, start_method="spawn"
    )
    ddp_worker.train_joined(joined, world, steps)
    a, b = load_checkpoint(ddp / "last.pt"), load_checkpoint(joined / "last.pt")
    assert a["step"] == b["step"] == steps and a["world_size"] == world
    start = ddp_worker.model().state_dict()
    moved = 0
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=0, atol=1e-10, msg=key)
        moved += not torch.equal(value, start[key])
    assert moved > 10  # the weights did train: the equality is not that of two untouched models
    # each rank drew from its own stream, both kept for a resume
    assert len(a["ranks"]) == world and not torch.equal(
        a["ranks"][0]["batches"]["generator"], a["ranks"][1]["batches"]["generator"]
    )
    # rank 1 wrote nothing: one config, one log row per step
    assert sorted(p.name for p in ddp.iterdir()) == ["config.json", "last.pt", "log.jsonl"]
    rows = [json.loads(line) for line in (ddp / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1)) and {r["world_size"] for r in rows} == {world}
    assert json.loads((ddp / "config.json").read_text())["world_size"] == world
    assert rows[-1]["gpx_seen"] == pytest.approx(steps * ddp_worker.BATCH * ddp_worker.PATCH**2 / 1e9)  # global pixels

    # resumed by one process: rank 0's stream goes on, the schedule and the pixel count too
    more = steps + 2
    sampler = ddp_worker.rank_batches(ddp_worker.Shard(0, 1))
    fit(ddp_worker.model(), ddp_worker.double_mse, sampler, ddp_worker.config(ddp, more), progress=False, resume=True)
    resumed = load_checkpoint(ddp / "last.pt")
    assert resumed["step"] == more and "ranks" not in resumed and resumed["world_size"] == 1
    assert json.loads((ddp / "config.json").read_text())["world_size"] == 1
    assert resumed["pixels"] == more * ddp_worker.BATCH * ddp_worker.PATCH**2


def test_sync_bn_is_refused_on_the_cpu(tmp_path):
    cfg = replace(ddp_worker.config(tmp_path / "run", 2), sync_bn=True)
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        fit(ddp_worker.model(), ddp_worker.double_mse, ddp_worker.rank_batches(ddp_worker.Shard()), cfg, progress=False)
    assert not (tmp_path / "run").exists()


def children(pid: int) -> list[int]:
    text = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children"))
    return [int(c) for c in text.split()]


def read_rows(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow  # two torchrun launches of two processes each: about a minute on one core
def test_torchrun_train_stops_on_sigterm_and_resumes(tmp_path, rng):
    data, out = tmp_path / "clean", tmp_path / "run"
    for i in range(3):
        save_rgb(random_image(rng, 32 + 4 * i, 40), data / f"img{i}.png")
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "fastdenoise",
    ]
    train = [
        "train",
        str(data),
        "--out",
        str(out),
        "--patch",
        "16",
        "--batch",
        "4",
        "--ckpt-every",
        "2",
        "--device",
        "cpu",
        "--amp",
        "off",
        "--compile",
        "off",
        "--schedule",
        "constant",
    ]
    first = subprocess.Popen(
        [*torchrun, *train, "--steps", "100000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not read_rows(out / "log.jsonl") and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.5)
        ranks = children(first.pid)
        assert len(ranks) == 2, first.poll()
        os.kill(ranks[-1], signal.SIGTERM)  # one rank only: the other learns of it in the next step's all-reduce
        output = first.communicate(timeout=120)[0]
    finally:
        first.kill()
    assert first.returncode != 0 and "stopped at step " in output, output
    stopped = load_checkpoint(out / "last.pt")
    assert 0 < stopped["step"] < 100000 and len(stopped["ranks"]) == 2
    assert f"stopped at step {stopped['step']}: " in output  # what rank 0 wrote is where it stopped

    goal = stopped["step"] + 3
    again = subprocess.run(
        [*torchrun, *train, "--resume", "--steps", str(goal)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert load_checkpoint(out / "last.pt")["step"] == goal
    steps = [r["step"] for r in read_rows(out / "log.jsonl") if "loss" in r]
    assert steps[-1] == goal and steps == sorted(set(steps))  # each logged step once: by rank 0 alone
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert (out / "model.safetensors").is_file()
