"""`fastdenoise run`: denoise a folder (and classify or segment each image with --task)."""

import math
from pathlib import Path
from typing import Annotated

import typer

from fastdenoise import interrupts
from fastdenoise.choices import BackendKind, Executor, ExitStatus, ImageFormat, LoaderKind, Precision, Task
from fastdenoise.cli.common import (
    BackendOpt,
    DeviceOpt,
    EnsembleOpt,
    ModelNameOpt,
    PrecisionOpt,
    WeightsOpt,
    backend_config,
    fail,
    library_errors,
    starting,
)


def run(
    input: Annotated[
        Path, typer.Argument(metavar="INPUT", help=("Folder of images (searched recursively), or one image file."))
    ],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="Output folder; mirrors the input tree.")],
    weights: WeightsOpt = None,
    model: ModelNameOpt = None,
    sigma: Annotated[
        str | None,
        typer.Option(
            metavar="S|auto",
            help=(
                "Noise level of the inputs (0-255), if known: picks the bundled per-sigma model within 7.5 of it, else "
                "blind. auto: each image's level is estimated (manifest: sigma_est) and chosen for the same way."
            ),
        ),
    ] = None,
    ensemble: EnsembleOpt = False,
    backend: BackendOpt = BackendKind.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    engine: Annotated[
        Path | None, typer.Option(help=("Prebuilt TensorRT engine or ONNX file for those backends."))
    ] = None,
    trust_engine: Annotated[
        bool,
        typer.Option(
            help=("Run an --engine ONNX or OpenVINO IR file that lacks fastdenoise's metadata (made elsewhere).")
        ),
    ] = False,
    max_pixels: Annotated[
        int,
        typer.Option(
            help=(
                "Images with more pixels (by their header) get an error row, undecoded: peak memory grows ~50 bytes a "
                "pixel of the largest image."
            ),
            min=1,
        ),
    ] = 64_000_000,
    format: Annotated[ImageFormat, typer.Option(help="Output format.")] = ImageFormat.png,
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality.", min=1, max=100)] = 95,
    png_level: Annotated[
        int,
        typer.Option(
            help=(
                "PNG compression, 0-9: the same pixels at every level; 0 stores (~2x the bytes), 1 (default) is the "
                "fastest that keeps the size, 4-9 are smaller and slower."
            ),
            min=0,
            max=9,
        ),
    ] = 1,
    batch: Annotated[int, typer.Option(help="Images (or tiles) of equal size per batch.", min=1)] = 4,
    tile: Annotated[
        int,
        typer.Option(
            help=("Images larger than this (px) go through overlapping tiles; a multiple of 4 above --overlap."), min=8
        ),
    ] = 1024,
    overlap: Annotated[int, typer.Option(help="Tile overlap in pixels (blended); a multiple of 4.", min=4)] = 64,
    overwrite: Annotated[bool, typer.Option(help="Redo images the manifest says are done.")] = False,
    workers: Annotated[int, typer.Option(help="Decoder and writer threads (each).", min=1)] = 2,
    loader: Annotated[
        LoaderKind, typer.Option(help="auto: DALI on a GPU where installed, else Pillow.")
    ] = LoaderKind.auto,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any input failed (default); --no-strict exits 0.")] = True,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first input that fails (exit 1).")] = False,
    task: Annotated[
        Task | None,
        typer.Option(
            help=(
                "Also run a frozen head on each denoised image: classify (top-k into OUTPUT/predictions.csv) or "
                "segment (a <name>.mask.png beside each output); both denoise with the bundled task-aware model unless "
                "--model or --weights says otherwise."
            )
        ),
    ] = None,
    head: Annotated[
        str | None,
        typer.Option(
            help=(
                "Head for --task (default: efficientnet-lite0 for classify, espnetv2-camvid for segment); the names of "
                "`train --head`."
            )
        ),
    ] = None,
    head_weights: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Weights of the head (default: its pip package; ESPNetv2: weights/espnetv2 under $FASTDENOISE_DATA or "
                "a folder above DATA)."
            ),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(help=("Classes kept per image with --task classify (default 5)."), min=1)
    ] = None,
    executor: Annotated[
        Executor,
        typer.Option(
            help=(
                "local: this machine (under torchrun, each process a share); ray: Ray Data on a cluster, one denoising "
                "actor per GPU (pip install 'fastdenoise[ray]')."
            )
        ),
    ] = Executor.LOCAL,
    address: Annotated[
        str | None,
        typer.Option(
            help=(
                "--executor ray: the cluster's address (default: $RAY_ADDRESS, else a Ray instance started on this "
                "machine)."
            )
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            help=("Only files whose path relative to INPUT matches this glob ('*' also crosses '/'); repeatable.")
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help=("Leave out files whose path relative to INPUT matches this glob; repeatable.")),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help=("Say what would be done (images, megapixels, done earlier) and write nothing."))
    ] = False,
    ref: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Folder of clean images at the same relative paths: PSNR/SSIM of each output (manifest) and overall."
            ),
            exists=True,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Denoise every image under INPUT into OUTPUT (PNG by default) with a manifest.jsonl row per file; with --task,
    also classify (OUTPUT/predictions.csv) or segment (OUTPUT/<path>.mask.png) each denoised image.

    Exit codes: 0 done; 1 some input failed (see the manifest; 0 with --no-strict); 2 bad arguments or the run could
    not start; 3 stopped because the output could not be written (disk full, read-only); 130 / 143 stopped by
    SIGINT / SIGTERM; 4 the Ray pipeline failed as a whole. After 1, 3, 4, 130, 143 or a kill, the same command again
    does only what is left. Under torchrun (RANK / WORLD_SIZE set) each process takes its share of the files; with
    --executor ray, Ray Data spreads them over the cluster (INPUT and OUTPUT at the same path on every node)."""
    with starting(until_run=True):
        from fastdenoise import distributed
        from fastdenoise.models.zoo import plan_weights
        from fastdenoise.pipeline.predictions import TaskConfig
        from fastdenoise.pipeline.runner import RunConfig, check_folders

    on_ray = executor is Executor.RAY
    auto, level = sigma_option(sigma)
    refuse_conflicts(task, bool(head or head_weights), top_k, address, on_ray, ensemble, ref, auto, engine)
    try:
        # JPEG inputs, --task's level rule: chosen per image, but not on Ray (one model runs) nor with --engine
        plan = plan_weights(model, weights, level, auto, task.value if task else None, engine is not None or on_ray)
        cfg = RunConfig(
            format=format.value,
            quality=quality,
            png_level=png_level,
            batch=batch,
            tile=tile,
            overlap=overlap,
            overwrite=overwrite,
            workers=workers,
            loader=loader.value,
            strict=strict,
            fail_fast=fail_fast,
            max_pixels=max_pixels,
            include=tuple(include or ()),
            exclude=tuple(exclude or ()),
            ref=str(ref) if ref else None,
        )
        task_cfg = (
            TaskConfig(task.value, head, str(head_weights) if head_weights else None, top_k or 5) if task else None
        )
        check_folders(input, output)
        shard = distributed.Shard() if on_ray else distributed.shard_from_env()
    except ValueError as err:
        raise fail(str(err)) from err
    backend_cfg = backend_config(
        backend.value, distributed.shard_device(device, shard), precision.value, engine, trust_engine
    )
    job = prepared(plan, cfg, backend_cfg, ensemble, build=not (on_ray or dry_run))  # on Ray, each actor builds it
    if dry_run:
        return dry_run_line(input, output, job.cfg, shard)
    predictor = task_predictor(task_cfg, "cpu" if on_ray else job.backend.device)  # on Ray, each actor moves it
    summary, received = execute(input, output, job, shard, predictor, on_ray, address)
    if shard.rank == 0:  # under torchrun the summary is the whole job's: its closing lines once
        report(summary, output, ran_line(job, backend.value, on_ray, summary.routes), task_cfg)
    raise typer.Exit(exit_code(summary, received, strict or fail_fast))


def prepared(plan, cfg, backend_cfg, ensemble: bool, build: bool):
    """The run's weights loaded and (with build) its backend and router built (`job.prepare_job`); every expected
    failure one line, exit 2."""
    from fastdenoise.pipeline.job import prepare_job

    with library_errors(backend_cfg.kind.value):
        return prepare_job(plan, cfg, backend_cfg, ensemble, build)


def exit_code(summary, received: list[int], strict: bool) -> int:
    """128 + N after signal N; 3 when the output could not be written; 1 when an input failed (strict); else 0."""
    if received:
        return ExitStatus.after_signal(received[0])
    if summary.cause == "output":
        return ExitStatus.OUTPUT
    return ExitStatus.FAILED if summary.failed and strict else ExitStatus.OK


def ran_line(job, backend: str, on_ray: bool, routes: dict) -> str:
    """What ran: the backend and where, the weights (and the JPEG model, where JPEG inputs ran it); bundled weights
    by name."""
    from fastdenoise.backends.auto import describe_backend
    from fastdenoise.models.zoo import weights_label

    where = job.backend.device if not on_ray else "the Ray workers"
    jpeg = job.plan.jpeg
    jpeg_note = f"; JPEG inputs: {weights_label(jpeg)}" if jpeg is not None and routes.get(jpeg.stem) else ""
    return f"backend: {describe_backend(job.backend, backend)} on {where}; weights: {job.plan.describe()}{jpeg_note}"


def dry_run_line(input: Path, output: Path, cfg, shard) -> None:
    """--dry-run: what the run would do, in one line (bad input: one line, exit 2)."""
    from fastdenoise.pipeline.runner import plan_run

    try:
        for line in plan_run(input, output, cfg, shard).lines():
            typer.echo(line)
    except ValueError as err:
        raise fail(str(err)) from err


def task_predictor(task_cfg, device):
    """The head of --task on `device` (None without --task); a head that cannot load is one line, exit 2."""
    from fastdenoise.pipeline.predictions import load_predictor

    if task_cfg is None:
        return None
    try:
        return load_predictor(task_cfg, device)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise fail(str(err)) from err


def execute(input: Path, output: Path, job, shard, predictor, on_ray: bool, address: str | None):
    """Denoise this process's share of INPUT under the signal handlers and the progress bar, here or on Ray. Returns
    the summary and the signals received; expected failures are one line: exit 2, 3 when the output cannot be written,
    4 when the Ray pipeline fails as a whole."""
    import threading

    from fastdenoise import distributed
    from fastdenoise.pipeline.cluster import ClusterConfig, ClusterError, connect, denoise_on_cluster
    from fastdenoise.pipeline.runner import MANIFEST, denoise_folder, stop_on_signals
    from fastdenoise.backends.auto import expect_work
    from fastdenoise.pipeline.selection import list_inputs, predicted_megapixels
    from fastdenoise.progress import progress_bar

    cfg = job.cfg
    entries = list(distributed.take(list_inputs(input, cfg.include, cfg.exclude), shard))
    total = len(entries)
    if not on_ray:  # the probe of --backend auto may take a share of the predicted compute
        expect_work(job.backend, predicted_megapixels(entries))
    if on_ray:
        try:
            connect(address)  # before the signal handlers below, so Ray's own do not replace them
        except (ImportError, ValueError) as err:
            raise fail(str(err)) from err
    stop = threading.Event()
    with (
        distributed.process_group(shard),
        stop_on_signals(stop) as received,
        progress_bar("denoise", markup=False, enabled=shard.rank == 0) as bar,
    ):
        progress = bar.add_task("run", total=total, last="")
        on_image = lambda row: bar.update(progress, advance=1, last=row["input"][-40:])
        try:
            if on_ray:
                summary = denoise_on_cluster(
                    input,
                    output,
                    job.network,
                    job.backend,
                    cfg,
                    on_image,
                    stop=stop,
                    predictor=predictor,
                    cluster=ClusterConfig(address),
                )
            else:
                summary = denoise_folder(
                    input,
                    output,
                    job.backend,
                    cfg,
                    on_image,
                    stop=stop,
                    shard=shard,
                    predictor=predictor,
                    router=job.router,
                )
        except ClusterError as err:
            raise fail(
                f"{err}; what was done is in {output / MANIFEST}, the same command again does the rest",
                code=ExitStatus.CLUSTER,
            ) from err
        except ImportError as err:
            raise fail(f"loader {cfg.loader!r} is not available here: {err}") from err
        except ValueError as err:
            raise fail(str(err)) from err
        except OSError as err:
            raise fail(f"{output}: {err}; {output_advice(err)}", code=ExitStatus.OUTPUT) from err
    interrupts.enter("finishing")  # the manifest is merged: a signal now ends the command at once
    return summary, received


def output_advice(err: OSError) -> str:
    """What to do after OUTPUT could not be written: a full or failing disk passes, a refusal needs a fix first."""
    if isinstance(err, (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return "fix that, then the same command again resumes"
    return "run the same command again to resume"


def sigma_option(text: str | None) -> tuple[bool, float | None]:
    """--sigma: (True, None) for auto, else (False, the level in 0-255 or None)."""
    if text is None or text.strip().lower() == "auto":
        return text is not None, None
    try:
        level = float(text)
    except ValueError:
        level = math.nan
    if not 0 <= level <= 255:
        raise fail(f"--sigma: {text!r} is not a noise level in 0-255 or 'auto'")
    return False, level


def refuse_conflicts(
    task: Task | None,
    head: bool,
    top_k: int | None,
    address: str | None,
    on_ray: bool,
    ensemble: bool,
    ref: Path | None,
    auto: bool,
    engine: Path | None,
) -> None:
    """One line for each combination of options that cannot run together."""
    if task is None and (head or top_k is not None):
        raise fail("--head, --head-weights and --top-k are for --task classify|segment")
    if task is Task.SEGMENT and top_k is not None:
        raise fail("--top-k is for --task classify")
    if address is not None and not on_ray:
        raise fail("--address is for --executor ray")
    if ensemble and on_ray:
        raise fail("--ensemble is not available with --executor ray (yet): run it with --executor local")
    if ref is not None and on_ray:
        raise fail("--ref is not available with --executor ray (yet): run it with --executor local")
    if auto and (on_ray or engine is not None):
        raise fail("--sigma auto runs a model per noise level: not with --executor ray or --engine (yet)")


def report(summary, output: Path, ran: str, task_cfg) -> None:
    """The run's closing lines: a taken-over lock, counts and problems, what ran, the head's outputs, an early stop."""
    from fastdenoise.pipeline.predictions import MASK_SUFFIX
    from fastdenoise.pipeline.runner import MANIFEST
    from fastdenoise.pipeline.summary import summary_lines

    if summary.taken_over:
        typer.secho(f"note: took over the output lock of a run no longer running ({summary.taken_over})", err=True)
    for line in [*summary_lines(summary, output / MANIFEST), ran]:
        typer.echo(line)
    if summary.predictions:
        typer.echo(f"predictions: {summary.predictions} (top-{task_cfg.top_k} of {task_cfg.head_name})")
    elif task_cfg is not None and task_cfg.task == "segment":
        typer.echo(
            f"masks: {summary.masks} ({task_cfg.head_name}), each beside its output as {output}/<path>{MASK_SUFFIX}"
        )
    if summary.stopped:
        typer.secho(
            f"stopped early: {summary.stopped}; the same command again does the rest", err=True, fg=typer.colors.YELLOW
        )
