"""Loaders: files in, decoded (H, W, 3) uint8 RGB images (or the reason a file failed) out, in a stream.

`PilLoader` decodes with Pillow in a thread pool. `DaliLoader` decodes with NVIDIA DALI (nvJPEG on a GPU, libjpeg-turbo
on the CPU) and hands Pillow the files DALI would decode differently, so the two loaders give the same pixels."""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, NamedTuple, Protocol, TypeVar

import numpy as np
import torch

from fastdenoise.choices import LoaderKind
from fastdenoise.images import Header, ImageError, load_rgb, read_header, too_large


class HasPath(Protocol):
    @property
    def path(self): ...


T = TypeVar("T", bound=HasPath)


class Decoded(NamedTuple, Generic[T]):
    """One loader result: the item it was given, its image or the error, and the decode seconds spent on it."""

    item: T
    image: np.ndarray | None
    error: ImageError | None
    seconds: float


class Loader(Protocol):
    """items (anything with a `.path`) -> one `Decoded` per item, in any order, decoding ahead of the consumer."""

    def __call__(self, items: Iterable[T]) -> Iterator[Decoded[T]]: ...


def timed_load(path, max_pixels: int | None = None) -> tuple[np.ndarray | None, ImageError | None, float]:
    tick = time.perf_counter()
    try:
        return load_rgb(path, max_pixels), None, time.perf_counter() - tick
    except ImageError as err:
        return None, err, time.perf_counter() - tick


class PilLoader:
    """Pillow in a thread pool, at most `depth` files in flight, results in input order; files whose header says
    more than `max_pixels` fail without being decoded."""

    def __init__(self, workers: int = 2, depth: int = 8, max_pixels: int | None = None) -> None:
        self.workers, self.depth, self.max_pixels = workers, depth, max_pixels

    def __call__(self, items: Iterable[T]) -> Iterator[Decoded[T]]:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:
            pending: deque[tuple[T, Future]] = deque()
            try:
                for item in items:
                    pending.append((item, pool.submit(timed_load, item.path, self.max_pixels)))
                    while len(pending) > self.depth:
                        first, future = pending.popleft()
                        yield Decoded(first, *future.result())
                while pending:
                    first, future = pending.popleft()
                    yield Decoded(first, *future.result())
            finally:
                for _, future in pending:
                    future.cancel()


# Pillow and DALI (libjpeg-turbo with fancy upsampling and the accurate integer IDCT, libpng, libwebp) agree pixel for
# pixel on these; Pillow keeps what DALI does differently: alpha (we composite on white, DALI drops it), 16-bit and
# CMYK data, TIFF's many layouts.
DALI_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "PPM"})
DALI_MODES = frozenset({"RGB", "L", "P"})


def dali_decodes_same(header: Header) -> bool:
    return header.format in DALI_FORMATS and header.mode in DALI_MODES and not header.transparency


class DaliLoader:
    """NVIDIA DALI: `fn.readers.file` over the run's file list (in chunks, so the list streams) and
    `fn.decoders.image` ('mixed' on a GPU, 'cpu' otherwise), RGB uint8 with EXIF orientation applied as Pillow does.

    Each file's header is read first (microseconds): files DALI would decode differently, and files that are not
    images at all, go to Pillow. A batch DALI fails on (a truncated file, say) is decoded again by Pillow, which names
    the bad file and the reason."""

    def __init__(
        self,
        batch: int = 8,
        workers: int = 2,
        device: torch.device | str = "cpu",
        chunk: int = 1024,
        max_pixels: int | None = None,
    ) -> None:
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "the dali loader needs NVIDIA DALI: pip install nvidia-dali-cuda130 (or 'fastdenoise[dali]')"
            ) from err
        self.batch, self.workers, self.chunk = batch, workers, max(chunk, batch)
        self.device = torch.device(device)
        self.max_pixels = max_pixels

    def pipeline(self, files: list[str]):
        from nvidia.dali import fn, pipeline_def, types

        gpu = self.device.type == "cuda"

        @pipeline_def(
            batch_size=self.batch,
            num_threads=self.workers,
            device_id=(self.device.index or 0) if gpu else None,
            prefetch_queue_depth=2,
        )
        def decode():
            encoded, _ = fn.readers.file(files=files, pad_last_batch=True, name="files")
            return fn.decoders.image(
                encoded,
                device="mixed" if gpu else "cpu",
                output_type=types.RGB,
                adjust_orientation=True,
                jpeg_fancy_upsampling=True,
                use_fast_idct=False,
            )

        pipe = decode()
        pipe.build()
        return pipe

    def run_chunk(self, items: list[T]) -> Iterator[Decoded[T]]:
        try:
            pipe = self.pipeline([str(item.path) for item in items])
        except RuntimeError as err:  # DALI installed but unusable here (driver, CUDA libraries): Pillow does it
            warnings.warn(f"DALI cannot build its pipeline, decoding with Pillow instead: {err}", stacklevel=2)
            for item in items:
                yield Decoded(item, *timed_load(item.path, self.max_pixels))
            return
        try:
            for start in range(0, len(items), self.batch):
                group = items[start : start + self.batch]
                tick = time.perf_counter()
                try:
                    (out,) = pipe.run()
                    if self.device.type == "cuda":
                        out = out.as_cpu()
                    images = [np.array(out.at(i)) for i in range(len(group))]
                except RuntimeError:  # a file whose header was fine but whose data is not (truncated, corrupt)
                    for item in group:
                        yield Decoded(item, *timed_load(item.path, self.max_pixels))
                    continue
                seconds = (time.perf_counter() - tick) / len(group)
                for item, image in zip(group, images):
                    yield Decoded(item, image, None, seconds)
        finally:
            del pipe

    def __call__(self, items: Iterable[T]) -> Iterator[Decoded[T]]:
        chunk: list[T] = []
        for item in items:
            tick = time.perf_counter()
            try:
                header = read_header(item.path)
                same = dali_decodes_same(header) and not too_large(header, self.max_pixels)
            except ImageError:
                same = False  # Pillow gives the reason
            if not same:
                image, error, seconds = timed_load(item.path, self.max_pixels)
                yield Decoded(item, image, error, seconds + time.perf_counter() - tick)
                continue
            chunk.append(item)
            if len(chunk) == self.chunk:
                yield from self.run_chunk(chunk)
                chunk = []
        if chunk:
            yield from self.run_chunk(chunk)


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def make_loader(
    kind: LoaderKind | str,
    workers: int = 2,
    batch: int = 8,
    device: torch.device | str = "cpu",
    max_pixels: int | None = None,
) -> Loader:
    """auto: DALI for a GPU run where DALI is installed (nvJPEG decodes on the GPU), Pillow otherwise: on the CPU,
    Pillow threads decode small files faster than DALI's CPU pipeline (bench/bench_pipeline.py: 3.7x on 2 cores)."""
    kind = LoaderKind(kind)
    if kind == LoaderKind.auto:
        kind = LoaderKind.dali if torch.device(device).type == "cuda" and dali_available() else LoaderKind.pil
    match kind:
        case LoaderKind.pil:
            return PilLoader(workers, depth=max(2 * batch, 2 * workers), max_pixels=max_pixels)
        case LoaderKind.dali:
            return DaliLoader(batch, workers, device, max_pixels=max_pixels)
    raise ValueError(f"unknown loader {kind!r}; choose one of {[k.value for k in LoaderKind]}")
