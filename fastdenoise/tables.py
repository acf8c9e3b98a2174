"""The paper's Tables 1-3: Kodak24 PSNR beside the peers, ImageNet top-1/top-5 and CamVid mIoU under noise, per arm.

One image at a time is read, noised per the protocol, passed through every arm (a denoiser, or none) and scored;
the per-image rows reduce to cells by pure functions; `write_table` writes <name>.md, .json and .png at the end.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fastdenoise.datasets import data_root, load_mask, read_labels
from fastdenoise.evaluate import Denoise, evaluate
from fastdenoise.images import list_images, load_rgb
from fastdenoise.joint import check_masks, confusion, mean_iou, resize_short_side
from fastdenoise.noise import add_noise, check_sigma, to_uint8
from fastdenoise.stats import (
    bootstrap_interval,
    mcnemar_exact,
    mean_reduce,
    miou_reduce,
    paired_bootstrap,
    pixel_accuracy_reduce,
)

NOISY, CLEAN = "noisy", "clean"  # the arm without a denoiser, and the head on the clean image (no noise, sigma None)
ProgressFn = Callable[[int, int, str], None]  # (done, total, what was just done)
METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "top1": "top-1", "top5": "top-5", "miou": "mIoU", "pixel_acc": "pixel accuracy"}
DIGITS = {"psnr": 2, "ssim": 4}  # others: 3


class Split(str, Enum):
    """Which rows of labels.csv a table uses: row p (0-based) is in `train` if p is even, in `test` if p is odd."""

    all = "all"
    train = "train"
    test = "test"


def split_positions(count: int, split: Split | str) -> list[int]:
    """Row positions 0..count-1 of the split: all, even (train) or odd (test)."""
    split = Split(split)
    start, step = (0, 1) if split is Split.all else (0 if split is Split.train else 1, 2)
    return list(range(start, count, step))


# ---- arms and configs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One row of a table: how the noisy image becomes the head's input (denoise None: the noisy image as it is)."""

    name: str
    denoise: Denoise | None = None
    limit: int | None = None  # only the first N images (a CBM3D subset)
    sigmas: tuple[float, ...] | None = None  # only these noise levels (a CDnCNN trained for one sigma)
    source: str = ""  # weights file or package, for the record
    trained_on: str | None = None  # the folder its weights were trained on (their card), to flag held-in evaluations

    def __post_init__(self) -> None:
        if not self.name or self.name == CLEAN:
            raise ValueError(f"an arm needs a name other than '' and {CLEAN!r}, got {self.name!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"arm {self.name!r}: limit must be >= 1 or None, got {self.limit}")

    def runs(self, sigma: float, position: int) -> bool:
        return (self.limit is None or position < self.limit) and (self.sigmas is None or sigma in self.sigmas)

    def record(self) -> dict:
        return {"name": self.name, "source": self.source, "limit": self.limit, "sigmas": self.sigmas, "trained_on": self.trained_on}


def check_arms(arms: Sequence[Arm]) -> None:
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")


def check_common(sigmas: Sequence[float], limit: int | None, seeds: Sequence[int], draws: int) -> None:
    if not sigmas:
        raise ValueError("give at least one sigma")
    for s in sigmas:
        check_sigma(s)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers >= 0, at least one; got {tuple(seeds)}")
    if draws < 100:
        raise ValueError(f"bootstrap draws must be >= 100, got {draws}")


@dataclass(frozen=True)
class Table1Config:
    """Table 1: denoising PSNR on a folder of clean images (Kodak24), the noise protocol of `fastdenoise eval`."""

    data: str
    sigmas: tuple[float, ...] = (25.0, 35.0, 50.0)
    seeds: tuple[int, ...] = (0,)  # noise seeds; every image is scored under each, intervals resample images
    control: str | None = None  # the arm every other is tested against; None: "separate" if there is one
    draws: int = 2000  # bootstrap resamples
    limit: int | None = None  # first N images of the sorted folder
    ssim: bool = False

    def __post_init__(self) -> None:
        check_common(self.sigmas, self.limit, self.seeds, self.draws)


@dataclass(frozen=True)
class Table2Config:
    """Table 2: a classifier's top-1/top-5 on labelled photos (labels.csv `file,index`) under noise, per arm."""

    data: str
    labels: str | None = None  # default: data/labels.csv
    sigmas: tuple[float, ...] = (15.0, 30.0, 45.0, 60.0)
    seeds: tuple[int, ...] = (0,)  # noise seeds; every image is scored under each, intervals resample images
    control: str | None = None  # the arm every other is tested against; None: "separate" if there is one
    draws: int = 2000  # bootstrap resamples
    split: str = "all"  # all | train (even rows of labels.csv) | test (odd rows)
    limit: int | None = None  # first N images of the split
    head: str = "efficientnet-lite0"
    head_weights: str | None = None
    resize: int | None = None  # short side before the centre crop; None: the head's (Lite: crop + 32; others 256)
    crop: int | None = None  # None: the head's (Lite0 224, Lite1 240, Lite2 260; others 224)
    quantize: bool = True  # every arm starts from the noisy crop clipped and rounded to 8 bits
    device: str = "auto"

    def __post_init__(self) -> None:
        check_common(self.sigmas, self.limit, self.seeds, self.draws)
        if self.split not in [s.value for s in Split]:
            raise ValueError(f"split must be one of {', '.join(s.value for s in Split)}; got {self.split!r}")
        if self.crop is not None and self.crop < 8:
            raise ValueError(f"crop must be >= 8 pixels, got {self.crop}")
        if self.resize is not None and self.crop is not None and self.resize < self.crop:
            raise ValueError(f"resize ({self.resize}) must be >= crop ({self.crop})")


@dataclass(frozen=True)
class Table3Config:
    """Table 3: a segmenter's mIoU on images + masks (CamVid val) under noise, per arm; noise at native size."""

    images: str
    masks: str
    sigmas: tuple[float, ...] = (15.0, 30.0, 45.0, 60.0)
    seeds: tuple[int, ...] = (0,)  # noise seeds; every image is scored under each, intervals resample images
    control: str | None = None  # the arm every other is tested against; None: "separate" if there is one
    draws: int = 2000  # bootstrap resamples
    limit: int | None = None  # first N images of the sorted folder
    head: str = "espnetv2-camvid"
    head_weights: str | None = None
    scale: float = 1.0  # the head sees the (denoised) image resized by this; scored at native size
    ignore_index: int = 11  # CamVid void
    quantize: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        check_common(self.sigmas, self.limit, self.seeds, self.draws)
        if not 0.1 <= self.scale <= 8:
            raise ValueError(f"scale must be in [0.1, 8], got {self.scale}")
        if not 0 <= self.ignore_index <= 255:
            raise ValueError(f"ignore_index must be a mask value 0..255, got {self.ignore_index}")


# ---- samples (read one at a time) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One image as the noise meets it: uint8 (H, W, 3); `index` i seeds its noise, [seed, i]."""

    name: str
    index: int
    image: np.ndarray
    target: int | np.ndarray  # class index, or an (H, W) mask


def write_split_labels(labels: Path, split: Split | str, out: Path) -> int:
    """Write the rows of one split of a labels CSV (e.g. the train half for `fastdenoise train --labels`); returns rows."""
    rows = read_labels(Path(labels))
    keep = [rows[p] for p in split_positions(len(rows), split)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "index"])
        writer.writerows(keep)
    return len(keep)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size window (the odd pixel goes to the bottom/right margin)."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"image {h}x{w} is smaller than the {size}px crop")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def classifier_geometry(head: nn.Module, resize: int | None = None, crop: int | None = None) -> tuple[int, int]:
    """(short side, crop) of a classifier's preprocessing: the head's own (EfficientNet-Lite scales) or 256 / 224."""
    scale = getattr(head, "scale", None)
    crop = crop or getattr(scale, "resolution", 224)
    return resize or (getattr(scale, "resize", None) or round(crop * 8 / 7)), crop


def imagenet_entries(data: Path, labels: Path, split: Split | str, limit: int | None) -> list[tuple[int, Path, int]]:
    """(noise index = row of labels.csv, file, class) of the split's first `limit` rows; nothing decoded."""
    rows = read_labels(labels)
    entries = [(p, Path(data) / rows[p][0], rows[p][1]) for p in split_positions(len(rows), split)][:limit]
    missing = [str(path) for _, path, _ in entries if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{labels}: {len(missing)} listed files are missing (first: {missing[0]})")
    if not entries:
        raise ValueError(f"{labels}: no rows in split {Split(split).value!r}")
    return entries


def load_classification_sample(entry: tuple[int, Path, int], resize: int, crop: int) -> Sample:
    """Decode, resize the short side (PIL bicubic), centre-crop: the ImageNet evaluation preprocessing."""
    index, path, label = entry
    return Sample(path.name, index, centre_crop(resize_short_side(load_rgb(path), resize), crop), label)


def segmentation_entries(images: Path, masks: Path, limit: int | None) -> list[tuple[int, Path, Path]]:
    """(noise index = position in the sorted image folder, image, mask of the same stem) of the first `limit` images."""
    paths = list_images(Path(images))
    if not paths:
        raise FileNotFoundError(f"{images}: no images found")
    by_stem = {p.stem: p for p in list_images(Path(masks))}
    entries = [(i, p, by_stem.get(p.stem)) for i, p in enumerate(paths)][:limit]
    missing = [p.name for _, p, m in entries if m is None]
    if missing:
        raise FileNotFoundError(f"{masks}: no mask for {len(missing)} images (first: {missing[0]})")
    return entries  # type: ignore[return-value]


def load_segmentation_sample(entry: tuple[int, Path, Path]) -> Sample:
    index, path, mask_path = entry
    image = load_rgb(path)
    return Sample(path.name, index, image, load_mask(mask_path, image.shape[:2]))


# ---- noise, arms, heads --------------------------------------------------------------------------------------------


def noisy_input(clean: np.ndarray, sigma: float, seed: int, index: int, quantize: bool) -> np.ndarray:
    """The noisy image every arm starts from: float32 [0, 1] + noise; quantize: clipped and rounded to 8 bits."""
    noisy = add_noise(clean, sigma, seed, index)
    return to_uint8(noisy).astype(np.float32) / 255.0 if quantize else noisy


def arm_outputs(noisy: np.ndarray, sigma: float, arms: Sequence[Arm], position: int) -> dict[str, np.ndarray]:
    """The head's uint8 input per arm running on this image and sigma: the noisy image or the denoised one, rounded."""
    return {a.name: to_uint8(noisy if a.denoise is None else a.denoise(noisy, sigma)) for a in arms if a.runs(sigma, position)}


def arm_images(
    samples: Iterable[Sample], arms: Sequence[Arm], sigmas: Sequence[float], seed: int, quantize: bool, clean: bool = True
) -> Iterator[tuple[int, Sample, float | None, dict[str, np.ndarray]]]:
    """Per image (and its position in the table): the clean image (sigma None) if `clean`, then per sigma every
    running arm's uint8 head input."""
    for position, sample in enumerate(samples):
        if clean:
            yield position, sample, None, {CLEAN: sample.image}
        for sigma in sigmas:
            noisy = noisy_input(sample.image, sigma, seed, sample.index, quantize)
            yield position, sample, sigma, arm_outputs(noisy, sigma, arms, position)


@torch.inference_mode()
def head_logits(head: nn.Module, images: Sequence[np.ndarray], device: torch.device, scale: float = 1.0) -> Tensor:
    """uint8 (H, W, 3) images -> the head's float logits on the CPU; segmenters: resized by `scale` for the head,
    logits bilinearly resized back to (H, W) so that scores are on the original masks."""
    size = images[0].shape[:2]
    if scale != 1.0:
        images = [resize_short_side(im, round(min(size) * scale)) for im in images]
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    logits = head(x).float()
    if logits.ndim == 4 and tuple(logits.shape[-2:]) != size:
        logits = torch.nn.functional.interpolate(logits, size, mode="bilinear", align_corners=False)
    return logits.cpu()


def classification_scores(logits: Tensor, label: int, k: int = 5) -> list[dict]:
    """Per row of (N, C) logits: top1 / top5 (1 if the label is the first / among the first k) and the top-k classes."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices.tolist()
    return [{"top1": int(t[0] == label), "top5": int(label in t), "pred": t} for t in top]


def segmentation_scores(logits: Tensor, mask: np.ndarray, ignore_index: int) -> list[dict]:
    """Per (C, H, W) logits: the (C, C) confusion against the mask (ignored pixels left out), its mIoU and accuracy."""
    target = torch.from_numpy(mask.astype(np.int64))
    scores = []
    for counts in (confusion(p, target, logits.shape[1], ignore_index) for p in logits.argmax(1)):
        miou, _ = mean_iou(counts)
        scores.append({"miou": miou, "pixel_acc": pixel_accuracy(counts), "confusion": counts.numpy()})
    return scores


def pixel_accuracy(counts: Tensor | np.ndarray) -> float:
    counts = torch.as_tensor(counts).double()
    return float(counts.diag().sum() / counts.sum().clamp(min=1))


# ---- tables --------------------------------------------------------------------------------------------------------


@dataclass
class TableResult:
    """Cells (arm, sigma -> metrics and the number of images) and the per-image rows behind them; sigma None: clean."""

    name: str
    title: str
    metrics: tuple[str, ...]
    arms: list[str]
    sigmas: list[float]
    cells: list[dict]
    rows: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    tests: list[dict] = field(default_factory=list)  # paired tests of each arm against the control (paired_tests)

    def cell(self, arm: str, sigma: float | None, subset: int | None = None) -> dict | None:
        """The cell of an arm at a sigma (over all images, or the first `subset`); the clean arm has one cell (sigma
        None), returned for every sigma."""
        sigma = None if arm == CLEAN else sigma
        return next((c for c in self.cells if c["arm"] == arm and c["sigma"] == sigma and c.get("subset") == subset), None)

    @property
    def subsets(self) -> list[int]:
        return sorted({c["subset"] for c in self.cells if c.get("subset") is not None})


def mean_cells(rows: Iterable[dict], metrics: Sequence[str]) -> list[dict]:
    """Group rows by (arm, sigma) in first-seen order; each cell holds the mean of every metric over its rows (images x
    noise seeds), the number of distinct images and of rows (samples)."""
    groups: dict[tuple[str, float | None], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["arm"], row["sigma"]), []).append(row)
    return [
        {"arm": arm, "sigma": sigma, "images": len({r["position"] for r in group}), "samples": len(group),
         **{m: float(np.mean([r[m] for r in group])) for m in metrics}}  # fmt: skip
        for (arm, sigma), group in groups.items()
    ]


def confusion_cells(rows: Iterable[dict], class_names: Sequence[str] | None = None) -> list[dict]:
    """Group rows by (arm, sigma) and sum their confusions: dataset mIoU, pixel accuracy and per-class IoU per cell."""
    sums: dict[tuple[str, float | None], list] = {}
    for row in rows:
        entry = sums.setdefault((row["arm"], row["sigma"]), [0, set()])
        entry[0] = entry[0] + row["confusion"]
        entry[1].add(row["position"])
    cells = []
    for (arm, sigma), (counts, positions) in sums.items():
        images = len(positions)
        miou, iou = mean_iou(torch.as_tensor(counts))
        names = class_names or [str(c) for c in range(len(iou))]
        per_class = {n: (None if math.isnan(v) else v) for n, v in zip(names, iou.tolist())}
        cells.append({"arm": arm, "sigma": sigma, "images": images, "miou": miou, "pixel_acc": pixel_accuracy(counts), "iou": per_class,
                      "confusion": np.asarray(counts).tolist()})  # fmt: skip
    return cells


def with_subsets(rows: list[dict], arms: Sequence[Arm], count: int, reduce: Callable[[list[dict]], list[dict]]) -> list[dict]:
    """The cells over all images, then, for each arm run on only its first K images, every arm's cells over those same
    K images, marked "subset": K (so a CBM3D subset is compared on equal terms)."""
    cells = reduce(rows)
    for k in sorted({a.limit for a in arms if a.limit is not None and a.limit < count}):
        cells += [{**c, "subset": k} for c in reduce([r for r in rows if r["position"] < k])]
    return cells


# ---- statistics: intervals per cell, paired tests against a control ------------------------------------------------

CONFUSION_METRICS = {"miou": miou_reduce, "pixel_acc": pixel_accuracy_reduce}  # functions of the summed confusion


def seeds_text(seeds: Sequence[int]) -> str:
    return f"noise seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def image_parts(rows: Iterable[dict], metric: str) -> dict[int, np.ndarray]:
    """Per image position, the parts of a metric summed over its rows (noise seeds): the confusion, or [sum, count]."""
    parts: dict[int, np.ndarray] = {}
    for r in rows:
        value = np.asarray(r["confusion"], dtype=np.float64).ravel() if metric in CONFUSION_METRICS else np.array([r[metric], 1.0])
        parts[r["position"]] = parts.get(r["position"], 0) + value
    return parts


def with_intervals(cells: list[dict], rows: list[dict], metrics: Sequence[str], draws: int) -> list[dict]:
    """Each cell with `<metric>_ci`: the 95% percentile bootstrap interval, images resampled (their seeds together)."""
    for cell in cells:
        subset = cell.get("subset")
        mine = [r for r in rows if r["arm"] == cell["arm"] and r["sigma"] == cell["sigma"] and (subset is None or r["position"] < subset)]
        for metric in metrics:
            parts = image_parts(mine, metric)
            stacked = np.stack([parts[p] for p in sorted(parts)])
            cell[f"{metric}_ci"] = list(bootstrap_interval(stacked, CONFUSION_METRICS.get(metric, mean_reduce), draws))
    return cells


def paired_tests(
    rows: list[dict], arms: Sequence[Arm], sigmas: Sequence[float], control: str | None, metrics: Sequence[str], draws: int
) -> list[dict]:
    """Per arm other than the control, sigma and metric: the difference arm - control on the images both ran on, its
    paired bootstrap interval and p; top-1 also McNemar's exact test over (image, seed) pairs. Control None: the arm
    "separate" if there is one, else no tests."""
    names = [a.name for a in arms]
    if control is None:
        control = "separate" if "separate" in names else None
        if control is None:
            return []
    if control not in names:
        raise ValueError(f"control arm {control!r} is not in the table; arms: {', '.join(names)}")
    by_key = {(r["arm"], r["sigma"], r["position"], r["seed"]): r for r in rows}
    tests = []
    for arm in (n for n in names if n != control):
        for sigma in sigmas:
            pairs = [(r, by_key[(control, sigma, r["position"], r["seed"])]) for r in rows
                     if r["arm"] == arm and r["sigma"] == sigma and (control, sigma, r["position"], r["seed"]) in by_key]  # fmt: skip
            if not pairs:
                continue
            for metric in metrics:
                ours, theirs = image_parts([a for a, _ in pairs], metric), image_parts([b for _, b in pairs], metric)
                order = sorted(ours)
                test = paired_bootstrap(np.stack([ours[p] for p in order]), np.stack([theirs[p] for p in order]),
                                        CONFUSION_METRICS.get(metric, mean_reduce), draws)  # fmt: skip
                entry = {"arm": arm, "control": control, "sigma": sigma, "metric": metric, "images": len(order), "pairs": len(pairs),
                         "test": "paired bootstrap", "draws": draws, **test}  # fmt: skip
                if metric == "top1":
                    exact = mcnemar_exact(np.array([a["top1"] for a, _ in pairs]), np.array([b["top1"] for _, b in pairs]))
                    entry |= {"test": "McNemar exact", "p": exact["p"], "bootstrap_p": test["p"], "b": exact["b"], "c": exact["c"]}
                tests.append(entry)
    return tests


def arm_order(arms: Sequence[Arm], clean: bool) -> list[str]:
    return [a.name for a in arms] + ([CLEAN] if clean else [])


def table1(cfg: Table1Config, arms: Sequence[Arm], progress: ProgressFn | None = None) -> TableResult:
    """Mean PSNR (and SSIM) per arm and sigma on cfg.data, through `fastdenoise.evaluate` (image i noised with [seed, i])."""
    check_arms(arms)
    count = len(list_images(Path(cfg.data))[: cfg.limit])
    if not count:
        raise ValueError(f"{cfg.data}: no images found")
    plan = [(a, [s for s in cfg.sigmas if a.runs(s, 0)], min(count, a.limit or count)) for a in arms]
    total, done, rows = sum(len(s) * n for _, s, n in plan), 0, []

    def tick(text: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, text)

    total *= len(cfg.seeds)
    for seed in cfg.seeds:
        for arm, sigmas, n in plan:
            if sigmas:
                denoise = arm.denoise or (lambda noisy, sigma: noisy)
                result = evaluate(denoise, Path(cfg.data), sigmas, seed, arm.name, with_ssim=cfg.ssim, limit=n, progress=tick)
                rows += [{"arm": arm.name, "position": i % n, "seed": seed, **r} for i, r in enumerate(result.rows)]  # per sigma, images in order
    metrics = ("psnr", "ssim") if cfg.ssim else ("psnr",)
    noise = ("Gaussian noise, image i of the sorted folder gets numpy default_rng([seed, i]); the noisy input is not clipped; "
             "outputs are clipped and rounded to uint8; PSNR over all RGB pixels.")  # fmt: skip
    meta = {"config": asdict(cfg), "arms": [a.record() for a in arms], "images": count, "data": cfg.data, "noise": noise}
    title = f"Table 1: denoising PSNR on {Path(cfg.data).name} ({count} images, {seeds_text(cfg.seeds)})"
    cells = with_intervals(with_subsets(rows, arms, count, lambda r: mean_cells(r, metrics)), rows, metrics, cfg.draws)
    tests = paired_tests(rows, arms, cfg.sigmas, cfg.control, metrics, cfg.draws)
    return TableResult("table1", title, metrics, arm_order(arms, False), list(cfg.sigmas), cells, rows, meta, tests)


def table2(
    cfg: Table2Config, arms: Sequence[Arm], head: nn.Module | None = None, clean: bool = True, progress: ProgressFn | None = None
) -> TableResult:
    """Top-1/top-5 of a frozen classifier per arm and sigma; the noise goes onto the centre crop (image i: [seed, i],
    i its row in labels.csv whatever the split). `head` None: load cfg.head."""
    check_arms(arms)
    head, device = frozen_head(head, cfg.head, cfg.head_weights, "classify", cfg.device)
    resize, crop = classifier_geometry(head, cfg.resize, cfg.crop)
    labels = Path(cfg.labels) if cfg.labels else Path(cfg.data) / "labels.csv"
    entries = imagenet_entries(Path(cfg.data), labels, cfg.split, cfg.limit)
    bad = [c for _, _, c in entries if not 0 <= c < head.num_classes]
    if bad:
        raise ValueError(f"{labels}: class index {bad[0]} outside 0..{head.num_classes - 1} of the head")

    def score(sample: Sample, images: list[np.ndarray]) -> list[dict]:
        return [{"label": sample.target, **s} for s in classification_scores(head_logits(head, images, device), int(sample.target))]

    rows = []
    for k, seed in enumerate(cfg.seeds):
        samples = (load_classification_sample(e, resize, crop) for e in entries)
        rows += score_stream(samples, len(entries), arms, cfg.sigmas, seed, cfg.quantize, clean and k == 0, score, progress)
    metrics = ("top1", "top5")
    cells = with_intervals(with_subsets(rows, arms, len(entries), lambda r: mean_cells(r, metrics)), rows, metrics, cfg.draws)
    tests = paired_tests(rows, arms, cfg.sigmas, cfg.control, metrics, cfg.draws)
    noise = (f"short side resized to {resize} (PIL bicubic), centre crop {crop}x{crop}; Gaussian noise added to the crop, image i "
             f"(row i of labels.csv) gets numpy default_rng([seed, i]); {quantize_text(cfg.quantize)}")  # fmt: skip
    meta = {"config": asdict(cfg), "arms": [a.record() for a in arms], "images": len(entries), "data": cfg.data, "labels": str(labels),
            "head": cfg.head, "head_class": type(head).__name__, "resize": resize, "crop": crop, "noise": noise,
            "split_rule": "rows of labels.csv, 0-based: train = even rows, test = odd rows, all = every row",
            "held_in": held_in(arms, cfg.data)}  # fmt: skip
    title = f"Table 2: {cfg.head} top-1 / top-5 on {Path(cfg.data).name}, split {cfg.split} ({len(entries)} images, {seeds_text(cfg.seeds)})"
    return TableResult("table2", title, metrics, arm_order(arms, clean), list(cfg.sigmas), cells, rows, meta, tests)


def table3(
    cfg: Table3Config, arms: Sequence[Arm], head: nn.Module | None = None, clean: bool = True, progress: ProgressFn | None = None
) -> TableResult:
    """Dataset mIoU (confusions summed over images) of a frozen segmenter per arm and sigma; noise at native size."""
    check_arms(arms)
    head, device = frozen_head(head, cfg.head, cfg.head_weights, "segment", cfg.device)
    entries = segmentation_entries(Path(cfg.images), Path(cfg.masks), cfg.limit)

    def score(sample: Sample, images: list[np.ndarray]) -> list[dict]:
        return segmentation_scores(head_logits(head, images, device, cfg.scale), sample.target, cfg.ignore_index)  # type: ignore[arg-type]

    rows = []
    for k, seed in enumerate(cfg.seeds):
        samples = stream_masks(entries, head.num_classes, cfg.ignore_index)
        rows += score_stream(samples, len(entries), arms, cfg.sigmas, seed, cfg.quantize, clean and k == 0, score, progress)
    metrics = ("miou", "pixel_acc")
    cells = with_intervals(with_subsets(rows, arms, len(entries), lambda r: confusion_cells(r, head.class_names)), rows, metrics, cfg.draws)
    tests = paired_tests(rows, arms, cfg.sigmas, cfg.control, metrics, cfg.draws)
    rows = [{k: v for k, v in r.items() if k != "confusion"} for r in rows]  # per-image confusions live on in the cells' sums
    noise = (f"Gaussian noise at the native size, image i of the sorted folder gets numpy default_rng([seed, i]); "
             f"{quantize_text(cfg.quantize)} The head sees that image resized by {cfg.scale:g} (PIL bicubic); its logits are "
             f"resized back (bilinear) and scored on the original masks, value {cfg.ignore_index} ignored; mIoU from the "
             "confusion summed over all images, over classes present in ground truth or prediction.")  # fmt: skip
    meta = {"config": asdict(cfg), "arms": [a.record() for a in arms], "images": len(entries), "data": cfg.images, "head": cfg.head, "noise": noise,
            "held_in": held_in(arms, cfg.images)}  # fmt: skip
    title = f"Table 3: {cfg.head} mIoU on {Path(cfg.images).name} at scale {cfg.scale:g} ({len(entries)} images, {seeds_text(cfg.seeds)})"
    return TableResult("table3", title, metrics, arm_order(arms, clean), list(cfg.sigmas), cells, rows, meta, tests)


def frozen_head(head: nn.Module | None, name: str, weights: str | None, task: str, device: str) -> tuple[nn.Module, torch.device]:
    """The given head, or `name` loaded, in eval mode on the device; ValueError if it does not do `task`."""
    from fastdenoise.devices import resolve_device
    from fastdenoise.heads import load_head

    head = head if head is not None else load_head(name, Path(weights) if weights else None)
    if head.task != task:
        raise ValueError(f"head {name!r} is a {head.task} network; this table needs a {'classifier' if task == 'classify' else 'segmenter'}")
    target = resolve_device(device)
    return head.eval().to(target), target


def score_stream(
    samples: Iterable[Sample],
    count: int,
    arms: Sequence[Arm],
    sigmas: Sequence[float],
    seed: int,
    quantize: bool,
    clean: bool,
    score: Callable[[Sample, list[np.ndarray]], list[dict]],
    progress: ProgressFn | None,
) -> list[dict]:
    """A row per image, sigma and arm: `score(sample, head inputs of the arms)` gives each arm's metrics."""
    total, rows = count * (len(sigmas) + clean), []
    for done, (position, sample, sigma, images) in enumerate(arm_images(samples, arms, sigmas, seed, quantize, clean), 1):
        for arm, metrics in zip(images, score(sample, list(images.values()))):
            rows.append({"arm": arm, "sigma": sigma, "image": sample.name, "position": position, "index": sample.index, "seed": seed, **metrics})
        if progress:
            progress(done, total, f"seed {seed} {sample.name} sigma {sigma if sigma is not None else 'clean'}")
    return rows


def stream_masks(entries: Sequence[tuple[int, Path, Path]], num_classes: int, ignore_index: int) -> Iterator[Sample]:
    for entry in entries:
        sample = load_segmentation_sample(entry)
        check_masks([sample.target], num_classes, ignore_index)  # type: ignore[list-item]
        yield sample


def quantize_text(quantize: bool) -> str:
    if quantize:
        return ("the noisy image is clipped and rounded to 8 bits, and that same image is what every arm starts from (the noisy "
                "arm feeds it to the head; denoisers denoise it); denoised outputs are clipped and rounded to uint8 before the head.")  # fmt: skip
    return ("denoisers get the unclipped float noisy image (the project's noise protocol); the noisy arm feeds the head that "
            "image clipped and rounded to 8 bits; denoised outputs are clipped and rounded to uint8 before the head.")  # fmt: skip


# ---- output --------------------------------------------------------------------------------------------------------


def format_value(metric: str, value: float) -> str:
    return f"{value:.{DIGITS.get(metric, 3)}f}"


def metric_lines(table: TableResult, metric: str, subset: int | None = None) -> list[str]:
    """One Markdown table: a row per arm, a column per sigma; the best value per column in bold among the arms measured
    on every image; `(n=K)` marks a cell measured on fewer images, – a sigma the arm does not run at."""
    full = subset or table.meta.get("images")
    lines = ["| arm | " + " | ".join(f"sigma {s:g}" for s in table.sigmas) + " |", "|---" * (len(table.sigmas) + 1) + "|"]
    best = {}
    for s in table.sigmas:
        values = [c[metric] for a in table.arms if a != CLEAN and (c := table.cell(a, s, subset)) and c["images"] == full]
        best[s] = max(values) if values else None
    for arm in table.arms:
        cells = []
        for s in table.sigmas:
            c = table.cell(arm, s, subset)
            if c is None:
                cells.append("–")
                continue
            text = format_value(metric, c[metric])
            text = f"**{text}**" if arm != CLEAN and c[metric] == best[s] else text
            if c.get(f"{metric}_ci"):
                text += " [" + ", ".join(format_value(metric, v) for v in c[f"{metric}_ci"]) + "]"
            cells.append(text + (f" (n={c['images']})" if full and c["images"] != full else ""))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def test_lines(table: TableResult) -> list[str]:
    """Per metric, a row per arm and a column per sigma: arm - control [95% interval], p (McNemar exact for top-1,
    paired bootstrap otherwise), on the images both arms ran on."""
    if not table.tests:
        return []
    control = table.tests[0]["control"]
    lines = [f"## Paired tests against `{control}`", "",
             "arm - control [95% paired bootstrap interval], p: McNemar's exact test for top-1 (b/c: images only the arm / "
             "only the control got right, over images x seeds), paired bootstrap over images otherwise.", ""]  # fmt: skip
    for metric in table.metrics:
        lines += [f"{METRIC_LABELS.get(metric, metric)}:", "", "| arm | " + " | ".join(f"sigma {s:g}" for s in table.sigmas) + " |",
                  "|---" * (len(table.sigmas) + 1) + "|"]  # fmt: skip
        for arm in dict.fromkeys(t["arm"] for t in table.tests):
            cells = []
            for sigma in table.sigmas:
                t = next((t for t in table.tests if t["arm"] == arm and t["sigma"] == sigma and t["metric"] == metric), None)
                if t is None:
                    cells.append("–")
                    continue
                digits = DIGITS.get(metric, 3)
                p = f"p < {1 / t['draws']:.2g}" if t["p"] == 0 else f"p {t['p']:.3g}"  # no resample crossed 0
                text = f"{t['diff']:+.{digits}f} [{t['lo']:+.{digits}f}, {t['hi']:+.{digits}f}], {p}"
                cells.append(text + (f" (b/c {t['b']}/{t['c']})" if "b" in t else "") + (f" (n={t['images']})" if t["images"] != table.meta.get("images") else ""))
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def markdown(table: TableResult) -> str:
    """Title, data notes, a table per metric over all images, and per subset arm (CBM3D) the same over its images."""
    full = table.meta.get("images")
    lines = [f"# {table.title}", "", f"Data: `{table.meta.get('data')}`. {table.meta.get('noise', '')}", ""]
    for metric in table.metrics:
        lines += [f"## {METRIC_LABELS.get(metric, metric)}", "", *metric_lines(table, metric), ""]
    for k in table.subsets:
        arms = ", ".join(a for a in table.arms if (c := next((c for c in table.cells if c["arm"] == a), None)) and c["images"] == k)
        lines += [f"## On the first {k} images only, where {arms} ran: every arm on the same images", ""]
        for metric in table.metrics:
            lines += [f"{METRIC_LABELS.get(metric, metric)}:", "", *metric_lines(table, metric, k), ""]
    lines += test_lines(table)
    notes = ["[lo, hi]: 95% percentile bootstrap interval, images resampled (all their noise seeds together)."]
    if CLEAN in table.arms:
        notes.append("clean: the head on the clean image (no noise), the same value in every column.")
    if table.meta.get("held_in"):
        notes.append(f"trained on photos of this folder (their cards say so; check the split): {', '.join(table.meta['held_in'])}.")
    if any(c["images"] != full for c in table.cells if c.get("subset") is None):
        notes.append(f"(n=K): measured on the first K of the {full} images only.")
    if any(table.cell(a, s) is None for a in table.arms for s in table.sigmas):
        notes.append("–: not run at that noise level (e.g. a CDnCNN trained for another sigma).")
    return "\n".join(lines + notes) + "\n"


def finite(value: object) -> object:
    """JSON-safe: NaN and infinities become None, numpy scalars become Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_table(table: TableResult, out: Path, meta: dict | None = None) -> list[Path]:
    """OUT/<name>.md, OUT/<name>.json (cells, per-image rows, config) and OUT/<name>.png; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"table": table.name, "title": table.title, "metrics": table.metrics, "arms": table.arms, "sigmas": table.sigmas,
               "meta": {**table.meta, **(meta or {})}, "cells": table.cells, "tests": table.tests, "rows": table.rows}  # fmt: skip
    paths = [out / f"{table.name}.md", out / f"{table.name}.json", out / f"{table.name}.png"]
    paths[0].write_text(markdown(table))
    paths[1].write_text(json.dumps(finite(payload), indent=1, allow_nan=False))
    plot_table(table, paths[2])
    return paths


def plot_table(table: TableResult, path: Path) -> Path:
    """Table 1: a panel per sigma of PSNR bars per arm (zoomed x axis); Tables 2-3: a panel per metric, a line per arm
    against sigma, the clean value as a dashed line. Hatched bars, hollow markers and `n=K` flag subset cells."""
    from fastdenoise.report import _pyplot

    plt = _pyplot()
    colours = dict(zip([a for a in table.arms if a != CLEAN], plt.get_cmap("tab10").colors * 3))
    full = table.meta.get("images")
    if table.name == "table1":
        fig, axes = plt.subplots(1, len(table.sigmas), figsize=(3.6 * len(table.sigmas) + 1.2, 0.5 * len(table.arms) + 1.6),
                                 layout="constrained", squeeze=False)  # fmt: skip
        for ax, sigma in zip(axes[0], table.sigmas):
            present = [(a, c) for a in table.arms if (c := table.cell(a, sigma))]
            values = [c["psnr"] for _, c in present]
            y = range(len(present))
            bars = ax.barh(list(y), values, color=[colours[a] for a, _ in present], edgecolor="white")
            for bar, (_, c) in zip(bars, present):
                bar.set_hatch("//" if c["images"] != full else "")
            for i, (_, c) in enumerate(present):
                ax.text(c["psnr"], i, f" {c['psnr']:.2f}" + (f" (n={c['images']})" if c["images"] != full else ""), va="center", fontsize=8)
            ax.set_yticks(list(y), [a for a, _ in present], fontsize=9)
            ax.invert_yaxis()
            if values:
                span = max(values) - min(values)
                ax.set_xlim(min(values) - max(0.5, 0.6 * span), max(values) + max(0.6, 0.5 * span))
            ax.set_title(f"sigma {sigma:g}", fontsize=10)
            ax.set_xlabel("PSNR (dB); axis zoomed, not from 0")
            ax.grid(axis="x", alpha=0.3)
    else:
        fig, axes = plt.subplots(1, len(table.metrics), figsize=(5.2 * len(table.metrics) + 1.5, 4.2), layout="constrained", squeeze=False)
        arms = [a for a in table.arms if a != CLEAN]
        gap = min(b - a for a, b in zip(table.sigmas, table.sigmas[1:])) if len(table.sigmas) > 1 else 10.0
        dodge = {a: (k - (len(arms) - 1) / 2) * 0.04 * gap for k, a in enumerate(arms)}  # equal values stay apart
        markers = dict(zip(arms, "osD^vPX<>" * 3))
        for ax, metric in zip(axes[0], table.metrics):
            clean = table.cell(CLEAN, None)
            if clean is not None:
                ax.axhline(clean[metric], color="black", linestyle="--", linewidth=1, label="clean")
                ax.annotate(f"clean {format_value(metric, clean[metric])}", (1, clean[metric]), xycoords=("axes fraction", "data"),
                            xytext=(-4, 4), textcoords="offset points", ha="right", fontsize=8)  # fmt: skip
            for arm in arms:
                points = [(s, c) for s in table.sigmas if (c := table.cell(arm, s))]
                xs, ys = [s + dodge[arm] for s, _ in points], [c[metric] for _, c in points]
                subset = [c["images"] != full for _, c in points]
                style = {"color": colours[arm], "marker": markers[arm], "markersize": 6}
                ax.plot(xs, ys, label=arm + (" (subset)" if any(subset) else ""), linestyle=":" if any(subset) else "-", **style)
                for x, y, (_, c), sub in zip(xs, ys, points, subset):
                    if sub:
                        ax.plot(x, y, markerfacecolor="white", zorder=3, **style)
                        ax.annotate(f"n={c['images']}", (x, y), textcoords="offset points", xytext=(5, -11), fontsize=7, color=colours[arm])
            ax.set_xticks(table.sigmas, [f"{s:g}" for s in table.sigmas])
            ax.set_xlim(table.sigmas[0] - 0.4 * gap, table.sigmas[-1] + 0.4 * gap)
            ax.set_xlabel("noise sigma (0-255)")
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.set_ylim(0, 1.05)  # fractions: the same scale in every panel and every run
            ax.grid(alpha=0.3)
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.suptitle(table.title, fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


# ---- edges: arms from weights files and peers, a progress bar ------------------------------------------------------


def parse_named(text: str) -> tuple[str, Path]:
    """'NAME=PATH' -> (NAME, PATH); a bare PATH (which may itself hold '=') -> (its stem, PATH)."""
    if Path(text).is_file() or "=" not in text:
        return Path(text).stem, Path(text)
    name, path = text.split("=", 1)
    if not name.strip():
        raise ValueError(f"{text!r}: expected NAME=PATH or PATH")
    return name.strip(), Path(path)


def model_arm(name: str, weights: Path | None, device: str = "auto") -> Arm:
    """An arm running one of our denoisers (None: the bundled weights) in fp32, BN folded, on `device`."""
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.checkpoint import bundled_weights, load_denoiser
    from fastdenoise.evaluate import backend_denoiser

    backend = make_backend(load_denoiser(weights), BackendConfig(device=device, precision="fp32"))
    return Arm(name, backend_denoiser(backend), source=str(weights or bundled_weights()), trained_on=training_folder(weights))


def training_folder(weights: Path | None) -> str | None:
    """The training-data folder named in a weights file's card (bundled cards, `train` and `train --task` runs)."""
    from fastdenoise.checkpoint import read_card

    try:
        card = read_card(weights)
    except Exception:  # a .pt checkpoint or a file without a card: nothing recorded
        return None
    config = card.get("config") or {}
    data = card.get("train_data") or config.get("data") or (config.get("train") or {}).get("data")
    return str(data).split(",")[0].strip() if data else None


def held_in(arms: Sequence[Arm], data: str) -> list[str]:
    """Arms whose weights were trained on photos of the evaluated folder (same folder, or the same last two parts)."""
    target = Path(data).resolve()
    return [a.name for a in arms if a.trained_on and (Path(a.trained_on).resolve() == target or Path(a.trained_on).parts[-2:] == target.parts[-2:])]


PEERS = ("cbm3d", "cdncnn", "cdncnn-b", "cdncnn-25", "cdncnn-35", "cdncnn-50", "ffdnet")  # cdncnn: the one trained for the sigma


def per_sigma_dncnn(data_root: Path, device: str = "auto") -> Denoise:
    """CDnCNN with the network trained for each sigma (25, 35, 50), each loaded when first needed."""
    from fastdenoise.devices import resolve_device
    from fastdenoise.peers import TRAINED_SIGMA, load_peer_model, run_on_array

    kinds = {sigma: kind for kind, sigma in TRAINED_SIGMA.items()}
    models: dict[float, nn.Module] = {}

    def denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
        if sigma not in kinds:
            raise ValueError(f"no CDnCNN trained for sigma {sigma:g}; there are {sorted(kinds)}")
        if sigma not in models:
            models[sigma] = load_peer_model(kinds[sigma], data_root).to(resolve_device(device))
        return run_on_array(models[sigma], noisy, sigma)

    return denoise


def peer_arm(name: str, data_root: Path, device: str = "auto", cbm3d_limit: int | None = None, cache_dir: Path | None = None) -> Arm:
    """A peer as an arm: CNN weights from data_root/weights (see the data README), CBM3D with its on-disk cache."""
    from fastdenoise.devices import resolve_device
    from fastdenoise.peers import LABELS, TRAINED_SIGMA, WEIGHT_FILES, PeerKind, make_peer

    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    if name == "cdncnn":
        return Arm("CDnCNN", per_sigma_dncnn(data_root, device), sigmas=tuple(sorted(TRAINED_SIGMA.values())), source=f"{data_root}/weights/dncnn/color_sigma=*.mat")
    kind = PeerKind(name)
    denoise = make_peer(kind, data_root, resolve_device(device), cache_dir)
    if kind is PeerKind.cbm3d:
        return Arm(LABELS[kind], denoise, limit=cbm3d_limit, source=f"bm3d {getattr(denoise, 'version', '')}, cache {getattr(denoise, 'cache_dir', '')}")
    trained = (TRAINED_SIGMA[kind],) if kind in TRAINED_SIGMA else None
    return Arm(LABELS[kind], denoise, sigmas=trained, source=str(Path(data_root) / WEIGHT_FILES[kind]))


def task_arms(
    separate: Path | None = None,
    joint: Path | None = None,
    cross_task: Path | None = None,
    cbm3d: int = 0,
    extra: Sequence[tuple[str, Path]] = (),
    device: str = "auto",
    cache_dir: Path | None = None,
) -> list[Arm]:
    """The rows of Tables 2 and 3 in the paper's order: noisy, CBM3D (first `cbm3d` images; 0: none), separate, joint,
    cross-task, then `extra` (name, weights); an arm whose weights are not given is left out."""
    arms = [Arm(NOISY)]
    if cbm3d > 0:
        arms.append(peer_arm("cbm3d", Path("."), "cpu", cbm3d, cache_dir))
    for name, weights in (("separate", separate), ("joint", joint), ("cross-task", cross_task), *extra):
        if weights is not None:
            arms.append(model_arm(name, Path(weights), device))
    return arms


def default_segmenter_weights(head: str, data_root: Path) -> Path | None:
    """The EdgeNets file under data_root/weights/espnetv2 for an espnetv2-* head; None for other heads (their default)."""
    from fastdenoise.heads.espnetv2 import CITYSCAPES_WEIGHTS, VOC_WEIGHTS

    files = {"espnetv2-voc": VOC_WEIGHTS, "espnetv2-cityscapes": CITYSCAPES_WEIGHTS, "espnetv2-camvid": CITYSCAPES_WEIGHTS}
    return Path(data_root) / "weights" / "espnetv2" / files[head] if head in files else None


def find_segmenter_weights(head: str, data: Path) -> Path | None:
    """The EdgeNets file for an espnetv2-* head under $FASTDENOISE_DATA, else under the nearest folder above `data`
    that is the shared data folder (`datasets.data_root`); None if it is not there."""
    root = data_root(data)
    path = default_segmenter_weights(head, root) if root is not None else None
    return path if path is not None and path.is_file() else None


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """A rich progress bar (transient) as a ProgressFn: images and sigmas done, the last one, elapsed and left."""
    from rich import progress as rp

    columns = (rp.TextColumn(f"[bold]{label}"), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TextColumn("{task.fields[last]}"),
               rp.TimeElapsedColumn(), rp.TimeRemainingColumn())  # fmt: skip
    with rp.Progress(*columns, transient=True, disable=not enabled) as bar:
        task = bar.add_task(label, total=None, last="")
        yield lambda done, total, text: bar.update(task, completed=done, total=total, last=text[-48:])
