"""Writers at the output end of a run, each output named after its input so the output tree mirrors the input tree:
denoised images, classification predictions (CSV or JSONL, top-k from logits) and segmentation masks (palette PNG)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from fastdenoise.encoders import DEFAULT_PNG_LEVEL
from fastdenoise.files import atomic_file, atomic_write
from fastdenoise.images import save_rgb
from fastdenoise.pipeline.manifest import row_line
from fastdenoise.words import plural


def output_path(dst: Path, rel: str, suffix: str, keep_extension: bool = False) -> Path:
    """OUTPUT/<input's relative path, extension replaced by suffix> (with keep_extension: suffix added, so a.png beside
    a.jpg becomes a.png.png, not a second a.png)."""
    return Path(dst) / (rel + suffix if keep_extension else Path(rel).with_suffix(suffix))


def write_image(image: np.ndarray, path: Path, quality: int = 95, png_level: int = DEFAULT_PNG_LEVEL) -> os.stat_result:
    """A denoised (H, W, 3) uint8 image, atomically (format from the suffix); returns the written file's stat."""
    save_rgb(image, path, quality, png_level)
    return Path(path).stat()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) logits -> (N, k) class indices by descending probability, and their probabilities."""
    if logits.ndim != 2:
        raise ValueError(f"expected (N, classes) logits, got shape {logits.shape}")
    k = min(k, logits.shape[1])
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)


class PredictionWriter:
    """Classification predictions, streamed: `.csv` (one row per input and rank: input, rank, class, label,
    probability) or `.jsonl` (one object per input with its top-k list). Written under a temporary name and renamed
    on close, so a final name never holds a partial file."""

    def __init__(self, path: Path, labels: list[str] | None = None, k: int = 5) -> None:
        self.path, self.labels, self.k = Path(path), labels, k
        self.kind = self.path.suffix.lower()
        if self.kind not in (".csv", ".jsonl"):
            raise ValueError(f"{path}: predictions are written as .csv or .jsonl, got {self.kind!r}")
        self.file = ExitStack()
        # a file name that is not UTF-8 goes into the CSV as its own bytes (surrogateescape), into JSONL as \udcXX
        options = {"newline": "", "encoding": "utf-8", "errors": "surrogateescape"}
        self.handle = self.file.enter_context(atomic_file(self.path, "w", unique=False, **options))
        self.csv = csv.writer(self.handle) if self.kind == ".csv" else None
        if self.csv:
            self.csv.writerow(["input", "rank", "class", "label", "probability"])

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels and index < len(self.labels) else str(index)

    def write(self, inputs: list[str], logits: np.ndarray) -> None:
        """One batch: input names (relative paths) and their (N, C) logits."""
        if len(inputs) != len(logits):
            raise ValueError(f"{plural(len(inputs), 'input')} but {plural(len(logits), 'row')} of logits")
        classes, probs = top_k(np.asarray(logits), self.k)
        for name, cls, prob in zip(inputs, classes, probs):
            self.write_top(name, [(int(c), self.label(int(c)), float(p)) for c, p in zip(cls, prob)])

    def write_top(self, name: str, top: Sequence[Sequence]) -> None:
        """One input's ranked (class, label, probability) triples, best first (e.g. from a run's manifest)."""
        if self.csv:
            self.csv.writerows([name, r + 1, c, label, f"{p:.6f}"] for r, (c, label, p) in enumerate(top))
        else:
            entry = {
                "input": name,
                "top": [{"class": c, "label": label, "probability": round(p, 6)} for c, label, p in top],
            }
            self.handle.write(row_line(entry))

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *error: Any) -> None:
        self.file.__exit__(*error)  # clean: renamed into place; on an exception: the temporary file removed


def label_palette(classes: int = 256) -> np.ndarray:
    """(classes, 3) uint8 colours: the PASCAL VOC map (class bits spread over the high bits of R, G, B), so class 0 is
    black and neighbouring classes look different."""
    palette = np.zeros((classes, 3), dtype=np.uint8)
    for c in range(classes):
        value, r, g, b = c, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[c] = (r, g, b)
    return palette


def write_mask(scores: np.ndarray, path: Path, palette: np.ndarray | None = None) -> os.stat_result:
    """A segmentation mask as a palette PNG: (C, H, W) logits (argmax taken) or an (H, W) integer label map; the
    pixel values are the class indices, the palette only colours them. Atomic; returns the written file's stat."""
    from PIL import Image

    scores = np.asarray(scores)
    labels = scores.argmax(axis=0) if scores.ndim == 3 else scores
    if labels.ndim != 2:
        raise ValueError(f"expected (C, H, W) logits or an (H, W) label map, got shape {scores.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"class indices must be in 0..255 for a palette PNG, got {labels.min()}..{labels.max()}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: masks are written as .png")
    image = Image.fromarray(labels.astype(np.uint8))  # mode L; putpalette makes it P with the same indices
    image.putpalette((label_palette() if palette is None else np.asarray(palette, dtype=np.uint8)).reshape(-1).tolist())
    atomic_write(path, lambda handle: image.save(handle, format="PNG"), unique=False)
    return path.stat()
