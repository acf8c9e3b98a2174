"""The output side of a folder run: what each listed file needs (`triage`), the output tree written atomically and
never through a planted link, and the recorder that journals each file's row and counts it."""

from __future__ import annotations

import errno
import math
import os
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastdenoise.encoders import DEFAULT_PNG_LEVEL
from fastdenoise.images import EXTENSIONS, FORMATS, Entry, make_folders
from fastdenoise.pipeline.lock import OutputLock
from fastdenoise.pipeline.manifest import Journal, Voucher, load_vouchers, recipe_text
from fastdenoise.pipeline.predictions import MASK_SUFFIX, Prediction
from fastdenoise.pipeline.writers import output_path, write_image, write_mask

if TYPE_CHECKING:
    from fastdenoise.pipeline.summary import RunSummary

# Output errors after which no later write can succeed either: the run stops, a later run resumes.
FATAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


@dataclass(frozen=True, slots=True)
class Item:
    """An image to denoise: where it is, where its output (and mask) goes, and the input's size and mtime when
    listed."""

    entry: Entry
    out: Path
    size: int
    mtime_ns: int
    mask: Path | None = None
    sigma: float | None = None  # --sigma auto: the estimated noise level (0-255)
    weights: Path | None = None  # routed (--sigma auto, a JPEG input): the weights chosen for it
    level: float | None = None  # ... and the level they are bound to, where they take one (a noise-map model)

    @property
    def path(self) -> Path:
        return self.entry.path

    @property
    def route(self) -> tuple[Path | None, float | None]:
        """The weights and the level the router chose for this image ((None, None) where none routes)."""
        return self.weights, self.level


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


def open_output(dst: Path, rank: int = 0, world: int = 1) -> tuple[OutputLock, dict[str, Voucher], Journal]:
    """Take this rank's output lock (LockError, a ValueError, while another live run writes here), then read what
    earlier runs vouch for and open this rank's manifest part; the lock is released again if either fails."""
    lock = OutputLock(dst, rank, world)
    try:
        return lock, load_vouchers(dst), Journal(dst, rank)
    except BaseException:
        lock.release()
        raise


class Recorder:
    """Rows in: each written to the journal, counted into the summary and passed to `on_image`; with fail_fast, an
    error row stops the run (`halt` names why)."""

    def __init__(
        self,
        journal: Journal,
        summary: RunSummary,
        stop: threading.Event,
        on_image: Callable[[dict], None] | None,
        fail_fast: bool,
    ) -> None:
        self.journal, self.summary, self.stop, self.on_image, self.fail_fast = (
            journal,
            summary,
            stop,
            on_image,
            fail_fast,
        )
        self.lock = threading.Lock()

    def halt(self, reason: str, cause: str) -> None:
        if not self.stop.is_set():
            self.summary.stopped, self.summary.cause = reason, cause
        self.stop.set()

    def __call__(self, row: dict) -> None:
        status = row["status"]
        with self.lock:
            self.journal.write(row)
            self.summary.count(row)
        if self.on_image:
            self.on_image(row)
        if status == "error" and self.fail_fast:
            self.halt(f"--fail-fast: {row['input']} failed", "fail_fast")


class OutputTree:
    """A run's output folder: rows name files relative to it; outputs (and masks) are written atomically and never
    through a folder that leads outside it. `head` is the predictor's key (None without --task)."""

    def __init__(
        self,
        dst: Path,
        quality: int = 95,
        head: str | None = None,
        palette: np.ndarray | None = None,
        made_by: dict | None = None,
        png_level: int = DEFAULT_PNG_LEVEL,
    ) -> None:
        self.dst, self.quality, self.head, self.palette, self.made_by = Path(dst), quality, head, palette, made_by
        self.png_level = png_level  # not in made_by: every level holds the same pixels
        self.safe_folders: set[Path] = set()

    def recipe(self, height: int, width: int) -> dict | None:
        """What makes an output of this size: `made_by`, less tile and overlap where the image fits in one tile."""
        if self.made_by is None or max(height, width) > self.made_by["tile"]:
            return self.made_by
        return {k: v for k, v in self.made_by.items() if k not in ("tile", "overlap")}

    def relative(self, path: Path) -> str:
        return path.relative_to(self.dst).as_posix()

    def error_row(self, item: Item, message: str) -> dict:
        return {"input": item.entry.rel, "status": "error", "output": None, "error": message}

    def write(self, item: Item, image: np.ndarray, prediction: Prediction | None) -> tuple[os.stat_result, dict]:
        """Write the output (and mask); returns the output's stat and the row's prediction fields."""
        folder = item.out.parent
        if folder not in self.safe_folders:
            make_folders(self.dst, folder)  # never through a symlink planted in the output tree
            self.safe_folders.add(folder)
        st = write_image(image, item.out, self.quality, self.png_level)
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
        return (
            {
                "input": item.entry.rel,
                "status": "ok",
                "output": self.relative(item.out),
                "error": None,
                "height": h,
                "width": w,
                "input_size": item.size,
                "input_mtime_ns": item.mtime_ns,
                "output_size": st.st_size,
                "output_mtime_ns": st.st_mtime_ns,
                "made_by": self.recipe(h, w),
            }
            | facts
            | routed(item),
            None,
        )


def output_recipe(settings: dict, fmt: str, quality: int, tile: int, overlap: int) -> dict:
    """The `made_by` record of a run's outputs: `settings` (weights digest, precision, ...) and the run options that
    change pixels (quality only for lossy formats; tile and overlap, dropped by `OutputTree.recipe` where unused)."""
    lossy = {"quality": quality} if FORMATS[fmt] in (".jpg", ".webp") else {}
    return settings | {"format": FORMATS[fmt], "tile": tile, "overlap": overlap} | lossy


def routed(item: Item) -> dict:
    """The row fields of a routed image (`--sigma auto`, JPEG inputs): the weights that ran, the estimated noise
    level and the level bound in, where there are."""
    if item.weights is None:
        return {}
    estimate = {} if item.sigma is None else {"sigma_est": round(item.sigma, 2)}
    return estimate | {"weights": item.weights.stem} | ({} if item.level is None else {"level": item.level})


def triage(
    entry: Entry, tree: OutputTree, suffix: str, segment: bool, vouchers: dict[str, Voucher], overwrite: bool
) -> Item | dict:
    """What one listed file needs: an Item to denoise, or its finished row (ignored, cannot stat, done earlier)."""
    if entry.problem:
        return {"input": entry.rel, "status": "ignored", "output": None, "error": entry.problem}
    out = output_path(tree.dst, entry.rel, suffix, entry.keep_extension)
    if segment and suffix == ".png" and collides_with_mask(entry):
        return {
            "input": entry.rel,
            "status": "ignored",
            "output": None,
            "error": "output name is the mask of an image beside it (--task segment)",
        }
    try:
        st = entry.path.stat()
    except OSError as err:
        return {"input": entry.rel, "status": "error", "output": None, "error": f"cannot stat: {err}"}
    voucher = vouchers.pop(entry.rel, None)
    made_by = recipe_text(tree.recipe(voucher.height, voucher.width)) if voucher else None
    if voucher and not overwrite and voucher.holds(tree.dst, tree.relative(out), st, tree.head, made_by):
        return {"input": entry.rel, "status": "skipped", "output": voucher.output, "error": None} | voucher.fields()
    mask = output_path(tree.dst, entry.rel, MASK_SUFFIX, entry.keep_extension) if segment else None
    return Item(entry, out, st.st_size, st.st_mtime_ns, mask)


def reference_scores(ref: Path, rel: str, image: np.ndarray, max_pixels: int | None = None) -> dict:
    """PSNR and SSIM of a denoised (H, W, 3) uint8 image against the clean image at the same relative path under ref
    (or the same stem with another image extension); a `ref_error` instead when there is none, it cannot be read, its
    header says more than max_pixels (not decoded) or its size differs."""
    from fastdenoise.images import ImageError, load_rgb
    from fastdenoise.metrics import psnr, ssim

    base = Path(ref) / rel
    found = (
        [base] if base.is_file() else [base.with_suffix(e) for e in sorted(EXTENSIONS) if base.with_suffix(e).is_file()]
    )
    if not found:
        return {"ref_error": f"no reference image for {rel} under {ref}"}
    try:
        clean = load_rgb(found[0], max_pixels)
    except ImageError as err:
        return {"ref_error": str(err)}
    if clean.shape != image.shape:
        return {
            "ref_error": f"{found[0]}: reference is {clean.shape[1]}x{clean.shape[0]}, "
            f"output {image.shape[1]}x{image.shape[0]}"
        }
    value = psnr(image, clean)  # infinite for an output equal to its reference: JSON has no such number, null instead
    return {"psnr": round(value, 4) if math.isfinite(value) else None, "ssim": round(ssim(image, clean), 5)}


def check_ref(ref: str | None, dst: Path) -> None:
    """Raise ValueError unless --ref (where given) is a folder outside OUTPUT: there, outputs would be scored against
    themselves."""
    if ref is None:
        return
    if not Path(ref).is_dir():
        raise ValueError(f"{ref}: --ref is not a folder")
    real, out = Path(ref).resolve(), Path(dst).resolve()
    if real == out or real.is_relative_to(out):
        raise ValueError(f"{ref}: --ref may not be the output folder or inside it (each output its own reference)")
