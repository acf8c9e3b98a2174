"""int8 against fp32, both through OpenVINO on the CPU, per image: PSNR of each calibration arm minus fp32 on the same
noisy inputs (the eval protocol: image i of the sorted folder, noise seed [seed, i], unclipped), per folder and sigma,
the mean difference with a 95% paired bootstrap interval (fastdenoise.stats). Results accumulate in one JSON: a rerun
skips the (arm, folder, sigma, image) rows it holds, so arms can be added one call at a time.

    python bench/int8_quality.py DATA/kodak24 DATA/cbsd68 --arms fp32,demo --out int8_quality.json
    python bench/int8_quality.py DATA/cbsd432 --limit 16 --crop 256 --arms fp32,demo,inputs --out screen.json

Arms: `fp32`, the reference; the names in ARMS, each a `Calibration` (fastdenoise.backends.openvino); `inputs`:
calibrated, per folder and sigma, on crops of that folder's own noisy inputs (what `run` could do with its INPUT).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fastdenoise.backends.openvino import Calibration, OpenVinoBackend, calibration_crops, quantize
from fastdenoise.datasets import data_root
from fastdenoise.images import list_images, load_rgb
from fastdenoise.machine import cpu_flags, cpu_model
from fastdenoise.metrics import psnr
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.noise import add_noise, to_uint8
from fastdenoise.stats import paired_bootstrap

# the old default's settings (128 crops, a sigma drawn per crop, the global residual add quantized), on the demo photos
DEMO = Calibration(crops=128, spread="uniform", float_residual=False)
EVEN = dataclasses.replace(DEMO, crops=256, spread="even")
RES = dataclasses.replace(EVEN, float_residual=True)  # the new default, Calibration()
ARMS = {
    "cbsd432": dataclasses.replace(DEMO, folder="cbsd432"),  # the old default: the training photos (DATA/cbsd432)
    "demo": DEMO,  # the old settings on the demo photos
    "demo-even256": EVEN,  # 256 crops, sigmas evenly spaced over 0-75
    "demo-even256-res": RES,  # and the global residual add in float
    "demo-even256-tail": dataclasses.replace(RES, float_upsampling=True),  # and the transposed convolutions
    "demo-even256-ovf": dataclasses.replace(EVEN, overflow_fix="enable"),
    "demo-even256-res-ovf": dataclasses.replace(RES, overflow_fix="enable"),
    "demo-even256-res-noovf": dataclasses.replace(RES, overflow_fix="disable"),
    "demo-even256-res-fastbc": dataclasses.replace(RES, fast_bias_correction=True),
    "demo-even256-res-hist": dataclasses.replace(RES, activation_ranges="histogram"),
    "demo-even256-res-minmax": dataclasses.replace(RES, activation_ranges="minmax"),
    "demo-even512-s192-res": dataclasses.replace(RES, crops=512, size=192),
}
# the run's own inputs carry their noise: none is added
INPUT_CROPS = dataclasses.replace(RES, folder="inputs", max_sigma=0.0, spread="uniform")


def resolve(cal: Calibration) -> Calibration:
    """An arm's folder named relative to the shared data folder (cbsd432) made absolute."""
    if cal.folder is None or Path(cal.folder).is_absolute():
        return cal
    root = data_root()
    if root is None:
        raise SystemExit(f"error: arm folder {cal.folder} needs the shared data folder (FASTDENOISE_DATA)")
    return dataclasses.replace(cal, folder=str(root / cal.folder))


def centre(image: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is None:
        return image
    h, w = image.shape[:2]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    return np.ascontiguousarray(image[top : top + crop, left : left + crop])


def noisy_inputs(folder: Path, sigma: float, seed: int, limit: int | None, crop: int | None) -> list[tuple]:
    """(name, clean uint8, noisy float32) per image, image i of the sorted folder noised with seed [seed, i]."""
    paths = list_images(folder)
    if limit is not None:
        paths = paths[:: max(1, len(paths) // limit)][:limit]
    rows = []
    for path in paths:
        i = list_images(folder).index(path) if limit is not None else len(rows)
        clean = centre(load_rgb(path), crop)
        rows.append((path.name, clean, add_noise(clean, sigma, seed, i)))
    return rows


def own_inputs_backend(model, inputs: list[tuple], cache: Path, tag: str) -> OpenVinoBackend:
    """int8 calibrated on crops of this folder's own noisy inputs (no noise added: they carry it)."""
    import openvino as ov

    from fastdenoise.engines.export import cached_denoiser_onnx
    from fastdenoise.models.denoiser import fold_bn

    xml = cache / "inputs" / f"{tag}.xml"
    if not xml.is_file():
        onnx = cached_denoiser_onnx(fold_bn(model), torch.float32, cache / "onnx")
        photos = [np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8) for _, _, noisy in inputs]  # as files hold
        crops = calibration_crops(INPUT_CROPS, photos)
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantize(ov.Core().read_model(str(onnx)), crops, INPUT_CROPS), str(xml), compress_to_fp16=False)
    return OpenVinoBackend(model, torch.device("cpu"), torch.float32, str(xml), cache_dir=cache, trust_engine=True)


def denoise(backend: OpenVinoBackend, noisy: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(noisy).permute(2, 0, 1)[None]
    return to_uint8(backend(x)[0].permute(1, 2, 0).numpy())


def summary(rows: list[dict], control: str = "fp32") -> list[dict]:
    """Per arm, folder and sigma: the paired mean difference to the control arm with its 95% interval."""
    fp32 = {(r["folder"], r["sigma"], r["image"]): r["psnr"] for r in rows if r["arm"] == control}
    out = []
    for arm, folder, sigma in sorted({(r["arm"], r["folder"], r["sigma"]) for r in rows if r["arm"] != control}):
        pairs = [
            (r["psnr"], fp32[folder, sigma, r["image"]])
            for r in rows
            if (r["arm"], r["folder"], r["sigma"]) == (arm, folder, sigma) and (folder, sigma, r["image"]) in fp32
        ]
        if not pairs:
            continue
        a, b = np.array([[p[0]] for p in pairs]), np.array([[p[1]] for p in pairs])
        n = len(pairs)
        test = paired_bootstrap(a, b, lambda sums: sums[:, 0] / n, draws=4000)  # noqa: B023 (called here, at once)
        out.append(
            {"arm": arm, "control": control, "folder": folder, "sigma": sigma, "images": n, "fp32": float(b.mean())}
            | test
        )
    return out


def markdown(rows: list[dict]) -> str:
    """The summary as one markdown table: a row per arm and folder, a column per sigma, 'diff [lo, hi]' in dB."""
    sigmas = sorted({r["sigma"] for r in rows})
    cells = {(r["arm"], r["folder"], r["sigma"]): f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]" for r in rows}
    lines = ["| arm | folder (images) | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |"]
    lines.append("|---|---|" + "---|" * len(sigmas))
    for arm, folder in sorted({(r["arm"], r["folder"]) for r in rows}, key=lambda k: (k[1], k[0])):
        n = max(r["images"] for r in rows if (r["arm"], r["folder"]) == (arm, folder))
        row = [cells.get((arm, folder, s), "") for s in sigmas]
        lines.append(f"| {arm} | {folder} ({n}) | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="folders of clean images")
    parser.add_argument("--arms", default="fp32,demo", help=f"fp32, inputs, {', '.join(ARMS)}")
    parser.add_argument("--sigmas", default="15,25,35,50")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="this many images per folder, evenly strided (screening)")
    parser.add_argument("--crop", type=int, help="centre crops of this side (screening)")
    parser.add_argument("--weights", type=Path, help="default: the bundled default (blind)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/int8-scratch/cache"))
    parser.add_argument("--out", type=Path, required=True, help="JSON of every row and the summary (accumulates)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="JSONs of this script whose rows to add")
    parser.add_argument("--control", default="fp32", help="the arm the differences are to (default fp32)")
    args = parser.parse_args()
    import nncf
    import openvino

    model = load_denoiser(args.weights)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    done = {(r["arm"], r["folder"], r["sigma"], r["image"]) for r in record["rows"]}
    for other in args.merge:
        for row in json.loads(other.read_text())["rows"]:
            if (row["arm"], row["folder"], row["sigma"], row["image"]) not in done:
                record["rows"].append(row)
                done.add((row["arm"], row["folder"], row["sigma"], row["image"]))
    record |= {
        "machine": f"{cpu_model()} ({platform.machine()}), {torch.get_num_threads()} thread(s)",
        "isa": cpu_flags(),
        "versions": {"openvino": openvino.__version__, "nncf": nncf.__version__, "torch": torch.__version__},
        "weights": str(args.weights or "bundled default"),
        "seed": args.seed,
        "limit": args.limit,
        "crop": args.crop,
        "arms": {name: dataclasses.asdict(cal) for name, cal in ARMS.items()},
        "inputs": dataclasses.asdict(INPUT_CROPS),
    }
    for arm in [name for name in args.arms.split(",") if name]:
        if arm not in ARMS and arm not in ("fp32", "inputs"):
            raise SystemExit(f"error: unknown arm {arm}; choose from fp32, inputs, {', '.join(ARMS)}")
        backend, started = None, time.perf_counter()
        for folder in args.folders:
            for sigma in [float(s) for s in args.sigmas.split(",")]:
                inputs = noisy_inputs(folder, sigma, args.seed, args.limit, args.crop)
                todo = [row for row in inputs if (arm, folder.name, sigma, row[0]) not in done]
                if not todo:
                    continue
                if arm == "inputs":
                    tag = f"{folder.name}-s{sigma:g}-n{len(inputs)}-c{args.crop}-{INPUT_CROPS.key}"
                    backend = own_inputs_backend(model, inputs, args.cache, tag)
                elif backend is None:
                    cal = resolve(ARMS[arm]) if arm in ARMS else None
                    cpu, int8 = torch.device("cpu"), cal is not None
                    backend = OpenVinoBackend(
                        model, cpu, torch.float32, int8=int8, calibration=cal, cache_dir=args.cache
                    )
                for name, clean, noisy in todo:
                    score = psnr(denoise(backend, noisy), clean)
                    record["rows"].append(
                        {"arm": arm, "folder": folder.name, "sigma": sigma, "image": name, "psnr": score}
                    )
                record["summary"] = summary(record["rows"], args.control)
                args.out.write_text(json.dumps(record, indent=1))
                seconds = time.perf_counter() - started
                print(f"{arm} {folder.name} sigma {sigma:g}: {len(todo)} images, {seconds:.0f} s", flush=True)
    record["summary"] = summary(record["rows"], args.control)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"PSNR minus {args.control}, dB, mean over images [95% paired bootstrap interval]:")
    print(markdown(record["summary"]))


if __name__ == "__main__":
    main()
