"""One GPU measurement in one call, within a time budget: model-only MP/s of eager fp32 (NCHW, unfolded), eager
channels_last bf16 and fp16, torch.compile (default and max-autotune), a CUDA graph of the compiled model and the
Triton backend, at 1 and 4 MP with batch 1 and a filling batch; the bf16 matmul peak; and `fastdenoise run` over
generated JPEGs (2,000 by default, a minute or more) with the null backend (the host's ceiling), eager and compiled
bf16, each against model-only of the same backend. Writes one JSON to $OUT (or --out) after every arm, so a run
cut short still brings back what it measured.

    python bench/gpu_probe.py --budget-s 480                  # on the GPU machine, results in $OUT/gpu_probe.json
    taskset -c 1 python bench/gpu_probe.py --dry-run          # on a CPU: tiny sizes, every code path once
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fastdenoise.backends import TorchBackend
from fastdenoise.backends.null import FloatNullBackend
from fastdenoise.evaluation.throughput import gflop_per_mp, measure_peak, time_rounds
from fastdenoise.machine import machine_facts
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.models.denoiser import fold_bn

Forward = Callable[[torch.Tensor], torch.Tensor]


def arms(model, device: torch.device, dry_run: bool) -> dict[str, Callable[[], Forward]]:
    """Name -> a builder of the forward to time (built lazily, so a failing or slow build costs only its own arm)."""
    folded = fold_bn(model)
    half = torch.float16 if device.type == "cuda" else torch.bfloat16  # CPUs have no fp16 convolutions

    def naive() -> Forward:
        net = model.to(device).eval()
        return lambda x: net(x)

    def torch_backend(dtype: torch.dtype, compile: bool = False, mode: str | None = None) -> Callable[[], Forward]:
        def make() -> Forward:
            backend = TorchBackend(folded, device, dtype, channels_last=True, compile=False)
            if compile:
                backend.forward = torch.compile(backend.model, mode=mode, dynamic=False)
            return backend

        return make

    def cuda_graph() -> Forward:
        if device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        return torch_backend(torch.bfloat16, compile=True, mode="max-autotune")()  # max-autotune captures CUDA graphs

    def cuda_graph_free() -> Forward:
        return torch_backend(torch.bfloat16, compile=True, mode="max-autotune-no-cudagraphs")()

    def triton() -> Forward:
        from fastdenoise.kernels.backend import TritonBackend

        return TritonBackend(folded, device, torch.bfloat16)

    found = {  # cheap builds first: the budget is checked between arms
        "eager fp32 naive": naive,
        "eager bf16 channels_last": torch_backend(torch.bfloat16),
        f"eager {str(half).removeprefix('torch.')} channels_last": torch_backend(half),
        "triton bf16": triton,
        "compiled bf16 default": torch_backend(torch.bfloat16, compile=True),
        "compiled bf16 max-autotune, no CUDA graphs": cuda_graph_free,
        "compiled bf16 max-autotune + CUDA graphs": cuda_graph,
    }
    if dry_run and device.type == "cpu":
        found.pop(f"eager {str(half).removeprefix('torch.')} channels_last")  # the same as bf16 there
    return found


def time_calls(fn: Forward, x: torch.Tensor, rounds: int, sync: Callable[[], None]) -> list[float]:
    with torch.inference_mode():
        return time_rounds(lambda: fn(x), rounds, sync)


def write_jpegs(folder: Path, count: int, height: int, width: int, seed: int = 0, distinct: int = 50) -> None:
    """Smooth random photos-ish (upsampled noise) as JPEG q95: decoding cost like real photos, no data needed. The
    first `distinct` are encoded, the rest are copies of them (the host's time goes to the run, not to making data)."""
    import shutil

    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        if i >= distinct:
            shutil.copyfile(folder / f"{i % distinct:05d}.jpg", folder / f"{i:05d}.jpg")
            continue
        small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        image.save(folder / f"{i:05d}.jpg", quality=95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check every code path, not speed")
    parser.add_argument("--budget-s", type=float, default=480, help="stop starting new arms after this many seconds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--arms", default="", help="only the arms whose names contain one of these (comma-separated)")
    parser.add_argument("--no-end-to-end", action="store_true", help="model-only arms alone")
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT/gpu_probe.json, else ./gpu_probe.json")
    parser.add_argument("--images", type=int, default=2000, help="images per end-to-end run (1 MP JPEGs)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are imported (lazily, by the triton arm)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: use --dry-run on a CPU")
    out = args.out or Path(os.environ.get("OUT", ".")) / "gpu_probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # (height, width) of a 1 MP and a 4 MP image, and the batch that fills the GPU at each (8 MP per call)
    sizes = [((32, 48), 2)] if args.dry_run else [((1024, 1024), 8), ((2048, 2048), 2)]
    rounds = 2 if args.dry_run else args.rounds
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = load_denoiser()
    gflop = gflop_per_mp(model)
    result: dict = {
        "command": " ".join(sys.argv),
        "dry_run": args.dry_run,
        "machine": machine_facts(),
        "gflop_per_mp": gflop,
        "model_only": [],
        "skipped": [],
        "end_to_end": [],
    }

    def save() -> None:
        result["elapsed_s"] = time.perf_counter() - start
        tmp = out.with_suffix(".partial")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)

    result["peak_gflops"] = measure_peak(
        device, ("bf16",) if args.dry_run else ("bf16", "fp16"), 256 if args.dry_run else 8192
    )
    save()
    generator = torch.Generator().manual_seed(0)
    best: dict[str, float] = {}
    wanted = [w for w in args.arms.split(",") if w]
    for name, make in arms(model, device, args.dry_run).items():
        if wanted and not any(w in name for w in wanted):
            continue
        if time.perf_counter() - start > args.budget_s:
            result["skipped"].append({"arm": name, "reason": f"past the {args.budget_s:.0f} s budget"})
            continue
        try:
            built = time.perf_counter()
            forward = make()
            for (h, w), filling in sizes:
                for batch in (1, filling):
                    x = torch.rand(batch, 3, h, w, generator=generator).to(device)
                    warm = time_calls(forward, x, 2, sync)  # compile / autotune / graph capture happen here
                    seconds = time_calls(forward, x, rounds, sync)
                    median = statistics.median(seconds)
                    mp_per_s = batch * h * w / 1e6 / median
                    result["model_only"].append(
                        {
                            "arm": name,
                            "batch": batch,
                            "height": h,
                            "width": w,
                            "mp_per_s": mp_per_s,
                            "gflops": mp_per_s * gflop,
                            "fraction_of_bf16_peak": mp_per_s * gflop / result["peak_gflops"]["bf16"],
                            "seconds": seconds,
                            "warmup_seconds": warm,
                        }
                    )
                    best[name] = max(best.get(name, 0.0), mp_per_s)
            result.setdefault("build_seconds", {})[name] = time.perf_counter() - built
        except Exception as err:  # noqa: BLE001  # an arm that fails is a finding, not a reason to lose the others
            result["skipped"].append(
                {
                    "arm": name,
                    "reason": f"{type(err).__name__}: {str(err).strip()[:300]}",
                    "traceback": traceback.format_exc()[-2000:],
                }
            )
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save()

    if not args.no_end_to_end and time.perf_counter() - start > args.budget_s + 60 and not args.dry_run:
        result["skipped"].append({"arm": "end to end", "reason": f"past the {args.budget_s:.0f} s budget"})
    elif not args.no_end_to_end:
        end_to_end(result, model, device, sizes[0], 8 if args.dry_run else args.images, sync, save)
    save()
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "model_only")}, indent=1)[:4000])
    for row in result["model_only"]:
        print(f"{row['arm']:45s} b{row['batch']} {row['height']}x{row['width']} {row['mp_per_s']:9.2f} MP/s")
    print(f"wrote {out}")


def end_to_end(result: dict, model, device: torch.device, size: tuple, images: int, sync, save) -> None:
    """`fastdenoise run` over `images` generated JPEGs (JPEG out, every core a loader worker) with the float null
    backend (the host's ceiling with the float round trip and the copies on the device, as the null backend ran
    before d92cdda), eager bf16 and compiled bf16, each against its model-only speed at that size."""
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.pipeline.runner import RunConfig, denoise_folder

    (h, w), batch = size
    workers = max(1, min(16, os.cpu_count() or 1))
    backends = {"null": lambda: FloatNullBackend(device)}  # the float round trip and copies on the device
    for kind in ("eager", "compiled"):
        backends[f"{kind} bf16"] = lambda kind=kind: make_backend(
            model, BackendConfig(kind=kind, device=device.type, precision="bf16")
        )
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "jpegs"
        write_jpegs(src, images, h, w)
        for name, make in backends.items():
            for loader in ("pil", "dali") if device.type == "cuda" else ("pil",):
                try:
                    backend = make()
                    x = torch.rand(batch, 3, h, w).to(device)
                    time_calls(backend, x, 2, sync)  # compile, autotune
                    model_only = batch * h * w / 1e6 / statistics.median(time_calls(backend, x, 3, sync))
                    summary = denoise_folder(
                        src,
                        Path(tmp) / f"out-{loader}",
                        backend,
                        RunConfig(batch=batch, format="jpg", loader=loader, workers=workers, overwrite=True),
                    )
                except (ImportError, ValueError, RuntimeError) as err:
                    result["skipped"].append(
                        {"arm": f"run {name} --loader {loader}", "reason": f"{type(err).__name__}: {str(err)[:300]}"}
                    )
                    continue
                result["end_to_end"].append(
                    {
                        "backend": name,
                        "loader": loader,
                        "images": summary.ok,
                        "workers": workers,
                        "mp_per_s": summary.mp_per_s,
                        "model_only_mp_per_s": model_only,
                        "fraction_of_model_only": summary.mp_per_s / model_only,
                        "stages": dict(summary.stages),
                    }
                )
                save()


if __name__ == "__main__":
    main()
