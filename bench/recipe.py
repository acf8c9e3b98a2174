"""Training recipe arms at an equal budget of pixels seen: which loss, patch, LR and weight average to train with.

Every arm fine-tunes the same starting weights (default: the bundled blind model) on the same photos with the same
seed for the same number of training pixels, then is scored per image on held-apart validation images (and on every
image of each --score folder) at the noise levels given. Differences are paired per image against the first arm (the
base) with a 95% bootstrap interval, so an arm only "wins" when the interval excludes zero. Resumable: an arm whose
result file exists is not trained again. Two sets of arms: `recipe` (loss, patch, LR, weight average) and `data`
(issue 25: colour augmentation, down-scaling, photos beyond CBSD432 from bench/extra_photos.py).

Usage (repo root; one core):
    OMP_NUM_THREADS=1 python bench/recipe.py ../shared/data/cbsd432 ../shared/data/cbsd68 --out runs/recipe \
        --budget-mpx 40 --doc docs/results/recipe
    OMP_NUM_THREADS=1 python bench/recipe.py ../shared/data/cbsd432 runs/unlike24 --set data --out runs/data-arms \
        --score ../shared/data/kodak24 --sigmas 15,25,50 --budget-mpx 20 --backend openvino --doc docs/results/data-arms
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.evaluation.evaluate import backend_denoiser, evaluate
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.training.fit import TrainConfig, train_denoiser

# name -> overrides of the base recipe; pixels per step stay near 74k so the arms differ in one thing each.
ARMS: dict[str, dict] = {
    "base (mse, 96px x8, lr 2e-4, ema)": {},
    "l1": {"loss": "l1"},
    "charbonnier": {"loss": "charbonnier"},
    "patch 48 (x32)": {"patch": 48, "batch": 32},
    "patch 128 (x5)": {"patch": 128, "batch": 5},
    "lr 5e-4": {"lr": 5e-4},
    "lr 1e-4": {"lr": 1e-4},
    "no ema": {"ema": 0.0},
    "sigma 0-75": {"sigma": (0.0, 75.0)},
}
BASE = {"sigma": (5.0, 60.0), "patch": 96, "batch": 8, "lr": 2e-4, "schedule": "constant", "ema": 0.999, "warmup": 50}

# issue 25: training data beyond CBSD432, on the current recipe (48 px x 32, LR 1e-4, fp32); EXTRA is written by
# bench/extra_photos.py
EXTRA = "runs/extra-photos"
DATA_BASE = {**BASE, "patch": 48, "batch": 32, "lr": 1e-4, "amp": "off"}
DATA_ARMS: dict[str, dict] = {
    "base (48px x32, lr 1e-4, ema, CBSD432)": {},
    "colour (half the patches: channel order, saturation x0.5-2, hue)": {"colour": 0.5},
    "extra photos (+367 CamVid train, +226 ImageNet train half less unlike24; 2x down)": {"extra": (EXTRA,)},
    "downscale (patches from 1-2x squares, antialiased)": {"downscale": 2.0},
    "all (colour + downscale + extra photos)": {"colour": 0.5, "downscale": 2.0, "extra": (EXTRA,)},
    "base seed 1 (the base, other patches and noise: a difference of chance alone)": {"seed": 1},
}
SETS = {"recipe": (BASE, ARMS), "data": (DATA_BASE, DATA_ARMS)}


def paired_interval(diffs: np.ndarray, draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of per-image differences."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (draws, len(diffs)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def run_arm(name: str, settings: dict, args: argparse.Namespace) -> dict:
    slug = "".join(c if c.isalnum() else "-" for c in name.split(" (")[0]).strip("-")
    out = args.out / slug
    result_path = out / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    steps = math.ceil(args.budget_mpx * 1e6 / (settings["batch"] * settings["patch"] ** 2))
    cfg = TrainConfig(
        data=str(args.data),
        out=str(out),
        val=str(args.val),
        val_images=8,
        val_every=max(1, steps // 4),
        val_sigma=35.0,
        steps=steps,
        ckpt_every=max(1, steps // 4),
        log_every=10,
        **{"seed": args.seed, **settings},  # an arm may set its own seed
    )
    start = time.perf_counter()
    train_denoiser(cfg, progress=False, init=str(args.init), resume=True)  # an arm cut short goes on where it was
    seconds = time.perf_counter() - start
    model = load_denoiser(out / "model.safetensors")
    backend = make_backend(model, BackendConfig(kind=args.backend, device="cpu", precision="fp32"))
    rows = []
    for folder, limit in ((args.val, args.images), *((f, None) for f in args.score)):
        scores = evaluate(
            backend_denoiser(backend), folder, args.sigmas, seed=0, method=name, with_ssim=False, limit=limit
        )
        rows += [{**row, "set": folder.name} for row in scores.rows]
    curve = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    result = {
        "arm": name,
        "config": asdict(cfg),
        "steps": steps,
        "pixels": steps * settings["batch"] * settings["patch"] ** 2,
        "train_seconds": seconds,
        "rows": rows,
        "curve": [{"gpx": r.get("gpx_seen"), "psnr": r["val_psnr"]} for r in curve if "val_psnr" in r],
    }
    result_path.write_text(json.dumps(result, indent=1))
    return result


def report(results: list[dict], args: argparse.Namespace) -> str:
    """Per scored set, a table: each arm's mean dB per sigma, its paired difference to the base with a 95% interval,
    and the images it is better on."""
    base, tables = results[0], []
    for folder in (args.val, *args.score):
        header = " | ".join(f"sigma {s:g}: dB, vs base [95% CI], better on" for s in args.sigmas)
        lines = [f"{folder.name}:", "", f"| arm | {header} | train s |", "|---" * (len(args.sigmas) + 2) + "|"]
        for r in results:
            cells = []
            for s in args.sigmas:
                mine, theirs = (per_image(x["rows"], folder.name, s, args.val.name) for x in (r, base))
                diffs = np.array([mine[k] - theirs[k] for k in sorted(theirs)])
                lo, hi = paired_interval(diffs)
                better = f"{int((diffs > 0).sum())}/{len(diffs)}"
                delta = "" if r is base else f", {diffs.mean():+.3f} [{lo:+.3f}, {hi:+.3f}], {better}"
                cells.append(f"{np.mean(list(mine.values())):.3f}{delta}")
            lines.append(f"| {r['arm']} | " + " | ".join(cells) + f" | {r['train_seconds']:.0f} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def per_image(rows: list[dict], folder: str, sigma: float, val: str) -> dict[str, float]:
    """{image: psnr} of one scored folder at one sigma (rows of earlier runs name no set: the validation folder's)."""
    return {r["image"]: r["psnr"] for r in rows if r.get("set", val) == folder and r["sigma"] == sigma}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        ax.plot([p["gpx"] * 1e3 for p in r["curve"]], [p["psnr"] for p in r["curve"]], marker="o", label=r["arm"])
    ax.set_xlabel("training pixels seen in the arm (Mpx)")
    ax.set_ylabel("validation PSNR, 8 images, sigma 35 (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="training photos (e.g. CBSD432)")
    parser.add_argument("val", type=Path, help="validation photos (e.g. CBSD68); never a test set")
    parser.add_argument("--out", type=Path, default=Path("runs/recipe"))
    parser.add_argument(
        "--init", type=Path, default=Path(__file__).parents[1] / "fastdenoise/weights/blind.safetensors"
    )
    parser.add_argument("--budget-mpx", type=float, default=40.0, help="training pixels per arm, millions")
    parser.add_argument("--images", type=int, default=24, help="validation images scored per arm")
    parser.add_argument("--sigmas", type=lambda t: [float(s) for s in t.split(",")], default=[25.0, 50.0])
    parser.add_argument("--score", type=Path, action="append", default=[], help="a folder also scored, every image")
    parser.add_argument("--backend", default="eager", help="scores in fp32 on this backend (eager, openvino)")
    parser.add_argument("--set", choices=SETS, default="recipe", help="which arms: the recipe's or the data's")
    parser.add_argument("--arms", default=None, help="comma-separated subset of arm names (the first is the base)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--doc", type=Path, default=None, help="folder for recipe.md / recipe.json / recipe.png")
    args = parser.parse_args()
    base, arms = SETS[args.set]
    names = [n for n in arms if args.arms is None or n.split(" (")[0] in args.arms.split(",")]
    results = []
    for name in names:
        print(f"arm {name!r} ...", flush=True)
        results.append(run_arm(name, {**base, **arms[name]}, args))
        table = report(results, args)
        print(table, flush=True)
        if args.doc:
            args.doc.mkdir(parents=True, exist_ok=True)
            meta = {
                "budget_mpx": args.budget_mpx,
                "init": str(args.init),
                "val": str(args.val),
                "images": args.images,
                "score": [str(f) for f in args.score],
                "sigmas": args.sigmas,
                "backend": f"{args.backend} fp32",
                "torch": torch.__version__,
            }
            (args.doc / "recipe.json").write_text(json.dumps({"meta": meta, "arms": results}, indent=1))
            (args.doc / "recipe.md").write_text(table + "\n")
            plot(results, args.doc / "recipe.png")


if __name__ == "__main__":
    main()
