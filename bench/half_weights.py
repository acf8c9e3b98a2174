"""What storing the bundled weights in fp16 costs: each fp32 bundled model's PSNR with its weights as stored and rounded
to fp16 (loaded back to fp32, as the loader does), paired per image on the first Kodak24 images, noise seed 0, at the
model's own sigma (per-sigma models) or 25 and 50 (the others), eager fp32 on the CPU. A model holds where the mean
difference is within HOLD_DB at each of its sigmas; --convert rewrites those in fp16 in place, cards saying so.

    OMP_NUM_THREADS=1 nice -n 15 python bench/half_weights.py             # table, results/<machine>/half_weights.json
    OMP_NUM_THREADS=1 nice -n 15 python bench/half_weights.py --convert   # ... then convert the models that hold

Files already in fp16 (jpeg) are left out. Once converted, a model has no fp32 file here to compare with: measure
again from an older checkout's weights with --weights-folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.datasets import require_data_root
from fastdenoise.evaluation.accuracy import data_images
from fastdenoise.evaluation.evaluate import backend_denoiser, evaluate
from fastdenoise.files import atomic_write
from fastdenoise.machine import machine_facts, machine_name
from fastdenoise.models.checkpoint import bundled_weights, load_denoiser, save_weights
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.models.zoo import PER_SIGMA, bundled_models

HOLD_DB = 0.002  # issue 28: half precision where PSNR moves by less than this
TASK_SIGMAS = (25.0, 50.0)  # blind and the task models: the paper's middle and high levels


def stored_dtypes(path: Path) -> set[torch.dtype]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {handle.get_tensor(k).dtype for k in handle.keys()}


def own_sigmas(name: str) -> tuple[float, ...]:
    """The noise levels a model is measured at: a per-sigma model's own, else TASK_SIGMAS."""
    found = PER_SIGMA.match(name)
    return (float(found.group(1)),) if found else TASK_SIGMAS


def halved(path: Path) -> Denoiser:
    """The model of `path` written in fp16 and read back as the loader reads it (fp32 parameters)."""
    with tempfile.TemporaryDirectory() as scratch:
        half = Path(scratch) / "half.safetensors"
        save_weights(load_denoiser(path), half, half=True)
        return load_denoiser(half)


def psnr_rows(model: Denoiser, data: Path, sigma: float, limit: int, seed: int) -> dict[str, float]:
    """{image: PSNR} of the model on data[:limit] (eager fp32, CPU)."""
    backend = make_backend(model, BackendConfig(kind="eager", device="cpu", precision="fp32"))
    result = evaluate(backend_denoiser(backend), data, [sigma], seed, with_ssim=False, limit=limit)
    return {row["image"]: row["psnr"] for row in result.rows}


def compare(name: str, path: Path, data: Path, limit: int, seed: int) -> list[dict]:
    """Per sigma: mean PSNR of the fp32 and the fp16-rounded weights, mean and largest per-image difference."""
    rows = []
    full, half = load_denoiser(path), halved(path)
    for sigma in own_sigmas(name):
        a, b = psnr_rows(full, data, sigma, limit, seed), psnr_rows(half, data, sigma, limit, seed)
        diff = np.array([b[image] - a[image] for image in a])
        rows.append(
            {
                "model": name,
                "sigma": sigma,
                "images": len(a),
                "psnr_fp32": float(np.mean(list(a.values()))),
                "psnr_fp16": float(np.mean(list(b.values()))),
                "mean_diff": float(diff.mean()),
                "max_abs_diff": float(np.abs(diff).max()),
                "per_image": {image: {"fp32": a[image], "fp16": b[image]} for image in a},
            }
        )
        mean, worst = diff.mean(), np.abs(diff).max()
        print(f"{name} sigma {sigma:g}: fp16 - fp32 {mean:+.5f} dB mean, {worst:.5f} max", flush=True)
    return rows


def convert(path: Path, rows: list[dict]) -> None:
    """Rewrite the weights file in fp16 with the metadata it carries (spec and format as they are; the card adds the
    precision and what the check measured), and the JSON card beside it."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        state = {k: handle.get_tensor(k).to(torch.float16).contiguous() for k in handle.keys()}
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise ValueError(f"{path}: these weights overflow fp16")
    check = {
        f"{r['sigma']:g}": {"mean": round(r["mean_diff"], 5), "max_abs": round(r["max_abs_diff"], 5)} for r in rows
    }
    card = json.loads(meta.get("card", "{}")) | {
        "precision": "fp16",
        "fp16_psnr_change_db": {"check": f"bench/half_weights.py, Kodak24 first {rows[0]['images']}, seed 0"} | check,
    }
    blob = save(state, metadata=meta | {"card": json.dumps(card)})
    atomic_write(path, lambda handle: handle.write(blob))
    path.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")


def print_table(rows: list[dict], holds: dict[str, bool]) -> None:
    print(f"\n{'model':<24}{'sigma':>6}{'fp32 dB':>10}{'fp16 dB':>10}{'mean diff':>11}{'max |diff|':>11}  holds")
    for r in rows:
        print(
            f"{r['model']:<24}{r['sigma']:>6g}{r['psnr_fp32']:>10.4f}{r['psnr_fp16']:>10.4f}"
            f"{r['mean_diff']:>+11.5f}{r['max_abs_diff']:>11.5f}  {'yes' if holds[r['model']] else 'no'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=None, help="shared data folder (default: $FASTDENOISE_DATA or ../shared/data)"
    )
    parser.add_argument("--limit", type=int, default=8, help="first N Kodak24 images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-folder", type=Path, default=None, help="default: the bundled fastdenoise/weights")
    parser.add_argument("--models", default=None, help="comma-separated (default: every bundled fp32 model)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/<machine>/half_weights.json")
    parser.add_argument("--convert", action="store_true", help="rewrite the models that hold in fp16, in place")
    args = parser.parse_args(argv)
    folder = args.weights_folder or bundled_weights().parent
    data = (args.data or require_data_root()) / "kodak24"
    data_images(data.parent, data.name, args.limit)  # checked against SHA256SUMS
    names = args.models.split(",") if args.models else bundled_models(folder)
    skipped = [n for n in names if stored_dtypes(folder / f"{n}.safetensors") != {torch.float32}]
    for name in skipped:
        print(f"left out, not stored in fp32: {name}")
    rows = []
    for name in (n for n in names if n not in skipped):
        rows += compare(name, folder / f"{name}.safetensors", data, args.limit, args.seed)
    holds = {r["model"]: all(abs(s["mean_diff"]) < HOLD_DB for s in rows if s["model"] == r["model"]) for r in rows}
    print_table(rows, holds)
    facts = machine_facts()
    out = args.out or Path(__file__).resolve().parent / "results" / machine_name(facts) / "half_weights.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": facts,
        "data": str(data),
        "limit": args.limit,
        "seed": args.seed,
        "backend": "eager fp32 cpu",
        "hold_db": HOLD_DB,
        "skipped": skipped,
        "holds": holds,
        "converted": sorted(n for n, ok in holds.items() if ok) if args.convert else [],
        "rows": rows,
    }
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {out}")
    if args.convert:
        for name in payload["converted"]:
            convert(folder / f"{name}.safetensors", [r for r in rows if r["model"] == name])
            print(f"converted {folder / f'{name}.safetensors'} to fp16")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
