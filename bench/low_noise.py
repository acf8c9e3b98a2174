"""Clean and lightly noisy photos through `fastdenoise run --task` as a user types it: what the default does to them,
beside `--model blind` and the task-aware model forced (`--model task-aware`).

Each photo gets Gaussian noise at each level (seed 0, image i: [0, i]; level 0 leaves it clean), is stored as an 8-bit
PNG, and the folder goes through `fastdenoise run NOISY OUT --task T [extra]` once per variant. Every output is scored
against the clean photo and against its own input (a denoiser that keeps a clean photo scores high on both); per
variant and level: mean PSNR with a 95% bootstrap interval, and the weights the rows name.

    OMP_NUM_THREADS=1 taskset -c 0 python bench/low_noise.py ../shared/data/camvid/val --task segment --limit 12 \
        --out runs/low-noise-camvid
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from fastdenoise.images import list_images, load_rgb, save_rgb
from fastdenoise.metrics import psnr
from fastdenoise.noise import add_noise, to_uint8
from fastdenoise.stats import bootstrap_interval

VARIANTS = {"default": [], "blind": ["--model", "blind"], "task-aware": ["--model", "task-aware"]}


def noisy_folder(photos: list[Path], sigma: float, folder: Path) -> list[np.ndarray]:
    """The photos with noise at `sigma` as 8-bit PNGs in `folder` (named by position); returns the clean images."""
    clean = [load_rgb(p) for p in photos]
    for i, image in enumerate(clean):
        save_rgb(to_uint8(add_noise(image, sigma, 0, i)) if sigma else image, folder / f"{i:04d}.png")
    return clean


def scored(out: Path, noisy: Path, clean: list[np.ndarray]) -> dict:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["input"])
    if len(ok) != len(clean):
        raise SystemExit(f"error: {out}: {len(ok)} of {len(clean)} images done")
    vs_clean = np.array([psnr(load_rgb(out / r["output"]), clean[int(Path(r["input"]).stem)]) for r in ok])
    vs_input = np.array([psnr(load_rgb(out / r["output"]), load_rgb(noisy / r["input"])) for r in ok])
    lo, hi = bootstrap_interval(vs_clean[:, None], lambda sums: sums[:, 0] / len(ok))
    return {
        "psnr_clean": float(vs_clean.mean()),
        "ci": [lo, hi],
        "psnr_input": float(vs_input.mean()),
        "weights": dict(Counter(r.get("weights", "(one model)") for r in ok)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="folder of clean photos")
    parser.add_argument("--task", choices=["classify", "segment"], required=True)
    parser.add_argument("--sigma", default="0,5,10,15", help="noise levels, comma-separated (0: clean)")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backend", default="openvino")
    args = parser.parse_args()
    photos = list_images(args.data)[: args.limit]
    results = []
    print("| sigma | variant | PSNR vs clean [95%] | PSNR vs its input | weights |\n|---|---|---|---|---|")
    for sigma in (float(s) for s in args.sigma.split(",")):
        noisy = args.out / f"noisy-{sigma:g}"
        clean = noisy_folder(photos, sigma, noisy)
        for name, extra in VARIANTS.items():
            out = args.out / f"out-{sigma:g}-{name}"
            command = [
                "fastdenoise",
                "run",
                str(noisy),
                str(out),
                "--task",
                args.task,
                "--backend",
                args.backend,
                "--precision",
                "fp32",
                *extra,
            ]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            r = {"sigma": sigma, "variant": name, "command": " ".join(command), **scored(out, noisy, clean)}
            results.append(r)
            print(
                f"| {sigma:g} | {name} | {r['psnr_clean']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] | "
                f"{r['psnr_input']:.2f} | {r['weights']} |",
                flush=True,
            )
    meta = {"data": str(args.data), "images": len(photos), "task": args.task, "python": sys.version.split()[0]}
    (args.out / "low_noise.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
