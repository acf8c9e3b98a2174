"""Folder runs: every file under INPUT accounted for in a manifest row; every image denoised into a mirrored tree under
OUTPUT (with `predictor`, also each image's top-k classes or segmentation mask). Listing, decoding, compute and writing
overlap; a stop request, a kill or a full disk loses nothing done."""

from __future__ import annotations

import errno
import os
import queue
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from fastdenoise import distributed
from fastdenoise.backends import Backend
from fastdenoise.distributed import Shard
from fastdenoise.images import EXTENSIONS, FORMATS, Entry, iter_entries, make_folders
from fastdenoise.loaders import Loader, LoaderKind, make_loader
from fastdenoise.lock import OutputLock
from fastdenoise.manifest import MANIFEST, Journal, Voucher, load_vouchers, merge
from fastdenoise.predictions import MASK_SUFFIX, Prediction, Predictor, write_predictions
from fastdenoise.tiling import denoise_tiled
from fastdenoise.writers import output_path, write_image, write_mask

__all__ = ["MANIFEST", "RunConfig", "RunSummary", "check_folders", "denoise_folder", "summary_dict"]

# Output errors after which no later write can succeed either: the run stops, a later run resumes.
FATAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
T = TypeVar("T")


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
    loader: str = "auto"
    strict: bool = True  # exit code 1 when an input failed (read by the CLI)
    fail_fast: bool = False  # stop at the first input that fails
    # Larger images (by their header) get an error row instead of being decoded: peak memory grows ~50 bytes a pixel
    # of the largest image (decoded, float copies in and out of the tiles), so 64 MP keep a run near 3.3 GB.
    max_pixels: int = 64_000_000

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if self.batch < 1 or self.workers < 1 or self.max_pixels < 1:
            raise ValueError("batch, workers and max_pixels must be >= 1")
        if self.tile % 4 or self.overlap % 4 or not 0 < self.overlap < self.tile:
            raise ValueError(
                f"tile ({self.tile}) and overlap ({self.overlap}) must be multiples of 4, 0 < overlap < tile"
            )
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.loader not in {k.value for k in LoaderKind}:
            raise ValueError(f"loader must be one of {[k.value for k in LoaderKind]}, got {self.loader!r}")


@dataclass
class RunSummary:
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    # decode and write are summed over their worker threads; idle is the compute thread waiting for input or writers
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    stopped: str | None = None  # why the run ended before every input was done (None: it finished)
    cause: str | None = None  # what stopped it: "request" (stop set from outside), "fail_fast", "output" (unwritable)
    masks: int = 0  # --task segment: done and skipped images with their mask
    predictions: str | None = None  # --task classify: predictions.csv, written by rank 0 after the merge
    taken_over: str | None = None  # the dead run whose output lock this run took over

    @property
    def mp_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds else 0.0

    @property
    def images_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def check_folders(src: Path, dst: Path) -> None:
    """Raise ValueError unless src is an existing folder and dst is neither src, inside it, nor a folder holding it."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ValueError(f"{src}: input folder does not exist")
    if not src.is_dir():
        raise ValueError(f"{src}: input is not a folder")
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


@dataclass(frozen=True, slots=True)
class Item:
    """An image to denoise: where it is, where its output (and mask) goes, and the input's size and mtime when listed."""

    entry: Entry
    out: Path
    size: int
    mtime_ns: int
    mask: Path | None = None

    @property
    def path(self) -> Path:
        return self.entry.path


def prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """Run an iterator in a background thread, at most `depth` items ahead of the consumer; closing stops it."""
    ready: queue.Queue = queue.Queue(depth)
    halt = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not halt.is_set():
                    try:
                        ready.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        pass
                if halt.is_set():
                    break
        except BaseException as err:  # re-raised in the consumer
            ready.put((end, err))
            return
        finally:
            getattr(items, "close", lambda: None)()
        ready.put((end, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is end:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        halt.set()
        while thread.is_alive():
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1] on device; uint8 crosses the bus (4x fewer bytes)."""
    x = torch.from_numpy(batch)
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(255)


def quantize(y: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> the same in 0..255, clipped and rounded half to even (as `noise.to_uint8`)."""
    return y.mul(255).round_().clamp_(0, 255)


def to_images(q: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) quantized float -> (N, H, W, 3) uint8 on the CPU."""
    return q.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def collides_with_mask(entry: Entry) -> bool:
    """An input `x.mask.<ext>` beside an image `x.<ext>`: with masks on, its PNG output would be x's mask."""
    marker = MASK_SUFFIX.removesuffix(".png")  # ".mask"
    base = entry.path.stem.removesuffix(marker)
    if base == entry.path.stem or not base:
        return False
    with suppress(OSError):
        for sibling in entry.path.parent.iterdir():
            if sibling.stem == base and sibling.suffix.lower() in EXTENSIONS and not sibling.name.startswith("."):
                return True
    return False


def check_run(src: Path, dst: Path) -> None:
    """Raise ValueError unless src and dst pass `check_folders` and src holds at least one image."""
    check_folders(src, dst)
    if not any(e.problem is None for e in iter_entries(src)):
        raise ValueError(f"{src}: no images found (extensions: {', '.join(sorted(e[1:] for e in EXTENSIONS))})")


def open_output(dst: Path, rank: int = 0) -> tuple[OutputLock, dict[str, Voucher], Journal]:
    """Take this rank's output lock (LockError, a ValueError, while another live run writes here), then read what
    earlier runs vouch for and open this rank's manifest part; the lock is released again if either fails."""
    lock = OutputLock(dst, rank)
    try:
        return lock, load_vouchers(dst), Journal(dst, rank)
    except BaseException:
        lock.release()
        raise


class Recorder:
    """Rows in: each written to the journal, counted into the summary and passed to `on_image`; with fail_fast, an
    error row stops the run (`halt` names why)."""

    def __init__(
        self, journal: Journal, summary: RunSummary, stop: threading.Event, on_image: Callable[[dict], None] | None,
        fail_fast: bool,
    ) -> None:  # fmt: skip
        self.journal, self.summary, self.stop, self.on_image, self.fail_fast = journal, summary, stop, on_image, fail_fast
        self.lock = threading.Lock()

    def halt(self, reason: str, cause: str) -> None:
        if not self.stop.is_set():
            self.summary.stopped, self.summary.cause = reason, cause
        self.stop.set()

    def __call__(self, row: dict) -> None:
        status, summary = row["status"], self.summary
        with self.lock:
            self.journal.write(row)
            summary.ok += status == "ok"
            summary.skipped += status == "skipped"
            summary.failed += status == "error"
            summary.ignored += status == "ignored"
            summary.masks += status in ("ok", "skipped") and row.get("mask") is not None
        if self.on_image:
            self.on_image(row)
        if status == "error" and self.fail_fast:
            self.halt(f"--fail-fast: {row['input']} failed", "fail_fast")


class OutputTree:
    """A run's output folder: rows name files relative to it; outputs (and masks) are written atomically and never
    through a folder that leads outside it. `head` is the predictor's key (None without --task)."""

    def __init__(self, dst: Path, quality: int = 95, head: str | None = None, palette: np.ndarray | None = None) -> None:
        self.dst, self.quality, self.head, self.palette = Path(dst), quality, head, palette
        self.safe_folders: set[Path] = set()

    def relative(self, path: Path) -> str:
        return path.relative_to(self.dst).as_posix()

    def error_row(self, item: Item, message: str) -> dict:
        return {"input": item.entry.rel, "status": "error", "output": self.relative(item.out), "error": message}

    def write(self, item: Item, image: np.ndarray, prediction: Prediction | None) -> tuple[os.stat_result, dict]:
        """Write the output (and mask); returns the output's stat and the row's prediction fields."""
        folder = item.out.parent
        if folder not in self.safe_folders:
            make_folders(self.dst, folder)  # never through a symlink planted in the output tree
            self.safe_folders.add(folder)
        st = write_image(image, item.out, self.quality)
        facts: dict = {} if prediction is None else {"head": self.head}
        if prediction is not None and prediction.top is not None:
            facts["top"] = prediction.top
        if prediction is not None and prediction.labels is not None and item.mask is not None:
            mask = write_mask(prediction.labels, item.mask, self.palette)
            facts |= {"mask": self.relative(item.mask), "mask_size": mask.st_size, "mask_mtime_ns": mask.st_mtime_ns}
        return st, facts

    def save(self, item: Item, image: np.ndarray, prediction: Prediction | None) -> tuple[dict, int | None]:
        """Write one image's outputs; returns its row (ok, or error with the reason) and, where no later write can
        succeed either (disk full, read-only), the errno that should stop the run."""
        try:
            st, facts = self.write(item, image, prediction)
        except OSError as err:
            fatal = err.errno if err.errno in FATAL_WRITE_ERRORS else None
            return self.error_row(item, f"cannot write output: {err}"), fatal
        except ValueError as err:
            return self.error_row(item, f"cannot encode output: {err}"), None
        h, w = image.shape[:2]
        return {"input": item.entry.rel, "status": "ok", "output": self.relative(item.out), "error": None, "height": h, "width": w,
                "input_size": item.size, "input_mtime_ns": item.mtime_ns, "output_size": st.st_size,
                "output_mtime_ns": st.st_mtime_ns} | facts, None  # fmt: skip


def triage(
    entry: Entry, tree: OutputTree, suffix: str, segment: bool, vouchers: dict[str, Voucher], overwrite: bool
) -> Item | dict:
    """What one listed file needs: an Item to denoise, or its finished row (ignored, cannot stat, done earlier)."""
    if entry.problem:
        return {"input": entry.rel, "status": "ignored", "output": None, "error": entry.problem}
    out = output_path(tree.dst, entry.rel, suffix)
    if segment and suffix == ".png" and collides_with_mask(entry):
        return {"input": entry.rel, "status": "ignored", "output": None,
                "error": "output name is the mask of an image beside it (--task segment)"}  # fmt: skip
    try:
        st = entry.path.stat()
    except OSError as err:
        return {"input": entry.rel, "status": "error", "output": tree.relative(out), "error": f"cannot stat: {err}"}
    voucher = vouchers.pop(entry.rel, None)
    if voucher and not overwrite and voucher.holds(tree.dst, tree.relative(out), st, tree.head):
        return {"input": entry.rel, "status": "skipped", "output": voucher.output, "error": "done by an earlier run"} | voucher.fields()
    mask = output_path(tree.dst, entry.rel, MASK_SUFFIX) if segment else None
    return Item(entry, out, st.st_size, st.st_mtime_ns, mask)


NON_FINITE = "denoising gave NaN or Inf values (broken weights, or a precision too narrow for them)"


class GroupError(Exception):
    """A batch that could not be denoised (or its head run); the message is the reason, for each image's row."""


def denoise_group(
    backend: Backend, predictor: Predictor | None, images: list[np.ndarray], cfg: RunConfig, stages: dict[str, float]
) -> tuple[np.ndarray, list[Prediction | None], list[str | None]]:
    """Equal-size (H, W, 3) uint8 images -> their denoised images (N, H, W, 3) uint8, with a predictor each one's
    prediction, and each one's problem (None, or why its output must not be written: NaN/Inf values); one image
    larger than the tile goes alone, tile by tile (memory bounded by the tile). Adds the seconds spent to
    stages["compute"] and stages["head"]; raises GroupError (out of memory, say) for the whole group."""
    tick = time.perf_counter()
    try:
        if max(images[0].shape[:2]) > cfg.tile:
            x = torch.from_numpy(images[0]).permute(2, 0, 1)[None].float().div_(255)
            y = denoise_tiled(backend, x, cfg.tile, cfg.overlap, cfg.batch)
        else:
            y = backend(to_device(np.stack(images), backend.device))
        finite = torch.isfinite(y).flatten(1).all(1).tolist()  # NaN would be written as black, Inf as white
        y = quantize(y)
        results = to_images(y)
    except (RuntimeError, ValueError) as err:
        raise GroupError(f"denoising failed: {err}") from err
    finally:
        stages["compute"] += time.perf_counter() - tick
    problems = [None if ok else NON_FINITE for ok in finite]
    if predictor is None:
        return results, [None] * len(images), problems
    tick = time.perf_counter()
    try:  # the head sees the 8-bit image as written; a large image whole, not tiled
        return results, list(predictor(y.div_(255))), problems
    except (RuntimeError, ValueError) as err:
        raise GroupError(f"{predictor.task} head failed: {err}") from err
    finally:
        stages["head"] += time.perf_counter() - tick


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
) -> RunSummary:
    """Denoise every image under src into dst; one manifest row per file found; one bad file never stops the run.

    Setting `stop` (the CLI does on SIGINT/SIGTERM) ends the run after the batch in flight, its outputs written and
    the manifest flushed; a later run with the same arguments does the rest.
    `predictor` runs a frozen head on each denoised image (8-bit, as written): classify keeps the top-k in the image's
    manifest row and rank 0 writes dst/predictions.csv at the end; segment writes `<rel stem>.mask.png` beside the
    output. Images larger than the tile are denoised tile by tile, but the head sees them whole."""
    src, dst = Path(src), Path(dst)
    shard = shard or Shard()
    check_run(src, dst)
    dst.mkdir(parents=True, exist_ok=True)
    stop = stop if stop is not None else threading.Event()
    loader = loader or make_loader(cfg.loader, cfg.workers, cfg.batch, backend.device, max_pixels=cfg.max_pixels)
    suffix = FORMATS[cfg.format]
    segment = predictor is not None and predictor.task == "segment"
    head = predictor.key if predictor else None
    tree = OutputTree(dst, cfg.quality, head, predictor.palette if predictor else None)
    summary = RunSummary()
    stages = summary.stages
    output_lock, vouchers, journal = open_output(dst, shard.rank)
    summary.taken_over = output_lock.taken_over
    record = Recorder(journal, summary, stop, on_image, cfg.fail_fast)
    halt = record.halt

    def error(item: Item, message: str) -> None:
        record(tree.error_row(item, message))

    def inputs() -> Iterator[Item]:
        """Runs in the prefetch thread: decides per listed file, streams the images to decode."""
        for entry in distributed.take(iter_entries(src), shard):
            if stop.is_set():
                return
            plan = triage(entry, tree, suffix, segment, vouchers, cfg.overwrite)
            if isinstance(plan, dict):
                record(plan)
            else:
                yield plan

    def save(item: Item, image: np.ndarray, prediction: Prediction | None) -> tuple[dict, int | None, float]:
        """Runs in the writer pool; returns the item's row, the errno that stops the run (if any), the seconds spent."""
        tick = time.perf_counter()
        row, fatal = tree.save(item, image, prediction)
        return row, fatal, time.perf_counter() - tick

    writes: deque[tuple[Item, Future]] = deque()

    def collect(block: bool) -> None:
        while writes and (block or writes[0][1].done()):
            item, future = writes.popleft()
            row, fatal, seconds = future.result()
            if row["status"] == "ok":
                stages["write"] += seconds
                summary.megapixels += row["height"] * row["width"] / 1e6
            record(row)
            if fatal is not None:
                halt(f"cannot write to {dst}: {os.strerror(fatal)}", "output")

    def compute(group: list[tuple[Item, np.ndarray]], writer: ThreadPoolExecutor) -> None:
        try:
            images = [image for _, image in group]
            results, predictions, problems = denoise_group(backend, predictor, images, cfg, stages)
        except GroupError as err:  # e.g. out of memory: the batch fails, the run goes on
            for item, _ in group:
                error(item, str(err))
            return
        for (item, _), result, prediction, problem in zip(group, results, predictions, problems):
            if problem is not None:
                error(item, problem)
                continue
            writes.append((item, writer.submit(save, item, result, prediction)))

    start = time.perf_counter()
    buckets: dict[tuple[int, int], list[tuple[Item, np.ndarray]]] = {}
    held = 0  # images waiting in buckets; past `limit` the oldest bucket goes as a partial batch, bounding memory
    limit, max_writes = 4 * cfg.batch, 2 * cfg.batch + 2 * cfg.workers
    finished = False  # False in the finally below: stopped by an error (the manifest keeps earlier runs' rows)
    try:
        with ThreadPoolExecutor(cfg.workers, thread_name_prefix="write") as writer:
            with closing(prefetch(loader(inputs()), depth=2 * cfg.batch)) as decoded:
                tick = time.perf_counter()
                for d in decoded:
                    stages["idle"] += time.perf_counter() - tick
                    stages["decode"] += d.seconds
                    if d.error is not None or d.image is None:
                        error(d.item, str(d.error))
                    elif max(d.image.shape[:2]) > cfg.tile:
                        compute([(d.item, d.image)], writer)
                    else:  # bucket by exact size: each image gets exactly what it would get alone
                        key = d.image.shape[:2]
                        bucket = buckets.setdefault(key, [])
                        bucket.append((d.item, d.image))
                        held += 1
                        if len(bucket) == cfg.batch:
                            held -= len(bucket)
                            compute(buckets.pop(key), writer)
                        elif held > limit:
                            oldest = next(iter(buckets))
                            held -= len(buckets[oldest])
                            compute(buckets.pop(oldest), writer)
                    collect(block=False)
                    wait = time.perf_counter()
                    while len(writes) > max_writes:
                        collect(block=False)
                        if len(writes) > max_writes:
                            writes[0][1].exception()  # wait for the oldest write
                    stages["idle"] += time.perf_counter() - wait
                    if stop.is_set():
                        break
                    tick = time.perf_counter()
            while buckets and not stop.is_set():
                compute(buckets.pop(next(iter(buckets))), writer)
            collect(block=True)
        finished = True
    finally:
        with suppress(OSError):  # the manifest itself is unwritable: what it lacks is redone by the next run
            collect(block=True)
        try:
            journal.close()
            if stop.is_set() and summary.stopped is None:
                summary.stopped, summary.cause = "stop requested", "request"
            complete = distributed.all_complete(shard, finished and summary.stopped is None)
            if shard.rank == 0:
                merge(dst, shard.world, complete)
        finally:
            output_lock.release()
        summary.seconds = time.perf_counter() - start
    if shard.rank == 0 and predictor is not None and predictor.task == "classify":
        summary.predictions = str(write_predictions(dst, predictor.key)[0])
    return summary


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


def summary_dict(summary: RunSummary) -> dict:
    values = {f.name: getattr(summary, f.name) for f in fields(summary)}  # asdict cannot copy the defaultdict
    return values | {"mp_per_s": summary.mp_per_s, "images_per_s": summary.images_per_s, "stages": dict(summary.stages)}
