r"""Training throughput of the real loop (`fit`) per mode: plain fp32 against channels_last, bf16 autocast and
torch.compile, as Mpx/s and steps/s read from fit's own log, modes interleaved over rounds (ratios in one run).

Usage (repo root; pin to one core so the number is the per-core rate a campaign gets):
    OMP_NUM_THREADS=1 taskset -c 1 python bench/train_throughput.py --rounds 2 \
        --out bench/results/<machine>/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fastdenoise.devices import cpu_has_bf16
from fastdenoise.machine import machine_facts
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.training.fit import TrainConfig, fit, mse_loss
from fastdenoise.training.samplers import PatchSampler

MODES = {  # name -> (amp, channels_last, compile)
    "fp32 (plain loop)": ("off", False, "off"),
    "fp32 channels_last": ("off", True, "off"),
    "bf16 autocast": ("bf16", False, "off"),
    "bf16 channels_last (campaign)": ("bf16", True, "off"),
    "bf16 channels_last compiled": ("bf16", True, "on"),
}


def measure(mode: str, images: list[np.ndarray], args: argparse.Namespace) -> dict:
    amp, channels_last, compile = MODES[mode]
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            data="in-memory",
            out=out,
            patch=args.patch,
            batch=args.batch,
            steps=args.warmup + args.steps,
            log_every=args.warmup,
            amp=amp,
            channels_last=channels_last,
            compile=compile,
            device="cpu",
            schedule="constant",
            lr=1e-4,
        )
        torch.manual_seed(0)
        fit(Denoiser(), mse_loss, PatchSampler(images, args.patch, args.batch, (5.0, 60.0), 0), cfg, progress=False)
        rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    timed = rows[1:]  # the first window holds warm-up (and compilation)
    return {
        "mode": mode,
        "mpx_per_s": statistics.median(r["mpx_per_s"] for r in timed),
        "steps_per_s": statistics.median(r["steps_per_s"] for r in timed),
        "config": asdict(cfg),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--modes", default=None, help="comma-separated subset of mode names")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (321, 481, 3), dtype=np.uint8) for _ in range(8)]
    modes = [m for m in MODES if args.modes is None or m in args.modes.split(",")]
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            runs[mode].append(measure(mode, images, args))
            print(f"round {r} {mode}: {runs[mode][-1]['mpx_per_s']:.4f} Mpx/s", flush=True)
    base = statistics.median(x["mpx_per_s"] for x in runs[modes[0]])
    summary = []
    for mode in modes:
        mpx = statistics.median(x["mpx_per_s"] for x in runs[mode])
        summary.append(
            {"mode": mode, "mpx_per_s": mpx, "vs_first": mpx / base, "rounds": [x["mpx_per_s"] for x in runs[mode]]}
        )
    print("| mode | Mpx/s (median) | vs " + modes[0] + " |\n|---|---|---|")
    for s in summary:
        print(f"| {s['mode']} | {s['mpx_per_s']:.4f} | {s['vs_first']:.2f}x |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "cpu": platform.processor() or platform.machine(),
            "bf16_native": cpu_has_bf16(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "patch": args.patch,
            "batch": args.batch,
            "steps": args.steps,
        }
        result = {"meta": meta, "machine": machine_facts(), "command": " ".join(sys.argv), "summary": summary}
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
