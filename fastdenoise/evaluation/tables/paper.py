"""The paper's Tables 1-3: Kodak24 PSNR beside the peers, ImageNet top-1/top-5 and CamVid mIoU under noise, per arm.

One image at a time is read, noised per the protocol, passed through every arm (a denoiser, or none) and scored;
the per-image rows reduce to cells (`tables.cells`); `tables.output.write_table` writes <name>.md, .json and .png.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from fastdenoise.choices import NoiseAt, Split, values
from fastdenoise.evaluation.evaluate import evaluate
from fastdenoise.evaluation.tables.arms import Arm, ProgressFn, check_arms, held_in
from fastdenoise.evaluation.tables.cells import (
    TableResult,
    arm_order,
    confusion_cells,
    mean_cells,
    paired_tests,
    seeds_text,
    with_intervals,
    with_subsets,
)
from fastdenoise.evaluation.tables.samples import (
    Sample,
    classification_scores,
    frozen_head,
    head_logits,
    imagenet_entries,
    load_classification_sample,
    load_photo_sample,
    photo_logits,
    quantize_text,
    score_stream,
    segmentation_entries,
    segmentation_scores,
    stream_masks,
)
from fastdenoise.images import list_images
from fastdenoise.models.heads.geometry import classifier_geometry
from fastdenoise.noise import check_sigma
from fastdenoise.words import plural


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
    noise_at: str = "crop"  # crop: the paper's protocol; photo: the user's path (`run --task classify`)

    def __post_init__(self) -> None:
        check_common(self.sigmas, self.limit, self.seeds, self.draws)
        if self.noise_at not in values(NoiseAt):
            raise ValueError(f"noise_at must be one of {', '.join(values(NoiseAt))}; got {self.noise_at!r}")
        if self.split not in values(Split):
            raise ValueError(f"split must be one of {', '.join(values(Split))}; got {self.split!r}")
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


def table1(cfg: Table1Config, arms: Sequence[Arm], progress: ProgressFn | None = None) -> TableResult:
    """Mean PSNR (and SSIM) per arm and sigma on cfg.data, through `evaluation.evaluate` (image i noised with
    [seed, i])."""
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
                result = evaluate(
                    denoise, Path(cfg.data), sigmas, seed, arm.name, with_ssim=cfg.ssim, limit=n, progress=tick
                )
                # per sigma, images in order
                rows += [{"arm": arm.name, "position": i % n, "seed": seed, **r} for i, r in enumerate(result.rows)]
    metrics = ("psnr", "ssim") if cfg.ssim else ("psnr",)
    noise = (
        "Gaussian noise, image i of the sorted folder gets numpy default_rng([seed, i]); the noisy input is not "
        "clipped; outputs are clipped and rounded to uint8; PSNR over all RGB pixels."
    )
    meta = {
        "config": asdict(cfg),
        "arms": [a.record() for a in arms],
        "images": count,
        "data": cfg.data,
        "noise": noise,
    }
    title = f"Table 1: denoising PSNR on {Path(cfg.data).name} ({plural(count, 'image')}, {seeds_text(cfg.seeds)})"
    cells = with_intervals(with_subsets(rows, arms, count, lambda r: mean_cells(r, metrics)), rows, metrics, cfg.draws)
    tests = paired_tests(rows, arms, cfg.sigmas, cfg.control, metrics, cfg.draws)
    return TableResult("table1", title, metrics, arm_order(arms, False), list(cfg.sigmas), cells, rows, meta, tests)


def table2(
    cfg: Table2Config,
    arms: Sequence[Arm],
    head: nn.Module | None = None,
    clean: bool = True,
    progress: ProgressFn | None = None,
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

    photo = cfg.noise_at == "photo"

    def score(sample: Sample, images: list[np.ndarray]) -> list[dict]:
        logits = photo_logits(head, images, device, resize, crop) if photo else head_logits(head, images, device)
        return [{"label": sample.target, **s} for s in classification_scores(logits, int(sample.target))]

    rows = []
    for k, seed in enumerate(cfg.seeds):
        samples = (load_photo_sample(e) if photo else load_classification_sample(e, resize, crop) for e in entries)
        rows += score_stream(
            samples, len(entries), arms, cfg.sigmas, seed, cfg.quantize, clean and k == 0, score, progress
        )
    metrics = ("top1", "top5")
    cells = with_intervals(
        with_subsets(rows, arms, len(entries), lambda r: mean_cells(r, metrics)), rows, metrics, cfg.draws
    )
    tests = paired_tests(rows, arms, cfg.sigmas, cfg.control, metrics, cfg.draws)
    noise = (
        (
            f"short side resized to {resize} (PIL bicubic), centre crop {crop}x{crop}; Gaussian noise added to the "
            f"crop, "
            f"image i (row i of labels.csv) gets numpy default_rng([seed, i]); {quantize_text(cfg.quantize)}"
        )
        if not photo
        else (
            f"the user's path: Gaussian noise added to the whole photo at its own size, image i (row i of labels.csv) "
            f"gets numpy default_rng([seed, i]); {quantize_text(cfg.quantize)} The head sees each whole 8-bit photo "
            f"as `run --task classify` does: short side resized to {resize} (bicubic, antialiased), centre crop "
            f"{crop}x{crop}."
        )
    )
    meta = {
        "config": asdict(cfg),
        "arms": [a.record() for a in arms],
        "images": len(entries),
        "data": cfg.data,
        "labels": str(labels),
        "head": cfg.head,
        "head_class": type(head).__name__,
        "resize": resize,
        "crop": crop,
        "noise": noise,
        "split_rule": "rows of labels.csv, 0-based: train = even rows, test = odd rows, all = every row",
        "held_in": held_in(arms, cfg.data),
    }
    title = (
        f"Table 2: {cfg.head} top-1 / top-5 on {Path(cfg.data).name}, split {cfg.split}"
        f"{', noise on the whole photo' if photo else ''} ({plural(len(entries), 'image')}, {seeds_text(cfg.seeds)})"
    )
    return TableResult("table2", title, metrics, arm_order(arms, clean), list(cfg.sigmas), cells, rows, meta, tests)


def table3(
    cfg: Table3Config,
    arms: Sequence[Arm],
    head: nn.Module | None = None,
    clean: bool = True,
    progress: ProgressFn | None = None,
) -> TableResult:
    """Dataset mIoU (confusions summed over images) of a frozen segmenter per arm and sigma; noise at native size."""
    check_arms(arms)
    head, device = frozen_head(head, cfg.head, cfg.head_weights, "segment", cfg.device)
    entries = segmentation_entries(Path(cfg.images), Path(cfg.masks), cfg.limit)

    def score(sample: Sample, images: list[np.ndarray]) -> list[dict]:
        return segmentation_scores(
            head_logits(head, images, device, cfg.scale),
            sample.target,
            cfg.ignore_index,  # type: ignore[arg-type]
        )

    rows = []
    for k, seed in enumerate(cfg.seeds):
        samples = stream_masks(entries, head.num_classes, cfg.ignore_index)
        rows += score_stream(
            samples, len(entries), arms, cfg.sigmas, seed, cfg.quantize, clean and k == 0, score, progress
        )
    metrics = ("miou", "pixel_acc")
    cells = with_intervals(
        with_subsets(rows, arms, len(entries), lambda r: confusion_cells(r, head.class_names)), rows, metrics, cfg.draws
    )
    tests = paired_tests(rows, arms, cfg.sigmas, cfg.control, metrics, cfg.draws)
    # per-image confusions live on in the cells' sums
    rows = [{k: v for k, v in r.items() if k != "confusion"} for r in rows]
    noise = (
        f"Gaussian noise at the native size, image i of the sorted folder gets numpy default_rng([seed, i]); "
        f"{quantize_text(cfg.quantize)} The head sees that image resized by {cfg.scale:g} (PIL bicubic); "
        f"its logits are resized back (bilinear) and scored on the original masks, value {cfg.ignore_index} ignored; "
        "mIoU from the confusion summed over all images, over classes present in ground truth or prediction."
    )
    meta = {
        "config": asdict(cfg),
        "arms": [a.record() for a in arms],
        "images": len(entries),
        "data": cfg.images,
        "head": cfg.head,
        "noise": noise,
        "held_in": held_in(arms, cfg.images),
    }
    title = (
        f"Table 3: {cfg.head} mIoU on {Path(cfg.images).name} at scale {cfg.scale:g} "
        f"({plural(len(entries), 'image')}, {seeds_text(cfg.seeds)})"
    )
    return TableResult("table3", title, metrics, arm_order(arms, clean), list(cfg.sigmas), cells, rows, meta, tests)
