"""Benchmark results on disk and on screen: JSON files, rich tables with the roofline line, ratios against a saved
result, and PNG plots (throughput per backend; PSNR vs MP/s beside the peers).

A result (from `evaluation.benchmark.run_benchmark`) is a dict: profile, created, machine, machine_name, device,
weights, gflop_per_mp, peak {precision: GFLOP/s}, throughput and training rows {name, mp_per_s, images_per_s or
samples_per_s, gflops, ...}, skipped [{name, reason}], quality rows {method, images, psnr, mp_per_s, ...} and accuracy
outcomes {key, psnr, baseline, tolerance_db, status, message}.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from fastdenoise.plotting import plain_log_ticks, pyplot
from fastdenoise.words import plural

STATUS_STYLE = {"pass": "green", "fail": "bold red", "no-baseline": "yellow", "error": "bold red"}


# --------------------------------------------------------------------------------------------------------- files


def save_result(result: dict, folder: Path) -> Path:
    """Write <profile>.json into folder (usually bench/results/<machine>/); returns its path."""
    path = Path(folder) / f"{result['profile']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return path


def write_outputs(result: dict, root: Path) -> list[Path]:
    """root/<machine>/<profile>.json, .txt (the tables) and the PNG plots; returns the paths written."""
    folder = Path(root) / result["machine_name"]
    path = save_result(result, folder)
    text = folder / f"{result['profile']}.txt"
    text.write_text(render_text(result))
    return [path, text, *plot_result(result, folder)]


def load_result(path: Path) -> dict:
    """A result saved by `save_result`; ValueError for anything else."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a benchmark result ({err})") from err
    if not isinstance(result, dict) or "profile" not in result or "throughput" not in result:
        raise ValueError(f"{path}: not a benchmark result (no profile/throughput)")
    return result


# -------------------------------------------------------------------------------------------------------- tables


def naive_rates(result: dict) -> dict[tuple[int, int], float]:
    """MP/s of the naive loop per (height, width): the base of every 'x naive' ratio."""
    return {(r["height"], r["width"]): r["mp_per_s"] for r in result["throughput"] if r.get("backend") == "naive"}


def peak_fraction(row: dict, peak: dict[str, float]) -> float | None:
    """Achieved GFLOP/s over the matmul peak of the row's precision (fp16 rows against the fp16 or bf16 peak)."""
    roof = peak.get(row.get("precision", "fp32")) or (peak.get("bf16") if row.get("precision") == "fp16" else None)
    return row["gflops"] / roof if roof else None


def roofline_line(result: dict) -> str:
    """One sentence: the best throughput row's achieved GFLOP/s against the measured matmul peaks."""
    peak = result.get("peak") or {}
    rows = [r for r in result.get("throughput", []) if r.get("backend") != "naive"]
    if not rows or not peak:
        return "roofline: not measured (needs the peak and throughput sections)"
    best = max(rows, key=lambda r: r["mp_per_s"])
    peaks = ", ".join(f"{k}{' (TF32)' if k == 'fp32' and result.get('tf32') else ''} {v:,.0f}" for k, v in peak.items())
    fraction = peak_fraction(best, peak)
    share = f" = {peak_cell(fraction)} of the {best['precision']} peak" if fraction is not None else ""
    return (
        f"roofline: {result.get('gflop_per_mp', 441):.0f} GFLOP/MP; best {best['name']}: "
        f"{fmt(best['mp_per_s'])} MP/s = {fmt(best['gflops'])} GFLOP/s achieved{share}; "
        f"measured matmul peak (GFLOP/s): {peaks}"
    )


def fmt(value: float) -> str:
    """3 significant digits, no exponent for the usual ranges (0.00123, 12.3, 1,230)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) >= 1e-4 else f"{value:.1e}"


def skipped_lines(result: dict, training: bool) -> list[Text]:
    """One dim line per skip reason, naming the cases it covers."""
    by_reason: dict[str, list[str]] = {}
    for row in result.get("skipped", []):
        if row["name"].startswith("train") == training:
            by_reason.setdefault(row["reason"], []).append(row["name"])
    return [Text(f"skipped {', '.join(names)}: {reason}", style="dim") for reason, names in by_reason.items()]


def throughput_table(result: dict) -> Table:
    naive, peak = naive_rates(result), result.get("peak") or {}
    table = Table(
        "case", "MP/s", "images/s", "GFLOP/s", "% peak", "x naive", title="Inference throughput", title_justify="left"
    )
    for row in result["throughput"]:
        base = naive.get((row["height"], row["width"]))
        table.add_row(
            row["name"],
            fmt(row["mp_per_s"]),
            fmt(row["images_per_s"]),
            fmt(row["gflops"]),
            peak_cell(peak_fraction(row, peak)),
            f"{row['mp_per_s'] / base:.2f}" if base else "-",
        )
    return table


ABOVE_ROOF = (
    "! above the measured matmul roof of its precision: the roof was measured while other work shared the "
    "device, or the convolutions ran a cheaper algorithm (Winograd, FFT) than the FLOPs counted"
)


def peak_cell(fraction: float | None) -> str:
    """The '% peak' cell: a share above 1 is marked `!` (explained by ABOVE_ROOF under the table)."""
    if fraction is None:
        return "-"
    return f"{fraction:.0%}" + ("!" if fraction > 1 else "")


def above_roof_lines(result: dict) -> list[Text]:
    """The note under the throughput table when a row ran above its roof."""
    marked = any(peak_cell(peak_fraction(r, result.get("peak") or {})).endswith("!") for r in result["throughput"])
    return [Text(ABOVE_ROOF, style="dim")] if marked else []


def training_table(result: dict) -> Table:
    table = Table(
        "training step",
        "samples/s",
        "MP/s",
        "~GFLOP/s",
        title="Training throughput (random patches)",
        title_justify="left",
    )
    for row in result["training"]:
        table.add_row(row["name"], fmt(row["samples_per_s"]), fmt(row["mp_per_s"]), fmt(row["gflops"]))
    return table


def quality_table(result: dict) -> Table:
    rows = result["quality"]
    first = rows[0]
    title = f"Quality / speed: {first['data']}, sigma {first['sigma']:g}, seed {first['seed']} (per image, batch 1)"
    table = Table("method", "images", "PSNR (dB)", "MP/s", "GFLOP/MP", "x naive", title=title, title_justify="left")
    naive = next((r["mp_per_s"] for r in rows if r["key"] == "naive"), None)
    for row in rows:
        gflop = row.get("gflop_per_mp")
        table.add_row(
            row["method"],
            str(row["images"]),
            f"{row['psnr']:.2f}",
            fmt(row["mp_per_s"]),
            f"{gflop:,.0f}" if gflop else "-",
            f"{row['mp_per_s'] / naive:.2f}" if naive else "-",
        )
    return table


def accuracy_table(result: dict) -> Table:
    table = Table(
        "check", "PSNR (dB)", "baseline", "tol.", "status", title="Accuracy regressions", title_justify="left"
    )
    for row in result["accuracy"]:
        psnr, base = row["psnr"], row["baseline"]
        table.add_row(
            row["key"],
            f"{psnr:.3f}" if psnr is not None else "-",
            f"{base:.3f}" if base is not None else "not recorded",
            f"{row['tolerance_db']:g}",
            Text(row["status"], style=STATUS_STYLE.get(row["status"], "")),
        )
    return table


def header(result: dict) -> str:
    m = result["machine"]
    gpu = f", GPU {m['gpu']['name']} (driver {m['gpu'].get('driver', '?')})" if m.get("gpu") else ""
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v and k != "fastdenoise")
    threads = f"{plural(m['cores'], 'core')}, {plural(m['torch_threads'], 'torch thread')}"
    isa = f" [{' '.join(m['isa'])}]" if m.get("isa") else ""  # results before the flags were recorded have none
    return (
        f"fastdenoise bench --profile {result['profile']} on {result['device']}: {m['cpu']}{isa} ({threads}){gpu}; "
        f"{source_line(m)}; {versions}; {result.get('seconds', 0):.0f} s"
    )


def source_line(machine: dict) -> str:
    """The code that ran: its git commit, or the installed version outside a git checkout."""
    if machine.get("commit"):
        return f"commit {machine['commit'][:10]}" + (" (dirty)" if machine.get("dirty") else "")
    return f"fastdenoise {machine['versions'].get('fastdenoise') or '?'} (not a git checkout)"


def render(result: dict) -> Group:
    """Everything a run measured, as rich renderables (print with rich's Console)."""
    parts: list = [Text(header(result), style="bold")]
    if result.get("throughput"):
        parts += [
            throughput_table(result),
            *above_roof_lines(result),
            *skipped_lines(result, training=False),
            Text(roofline_line(result)),
        ]
    if result.get("training"):
        parts += [training_table(result), *skipped_lines(result, training=True)]
    if result.get("quality"):
        parts.append(quality_table(result))
    if result.get("accuracy"):
        parts.append(accuracy_table(result))
        parts += [
            Text(r["message"], style=STATUS_STYLE[r["status"]]) for r in result["accuracy"] if r["status"] != "pass"
        ]
    return Group(*parts)


def render_text(result: dict, width: int = 120) -> str:
    """The tables as plain text (saved beside the JSON)."""
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(result))
    return console.export_text()


def accuracy_failed(result: dict) -> list[str]:
    """Messages of failed (or errored) accuracy checks."""
    return [r["message"] for r in result.get("accuracy", []) if r["status"] in ("fail", "error")]


# ------------------------------------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Change:
    """One metric of a result against the same metric of a saved result."""

    section: str
    name: str
    metric: str
    saved: float
    current: float
    failed: bool

    @property
    def ratio(self) -> float:
        return self.current / self.saved if self.saved else math.nan


def compare_results(current: dict, saved: dict, threshold: float = 0.10, psnr_tolerance: float = 0.05) -> list[Change]:
    """Speeds (MP/s, samples/s) fail below (1 - threshold) x saved; PSNRs fail more than psnr_tolerance dB below."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    changes = []

    def speed(section: str, key: str, metric: str) -> None:
        before = {r[key]: r for r in saved.get(section, [])}
        for row in current.get(section, []):
            if row[key] in before and before[row[key]].get(metric):
                old, new = before[row[key]][metric], row[metric]
                changes.append(Change(section, row[key], metric, old, new, new < (1 - threshold) * old))

    speed("throughput", "name", "mp_per_s")
    speed("training", "name", "samples_per_s")
    speed("quality", "method", "mp_per_s")
    before = {(r["method"], r["images"]): r for r in saved.get("quality", [])}
    for row in current.get("quality", []):
        old = before.get((row["method"], row["images"]))
        if old:
            changes.append(
                Change(
                    "quality",
                    row["method"],
                    "psnr",
                    old["psnr"],
                    row["psnr"],
                    row["psnr"] < old["psnr"] - psnr_tolerance,
                )
            )
    return changes


def compare_table(changes: list[Change], current: dict, saved: dict, threshold: float) -> Group:
    title = (
        f"Against {saved.get('machine_name', '?')} {saved.get('created', '')} "
        f"(fail: speed < {1 - threshold:.0%} of saved, PSNR drop)"
    )
    table = Table("section", "name", "metric", "saved", "now", "ratio", title=title, title_justify="left")
    for c in changes:
        ratio = f"{c.current - c.saved:+.3f} dB" if c.metric == "psnr" else f"{c.ratio:.2f}x"
        style = "bold red" if c.failed else ""
        table.add_row(c.section, c.name, c.metric, fmt(c.saved), fmt(c.current), Text(ratio, style=style))
    parts: list = [table]
    if current.get("machine_name") != saved.get("machine_name"):
        parts.append(
            Text(
                f"note: different machines ({current.get('machine_name')} vs {saved.get('machine_name')}): "
                "speeds are not comparable",
                style="yellow",
            )
        )
    failed = [c for c in changes if c.failed]
    parts.append(
        Text(f"{len(failed)} of {len(changes)} metrics past the threshold", style="bold red" if failed else "green")
    )
    return Group(*parts)


# --------------------------------------------------------------------------------------------------------- plots


def plot_throughput(result: dict, path: Path) -> Path:
    """Horizontal bars of MP/s per case, coloured by backend, hatched for bf16/fp16, with the matmul roofs marked."""
    plt = pyplot()
    rows = sorted(result["throughput"], key=lambda r: (r["height"] * r["width"], r["batch"], r["mp_per_s"]))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    colours = dict(zip(backends, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.3 * len(rows)), layout="constrained")
    y = list(range(len(rows)))
    bars = ax.barh(y, [r["mp_per_s"] for r in rows], color=[colours[r["backend"]] for r in rows], edgecolor="white")
    for bar, row in zip(bars, rows):
        if row.get("precision") in ("bf16", "fp16"):
            bar.set_hatch("//")
        ax.text(
            bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {fmt(row['mp_per_s'])}", va="center", fontsize=8
        )
    for i in range(1, len(rows)):  # a rule between resolution/batch groups
        if (rows[i]["height"], rows[i]["width"], rows[i]["batch"]) != (
            rows[i - 1]["height"],
            rows[i - 1]["width"],
            rows[i - 1]["batch"],
        ):
            ax.axhline(i - 0.5, color="grey", linewidth=0.5)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=8)
    gflop_per_mp = result.get("gflop_per_mp", 441.0)
    roofs = {precision: gflops / gflop_per_mp for precision, gflops in (result.get("peak") or {}).items()}
    values = [r["mp_per_s"] for r in rows] + list(roofs.values())
    if max(values) / min(values) > 30:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
    for i, (precision, roof) in enumerate(roofs.items()):
        ax.axvline(roof, color="black", linestyle=("--", ":", "-.")[i % 3], linewidth=1)
        ax.text(
            roof, len(rows) - 0.45 + 0.55 * i, f" {precision} matmul roof {fmt(roof)} MP/s", fontsize=8, va="bottom"
        )
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[b]) for b in backends]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="lightgrey", hatch="//", edgecolor="white"))
    ax.legend(handles, [*backends, "bf16 / fp16"], loc="lower right", fontsize=8, framealpha=0.9)
    ax.set_xlabel(
        f"megapixels per second, median round (1 MP = {gflop_per_mp:.0f} GFLOP); roof = matmul peak / 441 GFLOP"
    )
    ax.set_ylim(-0.6, len(rows) + 0.6 * max(1, len(roofs)))
    ax.set_title(
        f"fastdenoise inference throughput, profile {result['profile']}, {result['machine_name']} ({result['device']})",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3, which="both")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_quality(result: dict, path: Path) -> Path:
    """PSNR against MP/s (log scale) for ours, the naive loop and the peers: the quality/speed plot."""
    plt = pyplot()
    rows = sorted(result["quality"], key=lambda r: r["mp_per_s"])
    first = result["quality"][0]
    style = {"bundled": ("o", "tab:red", "fastdenoise"), "naive": ("o", "tab:orange", "naive loop (ours, unfolded)")}
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    seen = set()

    def crowd(i: int) -> int:
        """Labels already placed near point i (close PSNR, MP/s within 4x): stack this one above them."""
        here = rows[i]
        return sum(
            abs(r["psnr"] - here["psnr"]) < 0.15 and here["mp_per_s"] / max(r["mp_per_s"], 1e-12) < 4 for r in rows[:i]
        )

    for i, row in enumerate(rows):
        marker, colour, group = style.get(row["key"], ("s", "tab:blue", "peers"))
        ax.scatter(
            row["mp_per_s"],
            row["psnr"],
            s=70,
            marker=marker,
            color=colour,
            zorder=3,
            label=None if group in seen else group,
        )
        seen.add(group)
        label = row["method"] + (f" ({row['images']} img)" if row["images"] != first["images"] else "")
        ax.annotate(
            label, (row["mp_per_s"], row["psnr"]), textcoords="offset points", xytext=(7, 7 + 11 * crowd(i)), fontsize=8
        )
    ax.set_xscale("log")
    low, high = rows[0]["mp_per_s"], rows[-1]["mp_per_s"]
    ax.set_xlim(low / 1.6, high * 3)  # room for the labels on the right
    psnrs = [r["psnr"] for r in rows]
    margin = max(0.3, 0.08 * (max(psnrs) - min(psnrs)))
    ax.set_ylim(min(psnrs) - margin, max(psnrs) + margin)
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel("megapixels per second (log scale; one image per call)")
    ax.set_ylabel("PSNR (dB)")
    images = f"{first['images']} image" + ("s" if first["images"] != 1 else "")
    ax.set_title(
        f"Quality vs speed: {first['data']} ({images}), sigma {first['sigma']:g}, seed {first['seed']}; "
        f"{result['machine_name']} ({result['device']})",
        fontsize=10,
    )
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_result(result: dict, folder: Path) -> list[Path]:
    """<profile>-throughput.png and <profile>-quality.png in folder, for the sections the result has."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if result.get("throughput"):
        paths.append(plot_throughput(result, folder / f"{result['profile']}-throughput.png"))
    if result.get("quality"):
        paths.append(plot_quality(result, folder / f"{result['profile']}-quality.png"))
    return paths
