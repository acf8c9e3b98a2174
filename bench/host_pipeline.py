"""The host side of `fastdenoise run`: listing, decode, batching, encode and manifest, timed through the runner itself
(runner.denoise_folder) with the null backend (fastdenoise.backends.null: the batch handed back as bytes, so no float
round trip: on a GPU host that is the device's work), for JPEG and PNG inputs and PNG / JPEG / WebP outputs; beside it
the float round trip on the host (FloatNullBackend, as the null backend ran before), one process per CPU (ranks, as
`torchrun` runs them) against one process's threads, and each stage alone: decode, encode (PNG at every level), the
runner's float round trip, and decode + encode in a pool of threads against one of processes. Rates are MP/s of wall
time on the CPUs this process may use (taskset), and MP per CPU-second of this process and its workers (what a core of
its own sustains, also while other work shares the core); run it once per core count: each run adds its entry (keyed by
its CPUs) to one JSON per machine, bench/results/<machine>/host_pipeline.json, which then holds the scaling between the
entries. Arms run interleaved (round 1 of each, then round 2, ...), so their ratios in one entry saw the same load.

    taskset -c 0 nice -n -10 python bench/host_pipeline.py              # one core: every arm, the stages, the pools
    # 1 -> 2 cores: both on free cores, one after the other (the 1-core entry is the scaling's base)
    taskset -c 1 nice -n -10 python bench/host_pipeline.py --seconds 5 --arms "$ARMS" --parts pools,arms
    taskset -c 0,1 nice -n -10 python bench/host_pipeline.py --seconds 5 --arms "$ARMS" --parts pools,arms
    # with ARMS="main,jpg->png process per CPU,jpg->jpg process per CPU"

Inputs are generated once (photo-like: gradients, texture at three scales, a little noise; 1536x1024, 1.57 MP) and
kept in --inputs; each arm runs --rounds rounds over as many images as fill about --seconds (from a warm-up round).
Runs use the run defaults except --tile 2048, so that a 1.5 MP image goes whole and batched (one arm shows 1024)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fastdenoise import encoders, images
from fastdenoise.backends.null import FloatNullBackend, NullBackend
from fastdenoise.distributed import Shard, barrier, process_group
from fastdenoise.encoders import imagecodecs_module, write_encoded
from fastdenoise.images import load_rgb
from fastdenoise.machine import machine_facts, machine_name
from fastdenoise.pipeline.runner import RunConfig, denoise_folder

HEIGHT, WIDTH = 1024, 1536
FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
# name -> (input format, RunConfig fields); "main" arms are the 2 x 3 grid, the others one lever each
ARMS = {
    "jpg->png": ("jpg", {"format": "png"}),
    "jpg->jpg": ("jpg", {"format": "jpg"}),
    "jpg->webp": ("jpg", {"format": "webp"}),
    "png->png": ("png", {"format": "png"}),
    "png->jpg": ("png", {"format": "jpg"}),
    "png->webp": ("png", {"format": "webp"}),
    "jpg->png level 0": ("jpg", {"format": "png", "png_level": 0}),
    "jpg->png level 6": ("jpg", {"format": "png", "png_level": 6}),
    "jpg->png tile 1024": ("jpg", {"format": "png", "tile": 1024}),
    "jpg->png without imagecodecs": ("jpg", {"format": "png"}),  # Pillow decodes, zlib deflates: the fallback
    "jpg->jpg without imagecodecs": ("jpg", {"format": "jpg"}),
    "jpg->png float round trip": ("jpg", {"format": "png"}),  # FloatNullBackend: uint8 -> float -> uint8 on the host
    "jpg->jpg float round trip": ("jpg", {"format": "jpg"}),
    "jpg->png process per CPU": ("jpg", {"format": "png"}),  # ranks, as torchrun runs them (one CPU: one rank)
    "jpg->jpg process per CPU": ("jpg", {"format": "jpg"}),
}
MAIN = [name for name in ARMS if " " not in name]


def photo(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 image: a colour gradient, smooth texture at 64, 16 and 4 px, noise of sigma 3.
    It compresses like a photo (PNG level 1: ~13 bits a pixel; Kodak24's: 12-15), unlike flat or white-noise
    images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        image[..., c] = 128 + 60 * (a * x / width + b * y / height)
    for scale, amplitude in ((64, 50), (16, 25), (4, 10)):
        coarse = rng.normal(0, amplitude, (height // scale + 2, width // scale + 2, 3)).astype(np.float32)
        for c in range(3):
            image[..., c] += np.asarray(Image.fromarray(coarse[..., c], "F").resize((width, height), Image.BICUBIC))
    image += rng.normal(0, 3, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def make_inputs(root: Path, count: int) -> dict[str, Path]:
    """root/jpg (JPEG quality 90, 4:2:0, as cameras write) and root/png (Pillow level 6, as most software writes),
    `count` each, from 8 photos shifted and mirrored; kept for the next run."""
    from PIL import Image

    folders = {fmt: root / fmt for fmt in ("jpg", "png")}
    if all(len(list(f.glob(f"*.{fmt}"))) >= count for fmt, f in folders.items()):
        return folders
    bases = [photo(seed) for seed in range(8)]
    for fmt, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = np.roll(bases[i % 8], 37 * i, axis=1)
            image = image[:, ::-1] if i // 8 % 2 else image
            options = {"quality": 90} if fmt == "jpg" else {"compress_level": 6}
            Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{i:04d}.{fmt}", **options)
    return folders


def cpu_seconds() -> float:
    """CPU seconds of this process's threads and its finished children (a process pool's workers once shut down)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # microseconds; os.times counts 10 ms ticks
    return time.process_time() + children.ru_utime + children.ru_stime


def best_of(fn, rounds: int) -> tuple[float, object]:
    """The least CPU time of `rounds` calls of a one-thread fn (on a shared core wall time counts the others' work)."""
    seconds, result = [], None
    for _ in range(rounds):
        tick = time.thread_time()
        result = fn()
        seconds.append(time.thread_time() - tick)
    return min(seconds), result


def encoded(image: np.ndarray, fmt: str, quality: int = 95, level: int = 1) -> bytes:
    handle = io.BytesIO()
    write_encoded(handle, image, fmt, quality, level)
    return handle.getvalue()


@contextlib.contextmanager
def without_imagecodecs() -> Iterator[None]:
    """Inside, the package runs as where imagecodecs is not installed (its fallbacks: Pillow, zlib)."""
    saved = encoders.imagecodecs_module
    encoders.imagecodecs_module = images.imagecodecs_module = lambda: None
    try:
        yield
    finally:
        encoders.imagecodecs_module = images.imagecodecs_module = saved


def pillow_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.array(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)


def pillow_png(image: np.ndarray, level: int) -> bytes:
    from PIL import Image

    handle = io.BytesIO()
    Image.fromarray(image).save(handle, format="PNG", compress_level=level)
    return handle.getvalue()


def stage_rates(folders: dict[str, Path], rounds: int) -> dict:
    """Each stage alone on one 1.57 MP image, best of `rounds`: MP/s, and bytes for the encoders."""
    from fastdenoise.pipeline.inference import denoise_group

    jpg, png = (sorted(folders[f].iterdir())[0] for f in ("jpg", "png"))
    image = load_rgb(jpg)
    mp = image.shape[0] * image.shape[1] / 1e6
    rows: dict[str, dict] = {}
    decoders = {"jpeg": lambda: load_rgb(jpg), "png": lambda: load_rgb(png)}
    for name, path in (("jpeg", jpg), ("png", png)):
        rows[f"decode {name} (Pillow as run did before: copied three times)"] = {
            "mp_per_s": mp / best_of(lambda: pillow_rgb(path), rounds)[0]
        }
    encodings = {f"encode png level {lv}": (lambda lv=lv: encoded(image, "PNG", level=lv)) for lv in range(10)}
    encodings |= {
        "encode png level 1 (Pillow's encoder)": lambda: pillow_png(image, 1),
        "encode png level 6 (Pillow's encoder)": lambda: pillow_png(image, 6),
        "encode jpeg q95": lambda: encoded(image, "JPEG"),
        "encode webp q95": lambda: encoded(image, "WEBP"),
    }
    for fallback in (False, True):  # without imagecodecs: Pillow decodes and encodes JPEG, zlib deflates PNG
        tail = " without imagecodecs" if fallback else ""
        with without_imagecodecs() if fallback else contextlib.nullcontext():
            for name, decode in decoders.items():
                rows[f"decode {name}{tail}"] = {"mp_per_s": mp / best_of(decode, rounds)[0]}
            for name, encode in encodings.items():
                if fallback and name not in ("encode png level 1", "encode jpeg q95"):
                    continue
                seconds, data = best_of(encode, rounds)
                rows[name + tail] = {
                    "mp_per_s": mp / seconds,
                    "bytes": len(data),
                    "bits_per_pixel": 8 * len(data) / (mp * 1e6),
                }
    group = [image] * 4
    stages = {"compute": 0.0, "head": 0.0}
    for name, backend in (("float round trip", FloatNullBackend()), ("bytes (the null backend)", NullBackend())):
        seconds, _ = best_of(lambda b=backend: denoise_group(b, None, group, RunConfig(tile=2048), stages), rounds)
        rows[f"runner {name}, batch of 4 (device work; here on the CPU)"] = {"mp_per_s": 4 * mp / seconds}
    return rows


def decode_encode(path: Path, fmt: str = "PNG") -> int:
    """One image's host work outside the runner: decode, encode as fmt (PNG level 1, JPEG q95); returns the bytes."""
    return len(encoded(load_rgb(path), fmt))


def pool_rates(folders: dict[str, Path], count: int) -> dict:
    """Decode + encode (PNG, JPEG) of `count` JPEGs in a pool of one worker per CPU: threads against processes (each
    image whole in one worker: only its path goes in, its byte count comes back). MP/s of wall time, and MP per
    CPU-second of this process and its workers (on one CPU: what a process pool costs over threads)."""
    paths = sorted(folders["jpg"].iterdir())[:count]
    workers = len(os.sched_getaffinity(0))
    mp = count * HEIGHT * WIDTH / 1e6
    rows = {}
    for fmt in ("PNG", "JPEG"):
        for name, pool in (("threads", ThreadPoolExecutor), ("processes", ProcessPoolExecutor)):
            with pool(workers) as executor:
                run_all(executor, paths[:workers], fmt)  # start the workers and their imports
                walls, cpus = [], []
                for _ in range(2):
                    cpu, tick = pool_cpu_seconds(executor), time.perf_counter()
                    run_all(executor, paths, fmt)
                    walls.append(time.perf_counter() - tick)
                    cpus.append(pool_cpu_seconds(executor) - cpu)
            rows[f"decode + encode {fmt.lower()}, {workers} {name}"] = {
                "mp_per_s": mp / min(walls),
                "mp_per_cpu_s": mp / max(min(cpus), 1e-6),
                "images": count,
                "wall_seconds": walls,
                "cpu_seconds": cpus,
            }
    return rows


def pool_cpu_seconds(executor: Executor) -> float:
    """CPU seconds of this process and, for a process pool, of its live workers (/proc/<pid>/stat: utime, stime)."""
    total = time.process_time()
    for pid in getattr(executor, "_processes", None) or {}:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_all(executor: Executor, paths: list[Path], fmt: str) -> int:
    return sum(executor.map(decode_encode, paths, [fmt] * len(paths)))


def run_arm(
    src: Path, fields: dict, count: int, tmp: Path, fallback: bool = False, floats: bool = False, ranks: bool = False
) -> dict:
    """One `run` of the first `count` images of src with the null backend (with floats: the float round trip on the
    host, as before the null backend took bytes; with ranks: one process per CPU, as `torchrun --nproc-per-node`
    runs it); its rate, stages and output bytes."""
    folder = tmp / "src"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for path in sorted(src.iterdir())[:count]:
        os.link(path, folder / path.name)  # a hard link: the listing skips links that lead out of INPUT
    dst = tmp / "out"
    shutil.rmtree(dst, ignore_errors=True)
    cfg = RunConfig(**({"tile": 2048} | fields))
    if ranks:
        ok, megapixels, seconds, cpu, stages = run_ranks(folder, dst, cfg, len(os.sched_getaffinity(0)))
    else:
        cpu = cpu_seconds()
        with without_imagecodecs() if fallback else contextlib.nullcontext():
            summary = denoise_folder(folder, dst, FloatNullBackend() if floats else NullBackend(), cfg)
        cpu = cpu_seconds() - cpu
        ok, megapixels, seconds, stages = summary.ok, summary.megapixels, summary.seconds, dict(summary.stages)
    if ok != count:
        raise RuntimeError(f"{count - ok} of {count} images failed: see {dst}/manifest.jsonl")
    sizes = [p.stat().st_size for p in dst.iterdir() if not p.name.startswith(("manifest", "."))]
    return {
        "images": count,
        "megapixels": megapixels,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "mp_per_s": megapixels / seconds,
        "mp_per_cpu_s": megapixels / max(cpu, 1e-6),
        "cpus_busy": cpu / seconds,
        "stages": stages,
        "bytes_per_image": sum(sizes) / len(sizes),
    }


def run_rank(shard: Shard, port: int, folder: Path, dst: Path, cfg: RunConfig, results) -> None:
    """One rank of a sharded run (in a forked process): its clock and CPU seconds around `denoise_folder`."""
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    with process_group(shard):
        barrier(shard)  # every rank up before the clocks start
        cpu, tick = time.process_time(), time.perf_counter()
        job = denoise_folder(folder, dst, NullBackend(), cfg, shard=shard)
        results.put((shard.rank, tick, time.perf_counter(), time.process_time() - cpu, job, dict(job.stages)))


def run_ranks(folder: Path, dst: Path, cfg: RunConfig, world: int) -> tuple[int, float, float, float, dict]:
    """A run sharded over `world` forked processes: images ok and MP (all ranks), seconds from the first rank's start
    to the last one's end, the ranks' CPU seconds, and the stage seconds summed over the ranks."""
    context = multiprocessing.get_context("fork")  # torch is imported already: no second start-up to time
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = context.Queue()
    procs = [
        context.Process(target=run_rank, args=(Shard(r, world), port, folder, dst, cfg, results)) for r in range(world)
    ]
    for proc in procs:
        proc.start()
    rows = sorted(results.get(timeout=3600) for _ in procs)
    for proc in procs:
        proc.join()
    job, stages = rows[0][4], {k: sum(row[5].get(k, 0.0) for row in rows) for k in rows[0][5]}
    seconds = max(row[2] for row in rows) - min(row[1] for row in rows)
    return job.ok, job.megapixels, seconds, sum(row[3] for row in rows), stages


def arm_options(name: str) -> tuple[bool, bool, bool]:
    """(without imagecodecs, the float round trip on the host, one process per CPU) for an arm of that name."""
    return "without imagecodecs" in name, "float round trip" in name, "process per CPU" in name


def size_arm(name: str, src: Path, fields: dict, args: argparse.Namespace, available: int, tmp: Path) -> dict:
    """A warm-up round of 8 images sizes the arm to about args.seconds a round."""
    warm = run_arm(src, fields, min(8, available), tmp, *arm_options(name))
    per_image = warm["megapixels"] / warm["images"]
    count = max(8, min(available, math.ceil(args.seconds * warm["mp_per_s"] / per_image)))
    return {"run_config": {"tile": 2048} | fields, "warmup": warm, "count": count, "rounds": []}


def summarise_arm(row: dict) -> dict:
    rates, per_cpu = [r["mp_per_s"] for r in row["rounds"]], [r["mp_per_cpu_s"] for r in row["rounds"]]
    return row | {
        "best_mp_per_s": max(rates),
        "median_mp_per_s": statistics.median(rates),
        "best_mp_per_cpu_s": max(per_cpu),
        "median_mp_per_cpu_s": statistics.median(per_cpu),
        "bytes_per_image": row["rounds"][-1]["bytes_per_image"],
    }


def measure_arms(names: list[str], folders: dict[str, Path], args: argparse.Namespace, tmp: Path) -> Iterator[dict]:
    """Each arm sized by a warm-up, then args.rounds rounds with the arms interleaved (round 1 of every arm, then
    round 2, ...: load that comes and goes on a shared core falls on every arm alike); yields the rows so far after
    each round of all arms."""
    rows = {name: size_arm(name, folders[ARMS[name][0]], ARMS[name][1], args, args.images, tmp) for name in names}
    for _ in range(args.rounds):
        for name, row in rows.items():
            fmt, fields = ARMS[name]
            row["rounds"].append(run_arm(folders[fmt], fields, row["count"], tmp, *arm_options(name)))
        yield {name: summarise_arm(row) for name, row in rows.items()}


def scaling(entries: dict) -> dict:
    """For each arm measured on one CPU and on more: best and median MP/s of the larger count over the one-CPU's (and
    MP per CPU-second: below 1 where more CPUs cost more work), against every one-CPU entry."""
    table = {}
    for one_key, one in entries.items():
        for key, entry in entries.items():
            if one["cpus"] != 1 or entry["cpus"] == 1:
                continue
            for arm in set(entry["arms"]) & set(one["arms"]):
                row, base = entry["arms"][arm], one["arms"][arm]
                table[f"{arm}: {one_key} -> {key}"] = {
                    "best": row["best_mp_per_s"] / base["best_mp_per_s"],
                    "median": row["median_mp_per_s"] / base["median_mp_per_s"],
                    "mp_per_cpu_s": row["best_mp_per_cpu_s"] / base["best_mp_per_cpu_s"],
                }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, default=Path(tempfile.gettempdir()) / "fastdenoise-host-pipeline")
    parser.add_argument("--images", type=int, default=160, help="generated inputs of each format (an arm's cap)")
    parser.add_argument("--seconds", type=float, default=10.0, help="about this long a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default="all", help="names joined by commas; all, main (the 2 x 3 grid) for groups")
    parser.add_argument("--parts", default="stages,pools,arms", help="which of stages, pools, arms to measure")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    facts = machine_facts()
    out = args.out or Path(__file__).resolve().parent / "results" / machine_name(facts) / "host_pipeline.json"
    result = json.loads(out.read_text()) if out.is_file() else {"entries": {}}
    key = f"cpus {','.join(map(str, cpus))}"
    entry = result["entries"].setdefault(key, {"stages": {}, "pools": {}, "arms": {}})  # parts not measured are kept
    command = f"taskset -c {','.join(map(str, cpus))} python " + shlex.join(sys.argv)
    earlier = [{"command": entry.pop("command")}] if "command" in entry else entry.get("commands", [])
    entry["commands"] = [*earlier, {"command": command, "loadavg_at_start": os.getloadavg()}]
    entry |= {
        "cpus": len(cpus),
        "nice": os.nice(0),
        "machine": facts,
        "imagecodecs": imagecodecs_module() is not None,
        "image": {"height": HEIGHT, "width": WIDTH},
    }

    def save() -> None:
        result["scaling"] = scaling(result["entries"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))

    folders = make_inputs(args.inputs, args.images)
    parts = args.parts.split(",")
    if "stages" in parts:
        entry["stages"] = stage_rates(folders, 5)
        save()
    if "pools" in parts:
        entry["pools"] = pool_rates(folders, 8 * len(cpus))
        save()
    groups = {"all": list(ARMS), "main": MAIN}
    names = [n for token in args.arms.split(",") for n in groups.get(token, [token])] if "arms" in parts else []
    if unknown := [n for n in names if n not in ARMS]:
        parser.error(f"unknown arms {unknown}; choose from all, main, {', '.join(ARMS)}")
    with tempfile.TemporaryDirectory() as tmp:
        for arms in measure_arms(names, folders, args, Path(tmp)):
            entry["arms"] |= arms
            save()
    for name in names:
        row = entry["arms"][name]
        print(
            f"{name:30s} best {row['best_mp_per_s']:6.1f} MP/s (median {row['median_mp_per_s']:6.1f}), "
            f"{row['best_mp_per_cpu_s']:6.1f} MP per CPU-second (median {row['median_mp_per_cpu_s']:6.1f}), "
            f"{row['bytes_per_image']:,.0f} bytes an image",
            flush=True,
        )
    for name, row in entry["stages"].items():
        print(f"{name:70s} {row['mp_per_s']:7.1f} MP/s {row.get('bits_per_pixel', 0):6.2f} bits/pixel")
    for name, row in entry["pools"].items():
        print(f"{name:70s} {row['mp_per_s']:7.1f} MP/s {row.get('mp_per_cpu_s', 0):7.1f} MP per CPU-second")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
