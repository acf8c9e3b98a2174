"""Folder runs: every image under INPUT denoised into a mirrored tree under OUTPUT, with a manifest row per input."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastdenoise.backends import Backend
from fastdenoise.images import FORMATS, ImageError, iter_images, load_rgb, save_rgb
from fastdenoise.noise import to_uint8
from fastdenoise.tiling import denoise_tiled

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class RunConfig:
    """Options of `fastdenoise run` that shape the folder run (the backend has its own config)."""

    format: str = "png"
    quality: int = 95
    batch: int = 4
    tile: int = 1024
    overlap: int = 64
    overwrite: bool = False
    workers: int = 2

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if self.batch < 1 or self.workers < 1:
            raise ValueError("batch and workers must be >= 1")
        if self.tile % 4 or self.overlap % 4 or not 0 < self.overlap < self.tile:
            raise ValueError(f"tile ({self.tile}) and overlap ({self.overlap}) must be multiples of 4, 0 < overlap < tile")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")


@dataclass
class RunSummary:
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def mp_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds else 0.0


def check_folders(src: Path, dst: Path) -> None:
    """Raise ValueError unless src is an existing folder and dst is neither src nor inside it."""
    if not src.exists():
        raise ValueError(f"{src}: input folder does not exist")
    if not src.is_dir():
        raise ValueError(f"{src}: input is not a folder")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src or real_dst.is_relative_to(real_src):
        raise ValueError(f"{dst}: output folder may not be the input folder or inside it ({src})")


def output_path(src: Path, dst: Path, path: Path, fmt: str) -> Path:
    return dst / path.relative_to(src).with_suffix(FORMATS[fmt])


def prefetch(paths: list[Path], workers: int, depth: int) -> Iterator[tuple[Path, Future]]:
    """Decode ahead of the consumer in a thread pool, at most `depth` images in flight."""
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: list[tuple[Path, Future]] = []
        for path in paths:
            pending.append((path, pool.submit(load_rgb, path)))
            if len(pending) > depth:
                yield pending.pop(0)
        yield from pending


def denoise_folder(
    src: Path,
    dst: Path,
    backend: Backend,
    cfg: RunConfig,
    on_image: Callable[[dict], None] | None = None,
) -> RunSummary:
    """Denoise every image under src into dst; one manifest row per input; one bad file never stops the run."""
    src, dst = Path(src), Path(dst)
    check_folders(src, dst)
    paths = list(iter_images(src))
    if not paths:
        raise ValueError(f"{src}: no images found (extensions: png, jpg, jpeg, bmp, tif, tiff, webp, ppm, pgm)")
    dst.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    start = time.perf_counter()
    manifest = (dst / MANIFEST).open("w")
    writer = ThreadPoolExecutor(cfg.workers, thread_name_prefix="write")
    writes: list[tuple[dict, Future]] = []
    buckets: dict[tuple[int, int], list[tuple[Path, Path, np.ndarray]]] = defaultdict(list)

    def record(row: dict) -> None:
        summary.ok += row["status"] == "ok"
        summary.skipped += row["status"] == "skipped"
        summary.failed += row["status"] == "error"
        manifest.write(json.dumps(row) + "\n")
        manifest.flush()
        if on_image:
            on_image(row)

    def row(path: Path, out: Path, status: str, error: str | None = None, shape: tuple[int, ...] = ()) -> dict:
        entry = {"input": str(path.relative_to(src)), "status": status, "output": str(out.relative_to(dst)), "error": error}
        return entry | ({"height": shape[0], "width": shape[1]} if shape else {})

    def drain(block: bool) -> None:
        while writes and (block or writes[0][1].done()):
            entry, future = writes.pop(0)
            try:
                future.result()
            except OSError as err:
                entry = entry | {"status": "error", "error": f"cannot write output: {err}"}
            record(entry)

    def write(path: Path, out: Path, image: np.ndarray) -> None:
        summary.megapixels += image.shape[0] * image.shape[1] / 1e6
        writes.append((row(path, out, "ok", shape=image.shape), writer.submit(timed_save, image, out)))

    def timed_save(image: np.ndarray, out: Path) -> None:
        tick = time.perf_counter()
        save_rgb(image, out, cfg.quality)
        summary.stages["write"] += time.perf_counter() - tick

    def flush(key: tuple[int, int]) -> None:
        items = buckets.pop(key)
        tick = time.perf_counter()
        try:
            x = torch.from_numpy(np.stack([im for _, _, im in items])).permute(0, 3, 1, 2).float().div_(255)
            y = backend(x.to(backend.device)).cpu()
            results = [to_uint8(t.permute(1, 2, 0).numpy()) for t in y]
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: the batch fails, the run goes on
            for path, out, _ in items:
                record(row(path, out, "error", f"denoising failed: {err}"))
            return
        finally:
            summary.stages["compute"] += time.perf_counter() - tick
        for (path, out, _), result in zip(items, results):
            write(path, out, result)

    try:
        todo = []
        for path in paths:
            out = output_path(src, dst, path, cfg.format)
            if out.exists() and not cfg.overwrite:
                record(row(path, out, "skipped", "output exists (use --overwrite)"))
            else:
                todo.append(path)
        tick = time.perf_counter()
        for path, future in prefetch(todo, cfg.workers, depth=2 * cfg.batch):
            out = output_path(src, dst, path, cfg.format)
            try:
                image = future.result()
            except ImageError as err:
                record(row(path, out, "error", str(err)))
                continue
            summary.stages["decode_wait"] += time.perf_counter() - tick
            h, w = image.shape[:2]
            if max(h, w) > cfg.tile:
                t0 = time.perf_counter()
                x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255)
                try:
                    result = to_uint8(denoise_tiled(backend, x, cfg.tile, cfg.overlap, cfg.batch)[0].permute(1, 2, 0).numpy())
                except (RuntimeError, ValueError) as err:
                    record(row(path, out, "error", f"denoising failed: {err}"))
                    continue
                finally:
                    summary.stages["compute"] += time.perf_counter() - t0
                write(path, out, result)
            else:
                buckets[(h, w)].append((path, out, image))
                if len(buckets[(h, w)]) == cfg.batch:
                    flush((h, w))
            drain(block=False)
            tick = time.perf_counter()
        for key in list(buckets):
            flush(key)
        drain(block=True)
    finally:
        writer.shutdown(wait=True)
        drain(block=True)
        manifest.close()
        summary.seconds = time.perf_counter() - start
    return summary


def summary_dict(summary: RunSummary) -> dict:
    return asdict(summary) | {"mp_per_s": summary.mp_per_s, "stages": dict(summary.stages)}
