"""`fastdenoise bench`: throughput, training steps, roofline, quality and accuracy in one report."""

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from fastdenoise.choices import ExitStatus
from fastdenoise.cli.common import BlindWeightsOpt, fail, skipped_peer, starting


def bench(
    profile: Annotated[
        str, typer.Option(help=("quick (CI-sized CPU run, a few minutes), full (CPU, all sizes and peers), gpu."))
    ] = "quick",
    data: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Shared data folder (kodak24/, weights/, SHA256SUMS); default $FASTDENOISE_DATA or ../shared/data; "
                "without one, quality runs on the demo's sample photos, without peers or accuracy checks."
            ),
            exists=True,
            file_okay=False,
        ),
    ] = None,
    weights: BlindWeightsOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help=(
                "Results root: writes OUT/<machine>/<profile>.json, .txt and -throughput/-quality.png (default: "
                "$FASTDENOISE_CACHE/bench, else ~/.cache/fastdenoise/bench)."
            ),
            file_okay=False,
        ),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            help=("A saved result (.json) to compare with: prints the ratios, exit 1 past --threshold."),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            help=("With --compare: fail when a speed falls below (1 - threshold) x the saved one."), min=0.0, max=0.99
        ),
    ] = 0.10,
    accuracy_only: Annotated[
        bool,
        typer.Option(
            "--accuracy-only",
            help=("Only the accuracy checks against the baselines (CI): no timings, nothing written."),
        ),
    ] = False,
    baselines: Annotated[
        Path | None,
        typer.Option(
            help=("Accuracy baselines; default: those shipped with the package (fastdenoise/baselines.json)."),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help=("CBM3D output cache; default ~/.cache/fastdenoise/cbm3d."), file_okay=False)
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help=("Show a saved result (.json) instead of running; redraws its plots beside it."),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Throughput per backend, training steps and the roofline, quality vs the peers, accuracy regressions: table,
    JSON, plots.

    Exit 1 when an accuracy check fails or --compare finds a metric past the threshold.
    """
    with starting():
        from rich.console import Console

        from fastdenoise.evaluation.benchmark import SECTIONS, BenchConfig
        from fastdenoise.evaluation.report import accuracy_failed, compare_results, compare_table, load_result, render

    console = Console()
    try:
        saved = load_result(compare) if compare else None
        if report:
            result = load_result(report)
        else:
            cfg = BenchConfig(
                profile=profile,
                data=str(data) if data else None,
                weights=str(weights) if weights else None,
                baselines=str(baselines) if baselines else None,
                cache=str(cache) if cache else None,
                sections=("accuracy",) if accuracy_only else SECTIONS,
            )
            result = measure(cfg, console)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise fail(str(err)) from err
    console.print(render(result))
    if report or not accuracy_only:
        write_files(result, report, out)
    failed = bool(accuracy_failed(result))
    if saved is not None:
        changes = compare_results(result, saved, threshold)
        console.print(compare_table(changes, result, saved, threshold))
        failed |= any(c.failed for c in changes)
    if failed:
        raise typer.Exit(ExitStatus.FAILED)


def measure(cfg, console):
    """Run the profile's sections under a status line; a peer whose package is missing is left out now, not after
    minutes."""
    from fastdenoise.evaluation.benchmark import get_profile, run_benchmark

    chosen = get_profile(cfg.profile)
    if "quality" in cfg.sections:
        chosen = replace(chosen, peers=tuple(p for p in chosen.peers if not skipped_peer(p)))
    with console.status(f"bench --profile {cfg.profile}") as status:
        return run_benchmark(cfg, log=status.update, profile=chosen)


def write_files(result: dict, report: Path | None, out: Path | None) -> None:
    """--report: redraw the saved result's plots beside it; else write the result's JSON, text and plots under OUT
    (default: the cache's bench/). Says what it wrote."""
    from fastdenoise.evaluation.report import plot_result, write_outputs

    if report:
        written = plot_result(result, report.parent)
    else:
        from fastdenoise.engines.export import default_cache_dir

        written = write_outputs(result, out or default_cache_dir() / "bench")
    if written:
        typer.echo("wrote " + ", ".join(str(p) for p in written))  # not rich: a path is not wrapped
