"""Loader throughput (DALI vs Pillow) and end-to-end `fastdenoise run` throughput vs a naive per-image loop (Pillow
load, eager unfolded fp32 model, Pillow save), measured in the same process on a generated folder of mixed-size
photos-like images. Usage: python bench/bench_pipeline.py [--images 240] [--repeat 2] [--threads 1]"""

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
from fastdenoise.images import list_images, load_rgb, save_rgb
from fastdenoise.machine import machine_facts, machine_name
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.noise import to_uint8
from fastdenoise.pipeline.loaders import DaliLoader, PilLoader, dali_available, make_loader
from fastdenoise.pipeline.runner import RunConfig, denoise_folder
from fastdenoise.pipeline.summary import summary_dict

SIZES = [(64, 96), (96, 64), (72, 72), (48, 128)]


def make_folder(root: Path, count: int, seed: int = 0) -> float:
    """`count` smooth noisy RGB images, half PNG half JPEG, in four sizes; returns the megapixels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    megapixels = 0.0
    for i in range(count):
        h, w = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.float64)
        image = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
        path = root / f"d{i % 4}" / f"img{i:04d}.{'jpg' if i % 2 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, **({"quality": 92} if i % 2 else {}))
        megapixels += h * w / 1e6
    return megapixels


class Item:
    def __init__(self, path: Path) -> None:
        self.path = path


def loader_rate(loader, paths: list[Path], megapixels: float) -> dict:
    start = time.perf_counter()
    decoded = sum(d.error is None for d in loader([Item(p) for p in paths]))
    seconds = time.perf_counter() - start
    assert decoded == len(paths)
    return {"seconds": seconds, "images_per_s": len(paths) / seconds, "mp_per_s": megapixels / seconds}


def naive_loop(model: torch.nn.Module, paths: list[Path], src: Path, out: Path) -> float:
    """The baseline: Pillow load, unfolded fp32 eager model in NCHW, one image at a time, Pillow save. Seconds."""
    start = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            x = torch.from_numpy(load_rgb(path)).permute(2, 0, 1)[None].float() / 255
            y = model(x)[0].permute(1, 2, 0).numpy()
            save_rgb(to_uint8(y), out / path.relative_to(src).with_suffix(".png"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loader", default="auto", help="loader of the end-to-end run: auto, pil, dali")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_denoiser()
    backend = make_backend(model, BackendConfig(device="cpu"))
    result: dict = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "images": args.images}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        megapixels = make_folder(src, args.images)
        paths = list_images(src)
        result |= {"megapixels": megapixels, "sizes": SIZES, "loaders": {}, "rows": []}
        loaders = {"pil": PilLoader(args.workers, depth=2 * args.batch)}
        if dali_available():
            loaders["dali"] = DaliLoader(args.batch, args.workers, "cpu")
        for name, loader in loaders.items():
            loader_rate(loader, paths[:16], megapixels)  # warm-up: imports, thread pools
            result["loaders"][name] = max(
                (loader_rate(loader, paths, megapixels) for _ in range(args.repeat)), key=lambda r: r["mp_per_s"]
            )
            print(f"loader {name}: {result['loaders'][name]}", flush=True)
        cfg = RunConfig(batch=args.batch, workers=args.workers, loader=args.loader)
        run_loader = make_loader(cfg.loader, cfg.workers, cfg.batch, backend.device)
        run_name = type(run_loader).__name__
        for r in range(args.repeat):
            seconds = naive_loop(model, paths, src, Path(tmp) / f"naive{r}")
            result["rows"].append(
                {
                    "method": "naive per-image loop",
                    "repeat": r,
                    "seconds": seconds,
                    "images_per_s": len(paths) / seconds,
                    "mp_per_s": megapixels / seconds,
                }
            )
            print(result["rows"][-1], flush=True)
            summary = denoise_folder(src, Path(tmp) / f"run{r}", backend, cfg, loader=run_loader)
            assert summary.ok == len(paths)
            result["rows"].append(
                {"method": f"fastdenoise run (loader {cfg.loader}: {run_name}, batch {cfg.batch})", "repeat": r}
                | summary_dict(summary)
            )
            print(result["rows"][-1], flush=True)
    best: dict[str, float] = {}
    for row in result["rows"]:
        best[row["method"]] = max(best.get(row["method"], 0.0), row["mp_per_s"])
    base = best["naive per-image loop"]
    facts = machine_facts()
    result |= {
        "machine": facts,
        "torch_threads": torch.get_num_threads(),
        "best_mp_per_s": best,
        "ratio_vs_naive": {k: v / base for k, v in best.items()},
    }
    out = args.out or Path(__file__).resolve().parent / "results" / machine_name(facts) / "bench_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for name, rate in result["loaders"].items():
        print(f"loader {name:5s} {rate['images_per_s']:8.1f} images/s {rate['mp_per_s']:7.3f} MP/s")
    for k, v in best.items():
        print(f"{k:45s} {v:.4f} MP/s  x{v / base:.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
