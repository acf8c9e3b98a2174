"""`fastdenoise run` throughput on a folder vs a plain eager per-image loop, in the same process, plus the PSNR cost
of the fast path's precision. Usage: python bench/run_throughput.py ../shared/data/kodak24 [--repeat 2]"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.evaluation.evaluate import backend_denoiser, evaluate
from fastdenoise.images import list_images, load_rgb, save_rgb
from fastdenoise.machine import machine_facts, machine_name
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.noise import to_uint8
from fastdenoise.pipeline.runner import RunConfig, denoise_folder


def naive_loop(model: torch.nn.Module, paths: list[Path], out: Path) -> float:
    """The baseline: PIL load, unfolded fp32 eager model in NCHW, one image at a time, PIL save. Returns seconds."""
    start = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            x = torch.from_numpy(load_rgb(path)).permute(2, 0, 1)[None].float() / 255
            y = model(x)[0].permute(1, 2, 0).numpy()
            save_rgb(to_uint8(y), out / f"{path.stem}.png")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backends", default="eager,compiled")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    paths = list_images(args.data)
    megapixels = sum(np.prod(load_rgb(p).shape[:2]) for p in paths) / 1e6
    model = load_denoiser()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            seconds = naive_loop(model, paths, Path(tmp) / f"naive{r}")
            rows.append(
                {"method": "naive eager fp32 loop", "repeat": r, "seconds": seconds, "mp_per_s": megapixels / seconds}
            )
            print(rows[-1], flush=True)
            for kind in args.backends.split(","):
                for precision in ("fp32", "auto"):
                    backend = make_backend(model, BackendConfig(kind=kind, device="cpu", precision=precision))
                    if kind == "compiled":  # compile once outside the timed run, at the folder's sizes
                        for shape in {load_rgb(p).shape for p in paths}:
                            backend(torch.rand(4, 3, shape[0], shape[1]))
                    summary = denoise_folder(
                        args.data, Path(tmp) / f"{kind}-{precision}-{r}", backend, RunConfig(batch=4)
                    )
                    rows.append(
                        {
                            "method": f"fastdenoise run --backend {kind} --precision {precision}",
                            "repeat": r,
                            "seconds": summary.seconds,
                            "mp_per_s": summary.mp_per_s,
                            "stages": dict(summary.stages),
                        }
                    )
                    print(rows[-1], flush=True)
    best = {}
    for row in rows:
        best[row["method"]] = max(best.get(row["method"], 0), row["mp_per_s"])
    base = best["naive eager fp32 loop"]
    quality = {}
    for precision in ("fp32", "auto"):
        backend = make_backend(model, BackendConfig(device="cpu", precision=precision))
        quality[precision] = evaluate(backend_denoiser(backend), args.data, [25.0], with_ssim=False).mean(25.0)
    facts = machine_facts()
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": facts,
        "data": str(args.data),
        "images": len(paths),
        "megapixels": megapixels,
        "rows": rows,
        "best_mp_per_s": best,
        "ratio_vs_naive": {k: v / base for k, v in best.items()},
        "kodak_psnr_sigma25": quality,
        "psnr_cost_of_auto_precision_db": quality["fp32"] - quality["auto"],
    }
    out = args.out or Path(__file__).resolve().parent / "results" / machine_name(facts) / "run_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for k, v in best.items():
        print(f"{k:55s} {v:.3f} MP/s  x{v / base:.2f}")
    print(f"PSNR sigma 25: fp32 {quality['fp32']:.3f} dB, auto {quality['auto']:.3f} dB; wrote {out}")


if __name__ == "__main__":
    main()
