"""A finished table as Markdown (cells with intervals, the paired tests), JSON and a plot; a progress bar."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fastdenoise import progress
from fastdenoise.evaluation.tables.arms import CLEAN, ProgressFn
from fastdenoise.evaluation.tables.cells import TableResult
from fastdenoise.words import plural

METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "top1": "top-1",
    "top5": "top-5",
    "miou": "mIoU",
    "pixel_acc": "pixel accuracy",
}


DIGITS = {"psnr": 2, "ssim": 4}  # others: 3


def format_value(metric: str, value: float) -> str:
    return f"{value:.{DIGITS.get(metric, 3)}f}"


def metric_lines(table: TableResult, metric: str, subset: int | None = None) -> list[str]:
    """One Markdown table: a row per arm, a column per sigma; the best value per column in bold among the arms measured
    on every image; `(n=K)` marks a cell measured on fewer images, – a sigma the arm does not run at."""
    full = subset or table.meta.get("images")
    lines = [
        "| arm | " + " | ".join(f"sigma {s:g}" for s in table.sigmas) + " |",
        "|---" * (len(table.sigmas) + 1) + "|",
    ]
    best = {}
    for s in table.sigmas:
        values = [
            c[metric] for a in table.arms if a != CLEAN and (c := table.cell(a, s, subset)) and c["images"] == full
        ]
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
    lines = [
        f"## Paired tests against `{control}`",
        "",
        "arm - control [95% paired bootstrap interval], p: McNemar's exact test for top-1 (b/c: images only the arm / "
        "only the control got right, over images x seeds), paired bootstrap over images otherwise.",
        "",
    ]
    for metric in table.metrics:
        lines += [
            f"{METRIC_LABELS.get(metric, metric)}:",
            "",
            "| arm | " + " | ".join(f"sigma {s:g}" for s in table.sigmas) + " |",
            "|---" * (len(table.sigmas) + 1) + "|",
        ]
        for arm in dict.fromkeys(t["arm"] for t in table.tests):
            cells = []
            for sigma in table.sigmas:
                t = next(
                    (t for t in table.tests if t["arm"] == arm and t["sigma"] == sigma and t["metric"] == metric), None
                )
                if t is None:
                    cells.append("–")
                    continue
                digits = DIGITS.get(metric, 3)
                p = f"p < {1 / t['draws']:.2g}" if t["p"] == 0 else f"p {t['p']:.3g}"  # no resample crossed 0
                text = f"{t['diff']:+.{digits}f} [{t['lo']:+.{digits}f}, {t['hi']:+.{digits}f}], {p}"
                cells.append(
                    text
                    + (f" (b/c {t['b']}/{t['c']})" if "b" in t else "")
                    + (f" (n={t['images']})" if t["images"] != table.meta.get("images") else "")
                )
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
        arms = ", ".join(
            a for a in table.arms if (c := next((c for c in table.cells if c["arm"] == a), None)) and c["images"] == k
        )
        lines += [f"## On the first {plural(k, 'image')} only, where {arms} ran: every arm on the same images", ""]
        for metric in table.metrics:
            lines += [f"{METRIC_LABELS.get(metric, metric)}:", "", *metric_lines(table, metric, k), ""]
    lines += test_lines(table)
    notes = ["[lo, hi]: 95% percentile bootstrap interval, images resampled (all their noise seeds together)."]
    if CLEAN in table.arms:
        notes.append("clean: the head on the clean image (no noise), the same value in every column.")
    if table.meta.get("held_in"):
        notes.append(
            "trained on photos of this folder (their cards say so; check the split): "
            f"{', '.join(table.meta['held_in'])}."
        )
    if any(c["images"] != full for c in table.cells if c.get("subset") is None):
        notes.append(f"(n=K): measured on the first K of the {plural(full, 'image')} only.")
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
    payload = {
        "table": table.name,
        "title": table.title,
        "metrics": table.metrics,
        "arms": table.arms,
        "sigmas": table.sigmas,
        "meta": {**table.meta, **(meta or {})},
        "cells": table.cells,
        "tests": table.tests,
        "rows": table.rows,
    }
    paths = [out / f"{table.name}.md", out / f"{table.name}.json", out / f"{table.name}.png"]
    paths[0].write_text(markdown(table))
    paths[1].write_text(json.dumps(finite(payload), indent=1, allow_nan=False))
    plot_table(table, paths[2])
    return paths


def plot_table(table: TableResult, path: Path) -> Path:
    """Table 1: a panel per sigma of PSNR bars per arm (zoomed x axis); Tables 2-3: a panel per metric, a line per arm
    against sigma, the clean value as a dashed line. Hatched bars, hollow markers and `n=K` flag subset cells."""
    from fastdenoise.plotting import pyplot

    plt = pyplot()
    colours = dict(zip([a for a in table.arms if a != CLEAN], plt.get_cmap("tab10").colors * 3))
    full = table.meta.get("images")
    fig = (psnr_bars if table.name == "table1" else metric_lines_plot)(plt, table, colours, full)
    fig.suptitle(table.title, fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def psnr_bars(plt, table: TableResult, colours: dict, full: int | None):
    """Table 1's figure: a panel per sigma of PSNR bars per arm (zoomed x axis); hatched bars flag subset cells."""
    fig, axes = plt.subplots(
        1,
        len(table.sigmas),
        figsize=(3.6 * len(table.sigmas) + 1.2, 0.5 * len(table.arms) + 1.6),
        layout="constrained",
        squeeze=False,
    )
    for ax, sigma in zip(axes[0], table.sigmas):
        present = [(a, c) for a in table.arms if (c := table.cell(a, sigma))]
        values = [c["psnr"] for _, c in present]
        y = range(len(present))
        bars = ax.barh(list(y), values, color=[colours[a] for a, _ in present], edgecolor="white")
        for bar, (_, c) in zip(bars, present):
            bar.set_hatch("//" if c["images"] != full else "")
        for i, (_, c) in enumerate(present):
            ax.text(
                c["psnr"],
                i,
                f" {c['psnr']:.2f}" + (f" (n={c['images']})" if c["images"] != full else ""),
                va="center",
                fontsize=8,
            )
        ax.set_yticks(list(y), [a for a, _ in present], fontsize=9)
        ax.invert_yaxis()
        if values:
            span = max(values) - min(values)
            ax.set_xlim(min(values) - max(0.5, 0.6 * span), max(values) + max(0.6, 0.5 * span))
        ax.set_title(f"sigma {sigma:g}", fontsize=10)
        ax.set_xlabel("PSNR (dB); axis zoomed, not from 0")
        ax.grid(axis="x", alpha=0.3)
    return fig


def metric_lines_plot(plt, table: TableResult, colours: dict, full: int | None):
    """Tables 2-3's figure: a panel per metric, a line per arm against sigma, the clean value as a dashed line."""
    fig, axes = plt.subplots(
        1, len(table.metrics), figsize=(5.2 * len(table.metrics) + 1.5, 4.2), layout="constrained", squeeze=False
    )
    arms = [a for a in table.arms if a != CLEAN]
    gap = min(b - a for a, b in zip(table.sigmas, table.sigmas[1:])) if len(table.sigmas) > 1 else 10.0
    dodge = {a: (k - (len(arms) - 1) / 2) * 0.04 * gap for k, a in enumerate(arms)}  # equal values stay apart
    markers = dict(zip(arms, "osD^vPX<>" * 3))
    for ax, metric in zip(axes[0], table.metrics):
        clean = table.cell(CLEAN, None)
        if clean is not None:
            ax.axhline(clean[metric], color="black", linestyle="--", linewidth=1, label="clean")
            ax.annotate(
                f"clean {format_value(metric, clean[metric])}",
                (1, clean[metric]),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 4),
                textcoords="offset points",
                ha="right",
                fontsize=8,
            )
        for arm in arms:
            points = [(s, c) for s in table.sigmas if (c := table.cell(arm, s))]
            xs, ys = [s + dodge[arm] for s, _ in points], [c[metric] for _, c in points]
            subset = [c["images"] != full for _, c in points]
            style = {"color": colours[arm], "marker": markers[arm], "markersize": 6}
            ax.plot(
                xs, ys, label=arm + (" (subset)" if any(subset) else ""), linestyle=":" if any(subset) else "-", **style
            )
            for x, y, (_, c), sub in zip(xs, ys, points, subset):
                if sub:
                    ax.plot(x, y, markerfacecolor="white", zorder=3, **style)
                    ax.annotate(
                        f"n={c['images']}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(5, -11),
                        fontsize=7,
                        color=colours[arm],
                    )
        ax.set_xticks(table.sigmas, [f"{s:g}" for s in table.sigmas])
        ax.set_xlim(table.sigmas[0] - 0.4 * gap, table.sigmas[-1] + 0.4 * gap)
        ax.set_xlabel("noise sigma (0-255)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_ylim(0, 1.05)  # fractions: the same scale in every panel and every run
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    return fig


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """The shared progress bar (transient) as a ProgressFn: images and sigmas done, the last one, elapsed and left."""
    with progress.progress_bar(label, enabled=enabled) as bar:
        task = bar.add_task(label, total=None, last="")
        yield lambda done, total, text: bar.update(task, completed=done, total=total, last=text[-48:])
