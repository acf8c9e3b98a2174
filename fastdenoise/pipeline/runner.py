"""Folder runs: every file under INPUT accounted for in a manifest row; every image denoised into a mirrored tree under
OUTPUT (with `predictor`, also each image's top-k classes or segmentation mask). Listing, decoding, compute and writing
overlap; a stop request, a kill or a full disk loses nothing done."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastdenoise import distributed
from fastdenoise.backends import Backend, BackendConfig
from fastdenoise.distributed import Shard
from fastdenoise.encoders import DEFAULT_PNG_LEVEL, PNG_LEVELS
from fastdenoise.images import EXTENSIONS, FORMATS, ImageError, check_pixels, read_header, stored_as_jpeg
from fastdenoise.pipeline.batching import batches, prefetch
from fastdenoise.pipeline.inference import GroupError, denoise_group
from fastdenoise.pipeline.loaders import Decoded, Loader, LoaderKind, make_loader
from fastdenoise.pipeline.lock import OutputLock
from fastdenoise.pipeline.manifest import MANIFEST, Journal, Voucher, load_vouchers, merge
from fastdenoise.pipeline.outputs import (
    Item,
    OutputTree,
    Recorder,
    check_ref,
    open_output,
    output_recipe,
    reference_scores,
    triage,
)
from fastdenoise.pipeline.predictions import Prediction, Predictor, write_predictions
from fastdenoise.pipeline.selection import list_inputs, lists_everything
from fastdenoise.pipeline.summary import Plan, RunSummary, combined

if TYPE_CHECKING:
    from fastdenoise.models.zoo import SigmaRouter

__all__ = ["MANIFEST", "Plan", "RunConfig", "check_folders", "denoise_folder", "plan_run", "stop_on_signals"]


@dataclass(frozen=True)
class RunConfig:
    """Options of `fastdenoise run` that shape the folder run (the backend has its own config)."""

    format: str = "png"
    quality: int = 95
    png_level: int = DEFAULT_PNG_LEVEL  # 0-9: speed against size only (bench/host_pipeline.py), never pixels
    batch: int = 4
    tile: int = 1024
    overlap: int = 64
    overwrite: bool = False
    workers: int = 2
    loader: str = "auto"
    strict: bool = True  # exit code 1 when an input failed (read by the CLI)
    fail_fast: bool = False  # stop at the first input that fails
    # Larger images (by their header) get an error row instead of being decoded: peak memory grows ~50 bytes a pixel
    # of the largest image (decoded, float copies in and out of the tiles), so 64 MP keep a run near 3.3 GB.
    max_pixels: int = 64_000_000
    include: tuple[str, ...] = ()  # globs over paths relative to INPUT: only matching files are taken (none: all)
    exclude: tuple[str, ...] = ()  # globs: matching files are left out (no manifest row)
    ref: str | None = None  # a folder of clean images at the same relative paths: PSNR/SSIM of each output against it
    made_by: dict = field(default_factory=dict)  # what else makes the pixels (weights digest, precision, ensemble)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if self.batch < 1 or self.workers < 1 or self.max_pixels < 1:
            raise ValueError("batch, workers and max_pixels must be >= 1")
        if self.tile % 4 or self.overlap % 4 or not 0 < self.overlap < self.tile:
            raise ValueError(
                f"--tile {self.tile} and --overlap {self.overlap}: both must be multiples of 4, with 0 < overlap < tile"
            )
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.png_level not in PNG_LEVELS:
            raise ValueError(f"png_level must be in 0..9, got {self.png_level}")
        if self.loader not in {k.value for k in LoaderKind}:
            raise ValueError(f"loader must be one of {[k.value for k in LoaderKind]}, got {self.loader!r}")


def recipe_of(cfg: RunConfig) -> dict:
    return output_recipe(cfg.made_by, cfg.format, cfg.quality, cfg.tile, cfg.overlap)


def check_folders(src: Path, dst: Path) -> None:
    """Raise ValueError unless src is an existing folder (or image file) and dst is neither src (the file's folder, or
    the folder of the file a linked src points to), inside it, nor a folder holding it."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ValueError(f"{src}: input does not exist")
    if src.is_file():
        if dst.exists() and not dst.is_dir():
            raise ValueError(f"{dst}: output exists and is not a folder")
        if dst.resolve() in (src.parent.resolve(), src.resolve().parent):  # a linked input: its real file's folder too
            raise ValueError(f"{dst}: output folder may not be the input file's folder: the output could overwrite it")
        return
    if not src.is_dir():
        raise ValueError(f"{src}: input is neither a folder nor a file")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst}: output exists and is not a folder")
    above = next((p for p in dst.absolute().parents if p.exists()), None)  # the folder mkdir would start from
    if above is not None and not above.is_dir():
        raise ValueError(f"{dst}: output cannot be made: {above} is a file, not a folder")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src or real_dst.is_relative_to(real_src):
        raise ValueError(f"{dst}: output folder may not be the input folder or inside it ({src})")
    if real_src.is_relative_to(real_dst):
        raise ValueError(f"{dst}: output folder may not hold the input folder ({src}): outputs could overwrite inputs")


def check_run(src: Path, dst: Path, cfg: RunConfig | None = None) -> None:
    """Raise ValueError unless src and dst pass `check_folders` and src holds at least one image (that cfg selects)."""
    check_folders(src, dst)
    cfg = cfg or RunConfig()
    if not any(e.problem is None for e in list_inputs(src, cfg.include, cfg.exclude)):
        narrowed = " matching --include/--exclude" if cfg.include or cfg.exclude else ""
        kinds = ", ".join(sorted(e[1:] for e in EXTENSIONS))
        raise ValueError(f"{src}: no images found{narrowed} (extensions: {kinds})")
    check_ref(cfg.ref, dst)


class Writes:
    """Outputs being encoded and written by a pool of `workers` threads, oldest first. Their rows are recorded in
    order as they finish; a write that no later one can survive (disk full, read-only) halts the run."""

    def __init__(self, cfg: RunConfig, tree: OutputTree, record: Recorder, summary: RunSummary) -> None:
        self.pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="write")
        self.tree, self.record, self.summary, self.ref, self.max_pixels = tree, record, summary, cfg.ref, cfg.max_pixels
        self.pending: deque[Future] = deque()

    def _save(self, item: Item, image: np.ndarray, prediction: Prediction | None) -> tuple[dict, int | None, float]:
        """Runs in the pool; returns the item's row, the errno that stops the run (if any), the seconds spent."""
        tick = time.perf_counter()
        row, fatal = self.tree.save(item, image, prediction)
        if self.ref is not None and row["status"] == "ok":
            row |= reference_scores(Path(self.ref), item.entry.rel, image, self.max_pixels)
        return row, fatal, time.perf_counter() - tick

    def submit(self, item: Item, image: np.ndarray, prediction: Prediction | None) -> None:
        self.pending.append(self.pool.submit(self._save, item, image, prediction))

    def collect(self, block: bool) -> None:
        """Record the rows of finished writes (with block, of all of them), oldest first."""
        while self.pending and (block or self.pending[0].done()):
            row, fatal, seconds = self.pending.popleft().result()
            if row["status"] == "ok":
                self.summary.stages["write"] += seconds
                self.summary.megapixels += row["height"] * row["width"] / 1e6
            self.record(row)
            if fatal is not None:
                self.record.halt(f"cannot write to {self.tree.dst}: {os.strerror(fatal)}", "output")

    def throttle(self, most: int) -> None:
        """Back-pressure: wait until at most `most` writes are in flight (the wait counts as compute idling)."""
        tick = time.perf_counter()
        self.collect(block=False)
        while len(self.pending) > most:
            self.pending[0].exception()  # wait for the oldest write
            self.collect(block=False)
        self.summary.stages["idle"] += time.perf_counter() - tick

    def close(self) -> None:
        """Let every write finish and record its row (not even that when the manifest itself cannot be written: what it
        lacks is redone by the next run)."""
        self.pool.shutdown(wait=True)
        with suppress(OSError):
            self.collect(block=True)


@dataclass
class Run:
    """What the stages of one folder run share: its settings, where rows go, what earlier runs did, the stop flag."""

    cfg: RunConfig
    backend: Backend | BackendConfig  # a config on Ray: each actor builds its own backend
    predictor: Predictor | None
    tree: OutputTree
    record: Recorder
    summary: RunSummary
    stop: threading.Event
    journal: Journal
    lock: OutputLock
    vouchers: dict[str, Voucher]
    router: SigmaRouter | None = None  # --sigma auto, JPEG inputs: the weights for each image

    def error(self, item: Item, message: str) -> None:
        self.record(self.tree.error_row(item, message))


def open_run(
    dst: Path,
    backend: Backend | BackendConfig,
    cfg: RunConfig,
    predictor: Predictor | None,
    on_image: Callable[[dict], None] | None,
    stop: threading.Event | None,
    rank: int = 0,
    world: int = 1,
) -> Run:
    """Make dst, take this rank's output lock, read what earlier runs vouch for and open this rank's manifest part."""
    dst.mkdir(parents=True, exist_ok=True)
    tree = OutputTree(
        dst,
        cfg.quality,
        predictor.key if predictor else None,
        predictor.palette if predictor else None,
        recipe_of(cfg),
        cfg.png_level,
    )
    summary, stop = RunSummary(), stop if stop is not None else threading.Event()
    lock, vouchers, journal = open_output(dst, rank, world)
    summary.taken_over = lock.taken_over
    record = Recorder(journal, summary, stop, on_image, cfg.fail_fast)
    return Run(cfg, backend, predictor, tree, record, summary, stop, journal, lock, vouchers)


def finish(run: Run, shard: Shard, finished: bool, failure: str | None = None) -> list[RunSummary]:
    """Close this rank's manifest part, note why the run stopped (a `failure` of the Ray pipeline, a stop request),
    let rank 0 merge the parts, release the lock. Returns every rank's summary, in rank order."""
    summary = run.summary
    try:
        run.journal.close()
        if failure is not None and summary.stopped is None:
            summary.stopped, summary.cause = failure, "cluster"
        if run.stop.is_set() and summary.stopped is None:
            summary.stopped, summary.cause = "stop requested", "request"
        complete = distributed.all_complete(shard, finished and summary.stopped is None)
        parts = distributed.gather(summary, shard)
        if shard.rank == 0:
            merge(run.tree.dst, shard.world, complete)
        return parts
    finally:
        run.lock.release()


def listed(run: Run, src: Path, shard: Shard) -> Iterator[Item]:
    """Stage 1, in the prefetch thread: this shard's files under src, each either recorded at once (ignored, cannot
    stat, done earlier) or passed on to be decoded."""
    suffix = FORMATS[run.cfg.format]
    segment = run.predictor is not None and run.predictor.task == "segment"
    for entry in distributed.take(list_inputs(src, run.cfg.include, run.cfg.exclude), shard):
        if run.stop.is_set():
            return
        plan = triage(entry, run.tree, suffix, segment, run.vouchers, run.cfg.overwrite)
        if isinstance(plan, dict):
            run.record(plan)
        else:
            yield plan


def decoded_images(run: Run, decoded: Iterator[Decoded], writes: Writes) -> Iterator[tuple[Item, np.ndarray]]:
    """Stage 2, on the compute thread: decoded images in listing order; decode failures recorded; finished writes
    recorded between images; ends early once the run is asked to stop."""
    stages = run.summary.stages
    tick = time.perf_counter()
    for d in decoded:
        stages["idle"] += time.perf_counter() - tick
        stages["decode"] += d.seconds
        if d.error is not None or d.image is None:
            run.error(d.item, str(d.error))
        elif run.router is None:
            yield d.item, d.image
        elif (routed := route(run, d.item, d.image)) is not None:
            yield routed, d.image
        writes.collect(block=False)
        if run.stop.is_set():
            return
        tick = time.perf_counter()


def route(run: Run, item: Item, image: np.ndarray) -> Item | None:
    """A routed run (--sigma auto, JPEG inputs): the item with the weights chosen for it (and its estimated noise
    level under --sigma auto; None, with an error row, where no estimate can be made)."""
    tick = time.perf_counter()
    try:
        sigma, weights, level = run.router.weights(image, stored_as_jpeg(item.path))  # type: ignore[union-attr]
    except ValueError as err:
        run.error(item, f"cannot estimate its noise level ({err}); run it with --sigma S")
        return None
    finally:
        run.summary.stages["estimate"] += time.perf_counter() - tick
    return replace(item, sigma=sigma, weights=weights, level=level)


def compute(run: Run, group: list[tuple[Item, np.ndarray]], writes: Writes) -> None:
    """Stage 3: denoise one group (and run the head), hand each output to the writers; a group that fails (out of
    memory, say) gives each of its images an error row and the run goes on."""
    try:
        images = [image for _, image in group]
        backend = run.backend if run.router is None else run.router.backend(*group[0][0].route)
        results, predictions, problems = denoise_group(backend, run.predictor, images, run.cfg, run.summary.stages)
    except GroupError as err:
        for item, _ in group:
            run.error(item, str(err))
        return
    for (item, _), result, prediction, problem in zip(group, results, predictions, problems):
        if problem is not None:
            run.error(item, problem)
        else:
            writes.submit(item, result, prediction)


def batch_key(cfg: RunConfig) -> Callable[[tuple[Item, np.ndarray]], tuple | None]:
    """Images batch by exact size (each gets exactly what it would alone), weights and level (--sigma auto); one
    larger than the tile goes alone."""
    return lambda pair: None if max(pair[1].shape[:2]) > cfg.tile else (*pair[1].shape[:2], *pair[0].route)


def denoise_folder(
    src: Path,
    dst: Path,
    backend: Backend,
    cfg: RunConfig,
    on_image: Callable[[dict], None] | None = None,
    *,
    stop: threading.Event | None = None,
    shard: Shard | None = None,
    loader: Loader | None = None,
    predictor: Predictor | None = None,
    router: SigmaRouter | None = None,
) -> RunSummary:
    """Denoise every image under src into dst; one manifest row per file found; one bad file never stops the run.

    Setting `stop` (the CLI does on SIGINT/SIGTERM) ends the run after the batch in flight, its outputs written and
    the manifest flushed; a later run with the same arguments does the rest.
    `predictor` runs a frozen head on each denoised image (8-bit, as written): classify keeps the top-k in the image's
    manifest row and rank 0 writes dst/predictions.csv at the end; segment writes `<rel stem>.mask.png` beside the
    output. Images larger than the tile are denoised tile by tile, but the head sees them whole.
    `router` picks each image's weights (--sigma auto: by its estimated noise level; JPEG inputs: the JPEG model);
    `backend` is the router's for the default weights (the loader's device). Rows then hold `weights` (and
    `sigma_est` under --sigma auto)."""
    src, dst, shard = Path(src), Path(dst), shard or Shard()
    check_run(src, dst, cfg)
    loader = loader or make_loader(cfg.loader, cfg.workers, cfg.batch, backend.device, max_pixels=cfg.max_pixels)
    run = open_run(dst, backend, cfg, predictor, on_image, stop, shard.rank, shard.world)
    run.router = router
    summary = run.summary
    start, finished = time.perf_counter(), False  # finished stays False when an error ends the run
    try:
        writes = Writes(cfg, run.tree, run.record, summary)
        try:
            with closing(prefetch(loader(listed(run, src, shard)), depth=2 * cfg.batch)) as decoded:
                for group in batches(decoded_images(run, decoded, writes), batch_key(cfg), cfg.batch, 4 * cfg.batch):
                    if run.stop.is_set():
                        break
                    compute(run, group, writes)
                    writes.throttle(2 * cfg.batch + 2 * cfg.workers)
            writes.collect(block=True)
        finally:
            writes.close()
        finished = lists_everything(src, cfg.include, cfg.exclude)  # else the manifest's other rows are kept
    finally:
        summary.seconds = time.perf_counter() - start  # before the merge: what the other ranks see
        parts = finish(run, shard, finished)
    job = combined(parts) if shard.world > 1 else summary
    job.seconds = max(job.seconds, time.perf_counter() - start)
    if shard.rank == 0 and predictor is not None and predictor.task == "classify":
        job.predictions = str(write_predictions(dst, predictor.key)[0])
    return job


def plan_run(src: Path, dst: Path, cfg: RunConfig, shard: Shard | None = None) -> Plan:
    """Count what `denoise_folder(src, dst, ..., cfg)` would do without writing or creating anything."""
    check_run(src, dst, cfg)
    tree, plan = OutputTree(Path(dst), made_by=recipe_of(cfg)), Plan()
    vouchers = load_vouchers(Path(dst)) if Path(dst).is_dir() else {}
    for entry in distributed.take(list_inputs(src, cfg.include, cfg.exclude), shard or Shard()):
        item = triage(entry, tree, FORMATS[cfg.format], False, vouchers, cfg.overwrite)
        if isinstance(item, dict):
            plan.done += item["status"] == "skipped"
            plan.ignored += item["status"] == "ignored"
            if item["status"] == "error":
                plan.fail(item["input"], item["error"])
            continue
        try:
            header = read_header(item.path)
            check_pixels(item.path, header.height, header.width, cfg.max_pixels)
        except ImageError as err:
            plan.fail(item.entry.rel, str(err))
            continue
        plan.todo += 1
        plan.megapixels += header.height * header.width / 1e6
    return plan


@contextmanager
def stop_on_signals(
    stop: threading.Event, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[list[int]]:
    """While inside, SIGINT / SIGTERM set `stop` (the run ends after the batch in flight) and are listed in the
    yielded list; a second SIGINT interrupts at once. Previous handlers come back on exit."""
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in signals}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
