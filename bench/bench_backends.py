"""Every CPU inference arm side by side in one process, arms interleaved round by round: eager fp32 and the project
default (eager bf16 where native), torch.compile, onnxruntime, OpenVINO (fp32, bf16 static and dynamic shapes, int8)
and `--backend auto`; model-only at 256^2 and 768x512, batch 1 and a filling batch, then `fastdenoise run` end to end
over Kodak24 per arm. Speeds are MP/s medians and ratios to the project default of the same run, with the fraction of
the machine's matmul peak (441 GFLOP per MP). One JSON + a text table under bench/results/<machine>/.

    taskset -c 1 env OMP_NUM_THREADS=1 python bench/bench_backends.py ../shared/data/kodak24
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fastdenoise.backends import BackendConfig, TorchBackend, make_backend
from fastdenoise.backends.auto import AutoBackend
from fastdenoise.devices import cpu_has_bf16
from fastdenoise.evaluation.throughput import gflop_per_mp, measure_peak
from fastdenoise.machine import machine_facts, machine_name
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.pipeline.runner import RunConfig, denoise_folder

REFERENCE = "default (eager bf16|fp32 auto)"


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    kind: str
    precision: str
    static: bool = True  # OpenVINO: one compiled model per shape, else one dynamic-shape model
    end_to_end: bool = True


def arms(with_compiled: bool) -> list[Arm]:
    bf16 = "bf16" if cpu_has_bf16() else "fp32"
    found = [
        Arm("naive eager fp32", "eager", "fp32", end_to_end=False),
        Arm(REFERENCE, "eager", "auto"),
        *([Arm(f"compiled {bf16}", "compiled", "auto")] if with_compiled else []),
        Arm("onnxruntime fp32", "onnxruntime", "fp32"),
        Arm("openvino fp32 static", "openvino", "fp32", end_to_end=False),
        Arm(f"openvino {bf16} dynamic", "openvino", "auto", static=False, end_to_end=False),
        Arm(f"openvino {bf16} static", "openvino", "auto"),
        Arm("openvino int8 static", "openvino", "int8"),
        Arm("auto", "auto", "auto"),
    ]
    return found


def build(model, arm: Arm):
    from fastdenoise.backends.openvino import OpenVinoBackend

    if arm.name.startswith("naive"):  # the unfolded model, NCHW, fp32: what a user gets without this project
        return TorchBackend(model, torch.device("cpu"), torch.float32, channels_last=False, compile=False)
    backend = make_backend(model, BackendConfig(kind=arm.kind, device="cpu", precision=arm.precision))
    if isinstance(backend, OpenVinoBackend) and not arm.static:
        backend.static = False
    return backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="Kodak24 folder for the end-to-end runs")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per case (median), after one warm-up")
    parser.add_argument("--cases", default="1x256x256,8x256x256,1x512x768,4x512x768", help="NxHxW, comma-separated")
    parser.add_argument("--no-compiled", action="store_true", help="leave out torch.compile (minutes per shape)")
    parser.add_argument(
        "--skip", default="", help="leave out the arms whose names contain one of these (comma-separated)"
    )
    parser.add_argument("--end-to-end-repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4, help="`run --batch` for the end-to-end runs")
    parser.add_argument(
        "--compare-with", default="4x512x768", help="the case (in --cases) end-to-end speeds are set against"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
    against = tuple(int(v) for v in args.compare_with.split("x"))
    if against not in cases:
        parser.error(f"--compare-with {args.compare_with} is not one of --cases")

    model = load_denoiser()
    gflop = gflop_per_mp(model)
    skip = [w for w in args.skip.split(",") if w]
    chosen = [
        arm for arm in arms(not args.no_compiled) if arm.name == REFERENCE or not any(w in arm.name for w in skip)
    ]
    built, build_seconds = {}, {}
    for arm in chosen:
        start = time.perf_counter()
        built[arm.name] = build(model, arm)
        build_seconds[arm.name] = time.perf_counter() - start
        print(f"built {arm.name} in {build_seconds[arm.name]:.1f} s", flush=True)

    generator = torch.Generator().manual_seed(0)
    inputs = {case: torch.rand(*case[:1], 3, *case[1:], generator=generator) for case in cases}
    times: dict[tuple[str, tuple], list[float]] = {}
    warmup: dict[tuple[str, tuple], float] = {}
    for case, x in inputs.items():  # warm-up: compile, static-shape compile, auto's probe, allocation
        for arm in chosen:
            start = time.perf_counter()
            built[arm.name](x)
            warmup[arm.name, case] = time.perf_counter() - start
            print(f"warm {arm.name} {case}: {warmup[arm.name, case]:.1f} s", flush=True)
    for r in range(args.rounds):  # interleaved: every arm once per round, so load changes hit all arms alike
        for case, x in inputs.items():
            for arm in chosen:
                start = time.perf_counter()
                built[arm.name](x)
                times.setdefault((arm.name, case), []).append(time.perf_counter() - start)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    peak = measure_peaks()  # and again after the end-to-end runs, keeping the higher (the core may be shared)
    rows = []
    for case in cases:
        n, h, w = case
        reference = statistics.median(times[REFERENCE, case])
        for arm in chosen:
            seconds = statistics.median(times[arm.name, case])
            mp_per_s = n * h * w / 1e6 / seconds
            compute = arm.precision if arm.precision in peak else ("bf16" if cpu_has_bf16() else "fp32")
            rows.append(
                {
                    "arm": arm.name,
                    "batch": n,
                    "height": h,
                    "width": w,
                    "seconds": times[arm.name, case],
                    "mp_per_s": mp_per_s,
                    "vs_default": reference / seconds,
                    "gflops": mp_per_s * gflop,
                    "fraction_of_peak": mp_per_s * gflop / peak[compute],
                    "peak_used": compute,
                    "warmup_seconds": warmup[arm.name, case],
                }
            )

    auto = next(b for b in built.values() if isinstance(b, AutoBackend))
    auto.ledger.work_mp = 1e6  # a run long enough to probe every candidate, as runs before this one would have
    for shape in batch_shapes(args.data, args.batch):  # probe outside the timed runs, as a second run finds it cached
        auto(torch.rand(shape, generator=generator))
    end_to_end = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.end_to_end_repeats):
            for arm in chosen:
                if not arm.end_to_end:
                    continue
                summary = denoise_folder(
                    args.data, Path(tmp) / f"{r}-{arm.name}", built[arm.name], RunConfig(batch=args.batch)
                )
                model_only = next(
                    row["mp_per_s"]
                    for row in rows
                    if row["arm"] == arm.name and (row["batch"], row["height"], row["width"]) == against
                )
                end_to_end.append(
                    {
                        "arm": arm.name,
                        "repeat": r,
                        "mp_per_s": summary.mp_per_s,
                        "seconds": summary.seconds,
                        "model_only_mp_per_s": model_only,
                        "fraction_of_model_only": summary.mp_per_s / model_only,
                        "stages": dict(summary.stages),
                    }
                )
                print(
                    f"run {arm.name}: {summary.mp_per_s:.3f} MP/s ({summary.mp_per_s / model_only:.2f} of model-only)",
                    flush=True,
                )
    peak = {k: max(v, later.get(k, 0.0)) for k, v in peak.items() for later in [measure_peaks()]}
    for row in rows:
        row["fraction_of_peak"] = row["gflops"] / peak[row["peak_used"]]

    facts = machine_facts()
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "threads": torch.get_num_threads(),
        "machine": facts,
        "gflop_per_mp": gflop,
        "peak_gflops": peak,
        "reference_arm": REFERENCE,
        "build_seconds": build_seconds,
        "model_only": rows,
        "end_to_end_against": list(against),
        "end_to_end": end_to_end,
        "auto_chose": {shape: kind.value for shape, kind in auto.chosen.items()},
    }
    out = args.out or Path(__file__).resolve().parent / "results" / machine_name(facts) / "backends.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = render(result)
    out.with_suffix(".txt").write_text(table)
    print(table)
    print(f"wrote {out}")


def measure_peaks() -> dict[str, float]:
    peak = measure_peak(torch.device("cpu"), ("fp32", "bf16") if cpu_has_bf16() else ("fp32",), 2048)
    return peak | int8_peak()


def batch_shapes(folder: Path, batch: int) -> set[tuple[int, int, int, int]]:
    """The (N, 3, H, W) batches `run --batch` makes of the folder: full batches and each size's remainder."""
    from PIL import Image

    from fastdenoise.images import list_images

    sizes: dict[tuple[int, int], int] = {}
    for path in list_images(folder):
        with Image.open(path) as image:
            sizes[image.height, image.width] = sizes.get((image.height, image.width), 0) + 1
    shapes = {(min(batch, count), 3, h, w) for (h, w), count in sizes.items()}
    return shapes | {(count % batch, 3, h, w) for (h, w), count in sizes.items() if count % batch}


def int8_peak(n: int = 2048, rounds: int = 5) -> dict[str, float]:
    """GFLOP/s of an int8 n^3 matmul (torch._int_mm) where this torch has it on the CPU."""
    a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    try:
        torch._int_mm(a, a)
    except (RuntimeError, AttributeError, NotImplementedError):
        return {}
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        torch._int_mm(a, a)
        best = min(best, time.perf_counter() - start)
    return {"int8": 2 * n**3 / best / 1e9}


def render(result: dict) -> str:
    lines = [
        f"{result['machine']['cpu']}, {result['threads']} thread(s); peak GFLOP/s "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["peak_gflops"].items()),
        "",
        f"{'arm':32s} {'NxHxW':>12s} {'MP/s':>7s} {'x default':>9s} {'% peak':>7s}",
    ]
    for row in result["model_only"]:
        shape = f"{row['batch']}x{row['height']}x{row['width']}"
        lines.append(
            f"{row['arm']:32s} {shape:>12s} {row['mp_per_s']:7.3f} {row['vs_default']:9.2f} "
            f"{100 * row['fraction_of_peak']:6.1f}%"
        )
    lines += ["", f"{'run over the folder':32s} {'MP/s':>7s} {'of model-only':>14s}"]
    for row in result["end_to_end"]:
        lines.append(f"{row['arm']:32s} {row['mp_per_s']:7.3f} {row['fraction_of_model_only']:14.2f}")
    lines.append(f"auto chose: {result['auto_chose']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
