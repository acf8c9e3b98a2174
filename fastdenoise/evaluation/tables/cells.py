"""Per-image rows reduced to table cells by pure functions: means or summed confusions per arm and sigma, subsets,
bootstrap intervals and paired tests against a control arm."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fastdenoise.evaluation.tables.arms import CLEAN, Arm
from fastdenoise.evaluation.tables.samples import pixel_accuracy
from fastdenoise.stats import (
    bootstrap_interval,
    mcnemar_exact,
    mean_reduce,
    miou_reduce,
    paired_bootstrap,
    pixel_accuracy_reduce,
)
from fastdenoise.training.joint import mean_iou


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
        return next(
            (c for c in self.cells if c["arm"] == arm and c["sigma"] == sigma and c.get("subset") == subset), None
        )

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
        {
            "arm": arm,
            "sigma": sigma,
            "images": len({r["position"] for r in group}),
            "samples": len(group),
            **{m: float(np.mean([r[m] for r in group])) for m in metrics},
        }
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
        cells.append(
            {
                "arm": arm,
                "sigma": sigma,
                "images": images,
                "miou": miou,
                "pixel_acc": pixel_accuracy(counts),
                "iou": per_class,
                "confusion": np.asarray(counts).tolist(),
            }
        )
    return cells


def with_subsets(
    rows: list[dict], arms: Sequence[Arm], count: int, reduce: Callable[[list[dict]], list[dict]]
) -> list[dict]:
    """The cells over all images, then, for each arm run on only its first K images, every arm's cells over those same
    K images, marked "subset": K (so a CBM3D subset is compared on equal terms)."""
    cells = reduce(rows)
    for k in sorted({a.limit for a in arms if a.limit is not None and a.limit < count}):
        cells += [{**c, "subset": k} for c in reduce([r for r in rows if r["position"] < k])]
    return cells


CONFUSION_METRICS = {"miou": miou_reduce, "pixel_acc": pixel_accuracy_reduce}  # functions of the summed confusion


def seeds_text(seeds: Sequence[int]) -> str:
    return f"noise seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def image_parts(rows: Iterable[dict], metric: str) -> dict[int, np.ndarray]:
    """Per image position, the parts of a metric summed over its rows (noise seeds): the confusion, or [sum, count]."""
    parts: dict[int, np.ndarray] = {}
    for r in rows:
        value = (
            np.asarray(r["confusion"], dtype=np.float64).ravel()
            if metric in CONFUSION_METRICS
            else np.array([r[metric], 1.0])
        )
        parts[r["position"]] = parts.get(r["position"], 0) + value
    return parts


def with_intervals(cells: list[dict], rows: list[dict], metrics: Sequence[str], draws: int) -> list[dict]:
    """Each cell with `<metric>_ci`: the 95% percentile bootstrap interval, images resampled (their seeds together)."""
    for cell in cells:
        subset = cell.get("subset")
        mine = [
            r
            for r in rows
            if r["arm"] == cell["arm"] and r["sigma"] == cell["sigma"] and (subset is None or r["position"] < subset)
        ]
        for metric in metrics:
            parts = image_parts(mine, metric)
            stacked = np.stack([parts[p] for p in sorted(parts)])
            cell[f"{metric}_ci"] = list(bootstrap_interval(stacked, CONFUSION_METRICS.get(metric, mean_reduce), draws))
    return cells


def paired_tests(
    rows: list[dict],
    arms: Sequence[Arm],
    sigmas: Sequence[float],
    control: str | None,
    metrics: Sequence[str],
    draws: int,
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
            pairs = [
                (r, by_key[(control, sigma, r["position"], r["seed"])])
                for r in rows
                if r["arm"] == arm and r["sigma"] == sigma and (control, sigma, r["position"], r["seed"]) in by_key
            ]
            if not pairs:
                continue
            for metric in metrics:
                ours, theirs = image_parts([a for a, _ in pairs], metric), image_parts([b for _, b in pairs], metric)
                order = sorted(ours)
                test = paired_bootstrap(
                    np.stack([ours[p] for p in order]),
                    np.stack([theirs[p] for p in order]),
                    CONFUSION_METRICS.get(metric, mean_reduce),
                    draws,
                )
                entry = {
                    "arm": arm,
                    "control": control,
                    "sigma": sigma,
                    "metric": metric,
                    "images": len(order),
                    "pairs": len(pairs),
                    "test": "paired bootstrap",
                    "draws": draws,
                    **test,
                }
                if metric == "top1":
                    exact = mcnemar_exact(
                        np.array([a["top1"] for a, _ in pairs]), np.array([b["top1"] for _, b in pairs])
                    )
                    entry |= {
                        "test": "McNemar exact",
                        "p": exact["p"],
                        "bootstrap_p": test["p"],
                        "b": exact["b"],
                        "c": exact["c"],
                    }
                tests.append(entry)
    return tests


def arm_order(arms: Sequence[Arm], clean: bool) -> list[str]:
    return [a.name for a in arms] + ([CLEAN] if clean else [])
