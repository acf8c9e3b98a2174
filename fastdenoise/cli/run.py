"""`fastdenoise run`: denoise a folder (and classify or segment each image with --task)."""

import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from fastdenoise import interrupts
from fastdenoise.cli.common import (
    BackendKind,
    BackendOpt,
    DeviceOpt,
    EnsembleOpt,
    Executor,
    ImageFormat,
    LoaderKind,
    ModelNameOpt,
    Precision,
    PrecisionOpt,
    Task,
    WeightsOpt,
    backend_options,
    fail,
    starting,
)


def run(
    input: Annotated[Path, typer.Argument(metavar="INPUT", help=(
        "Folder of images (searched recursively), or one image file."))],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="Output folder; mirrors the input tree.")],
    weights: WeightsOpt = None,
    model: ModelNameOpt = None,
    sigma: Annotated[str | None, typer.Option(metavar="S|auto", help=(
        "Noise level of the inputs (0-255), if known: picks the bundled per-sigma model within 7.5 of it, else blind. "
        "auto: each image's level is estimated (manifest: sigma_est) and chosen for the same way."))] = None,
    ensemble: EnsembleOpt = False,
    backend: BackendOpt = BackendKind.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    engine: Annotated[Path | None, typer.Option(help=(
        "Prebuilt TensorRT engine or ONNX file for those backends."))] = None,
    trust_engine: Annotated[bool, typer.Option(help=(
        "Run an --engine ONNX or OpenVINO IR file that lacks fastdenoise's metadata (made elsewhere)."))] = False,
    max_pixels: Annotated[int, typer.Option(help=(
        "Images with more pixels (by their header) get an error row, undecoded: peak memory grows ~50 bytes a pixel of "
        "the largest image."), min=1)] = 64_000_000,
    format: Annotated[ImageFormat, typer.Option(help="Output format.")] = ImageFormat.png,
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality.", min=1, max=100)] = 95,
    png_level: Annotated[int, typer.Option(help=(
        "PNG compression, 0-9: the same pixels at every level; 0 stores (~2x the bytes), 1 (default) is the fastest "
        "that keeps the size, 4-9 are smaller and slower."), min=0, max=9)] = 1,
    batch: Annotated[int, typer.Option(help="Images (or tiles) of equal size per batch.", min=1)] = 4,
    tile: Annotated[int, typer.Option(help=(
        "Images larger than this (px) go through overlapping tiles; a multiple of 4 above --overlap."), min=8)] = 1024,
    overlap: Annotated[int, typer.Option(help="Tile overlap in pixels (blended); a multiple of 4.", min=4)] = 64,
    overwrite: Annotated[bool, typer.Option(help="Redo images the manifest says are done.")] = False,
    workers: Annotated[int, typer.Option(help="Decoder and writer threads (each).", min=1)] = 2,
    loader: Annotated[LoaderKind, typer.Option(
        help="auto: DALI on a GPU where installed, else Pillow.")] = LoaderKind.auto,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any input failed (default); --no-strict exits 0.")] = True,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first input that fails (exit 1).")] = False,
    task: Annotated[Task | None, typer.Option(help=(
        "Also run a frozen head on each denoised image: classify (top-k into OUTPUT/predictions.csv) or segment (a "
        "<name>.mask.png beside each output); both denoise with the bundled task-aware model unless --model or "
        "--weights says otherwise."))] = None,
    head: Annotated[str | None, typer.Option(help=(
        "Head for --task (default: efficientnet-lite0 for classify, espnetv2-camvid for segment); the names of `train "
        "--head`."))] = None,
    head_weights: Annotated[Path | None, typer.Option(help=(
        "Weights of the head (default: its pip package; ESPNetv2: weights/espnetv2 under $FASTDENOISE_DATA or a folder "
        "above DATA)."), exists=True, dir_okay=False)] = None,
    top_k: Annotated[int | None, typer.Option(help=(
        "Classes kept per image with --task classify (default 5)."), min=1)] = None,
    executor: Annotated[Executor, typer.Option(help=(
        "local: this machine (under torchrun, each process a share); ray: Ray Data on a cluster, one denoising actor "
        "per GPU (pip install 'fastdenoise[ray]')."))] = Executor.LOCAL,
    address: Annotated[str | None, typer.Option(help=(
        "--executor ray: the cluster's address (default: $RAY_ADDRESS, else a Ray instance started on this machine)."
    ))] = None,
    include: Annotated[list[str] | None, typer.Option(help=(
        "Only files whose path relative to INPUT matches this glob ('*' also crosses '/'); repeatable."))] = None,
    exclude: Annotated[list[str] | None, typer.Option(help=(
        "Leave out files whose path relative to INPUT matches this glob; repeatable."))] = None,
    dry_run: Annotated[bool, typer.Option(help=(
        "Say what would be done (images, megapixels, done earlier) and write nothing."))] = False,
    ref: Annotated[Path | None, typer.Option(help=(
        "Folder of clean images at the same relative paths: PSNR/SSIM of each output (manifest) and overall."),
        exists=True, file_okay=False)] = None,
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
        from fastdenoise.predictions import TaskConfig
        from fastdenoise.runner import RunConfig, check_folders
        from fastdenoise.zoo import choose_weights, jpeg_model, takes_level, task_choice, task_model
    backend, precision, format, loader = backend.value, precision.value, format.value, loader.value  # the library's str

    on_ray = executor is Executor.RAY
    auto, level = sigma_option(sigma)
    choose, by_level = None, auto
    if task is not None and model is None and weights is None:
        model = task_model(task.value)  # the recommended task-aware model, where bundled ...
        if model is not None and engine is None and not on_ray:  # ... from TASK_MIN_SIGMA; blind below
            choose = task_choice(choose_weights(model, None, None))
            model = model if level is None else choose(level).stem
            auto = level is None  # each image's level estimated unless --sigma S
    choose = choose or (lambda s: choose_weights(model, weights, s if auto else level))
    refuse_conflicts(task, bool(head or head_weights), top_k, address, on_ray, ensemble, ref, auto, engine)
    try:
        cfg = RunConfig(format=format, quality=quality, png_level=png_level, batch=batch, tile=tile, overlap=overlap,
                        overwrite=overwrite, workers=workers, loader=loader, strict=strict, fail_fast=fail_fast,
                        max_pixels=max_pixels, include=tuple(include or ()), exclude=tuple(exclude or ()),
                        ref=str(ref) if ref else None)  # fmt: skip
        task_cfg = (TaskConfig(task.value, head, str(head_weights) if head_weights else None, top_k or 5)
                    if task else None)
        check_folders(input, output)
        shard = distributed.Shard() if on_ray else distributed.shard_from_env()
    except ValueError as err:
        raise fail(str(err)) from err
    # JPEG inputs run the JPEG model where no model is named (not on Ray, which runs one model, nor with --engine)
    jpeg = jpeg_model() if model is None and weights is None and engine is None and not on_ray else None
    if auto and takes_level(choose_weights(model, weights, None)):
        level = 25.0  # a noise-map model under --sigma auto: the router binds each image's level; this is a stand-in
    network, denoiser = backend_options(weights, backend, distributed.shard_device(device, shard), precision, engine,
                                        model, level, ensemble, trust_engine,
                                        build=not (on_ray or dry_run))  # on Ray: a BackendConfig, built by each actor
    cfg = replace(cfg, made_by=recipe(network, precision, ensemble, auto, engine, jpeg))
    if dry_run:
        return dry_run_line(input, output, cfg, shard)
    router = sigma_router(denoiser, backend, precision, ensemble, choose, auto, jpeg)
    predictor = task_predictor(task_cfg, "cpu" if on_ray else denoiser.device)  # on Ray, each actor moves it
    summary, received = execute(input, output, network, denoiser, cfg, shard, predictor, router, on_ray, address)
    used = per_image(by_level) if auto else choose_weights(model, weights, level)
    if shard.rank == 0:  # under torchrun the summary is the whole job's: its closing lines once
        report(summary, output, ran_line(denoiser, backend, on_ray, used, jpeg), task_cfg)
    raise typer.Exit(exit_code(summary, received, strict or fail_fast))


def exit_code(summary, received: list[int], strict: bool) -> int:
    """128 + N after signal N; 3 when the output could not be written; 1 when an input failed (strict); else 0."""
    if received:
        return 128 + received[0]
    if summary.cause == "output":
        return 3
    return 1 if summary.failed and strict else 0


def ran_line(denoiser, backend: str, on_ray: bool, weights: object, jpeg: Path | None) -> str:
    """What ran: the backend and where, the weights (and those JPEG inputs ran)."""
    from fastdenoise.autoselect import describe_backend

    where = denoiser.device if not on_ray else "the Ray workers"
    jpeg_note = f"; JPEG inputs: {jpeg}" if jpeg else ""
    return f"backend: {describe_backend(denoiser, backend)} on {where}; weights: {weights}{jpeg_note}"


def per_image(asked: bool) -> str:
    """How a routed run picked its weights: --sigma auto, or --task's level rule (zoo.task_choice)."""
    from fastdenoise.zoo import TASK_MIN_SIGMA

    if asked:
        return "per image (--sigma auto)"
    return f"per image (the task-aware model from an estimated sigma of {TASK_MIN_SIGMA:g}, blind below)"


def recipe(network, precision: str, ensemble: bool, auto: bool, engine: Path | None, jpeg: Path | None) -> dict:
    """The `made_by` record of this run's outputs: the digest of the weights (the level bound in, for a noise-map
    model; the default weights' with --sigma auto, each row naming its own) or of the --engine file, of the weights
    JPEG inputs run, the precision asked for, --ensemble; a manifest row made otherwise vouches for nothing."""
    from fastdenoise.engines.export import weights_sha256
    from fastdenoise.files import sha256_file

    made = {"weights_sha256": weights_sha256(network), "precision": precision, "ensemble": ensemble}
    if engine is not None:
        made["engine_sha256"] = sha256_file(engine)
    made |= {"jpeg_weights_sha256": sha256_file(jpeg)} if jpeg is not None else {}
    return made | ({"sigma": "auto"} if auto else {})


def dry_run_line(input: Path, output: Path, cfg, shard) -> None:
    """--dry-run: what the run would do, in one line (bad input: one line, exit 2)."""
    from fastdenoise.runner import plan_run

    try:
        for line in plan_run(input, output, cfg, shard).lines():
            typer.echo(line)
    except ValueError as err:
        raise fail(str(err)) from err


def task_predictor(task_cfg, device):
    """The head of --task on `device` (None without --task); a head that cannot load is one line, exit 2."""
    from fastdenoise.predictions import load_predictor

    if task_cfg is None:
        return None
    try:
        return load_predictor(task_cfg, device)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise fail(str(err)) from err


def execute(input: Path, output: Path, network, denoiser, cfg, shard, predictor, router, on_ray: bool,
            address: str | None):  # fmt: skip
    """Denoise this process's share of INPUT under the signal handlers and the progress bar, here or on Ray. Returns
    the summary and the signals received; expected failures are one line: exit 2, 3 when the output cannot be written,
    4 when the Ray pipeline fails as a whole."""
    import threading

    from fastdenoise import distributed
    from fastdenoise.cluster import ClusterConfig, ClusterError, connect, denoise_on_cluster
    from fastdenoise.progress import progress_bar
    from fastdenoise.runner import MANIFEST, denoise_folder, stop_on_signals
    from fastdenoise.selection import list_inputs

    total = sum(1 for _ in distributed.take(list_inputs(input, cfg.include, cfg.exclude), shard))
    if on_ray:
        try:
            connect(address)  # before the signal handlers below, so Ray's own do not replace them
        except (ImportError, ValueError) as err:
            raise fail(str(err)) from err
    stop = threading.Event()
    with (distributed.process_group(shard), stop_on_signals(stop) as received,
          progress_bar("denoise", markup=False, enabled=shard.rank == 0) as bar):  # fmt: skip
        progress = bar.add_task("run", total=total, last="")
        on_image = lambda row: bar.update(progress, advance=1, last=row["input"][-40:])
        try:
            if on_ray:
                summary = denoise_on_cluster(input, output, network, denoiser, cfg, on_image, stop=stop,
                                             predictor=predictor, cluster=ClusterConfig(address))  # fmt: skip
            else:
                summary = denoise_folder(input, output, denoiser, cfg, on_image, stop=stop, shard=shard,
                                         predictor=predictor, router=router)
        except ClusterError as err:
            raise fail(f"{err}; what was done is in {output / MANIFEST}, the same command again does the rest",
                       code=4) from err
        except ImportError as err:
            raise fail(f"loader {cfg.loader!r} is not available here: {err}") from err
        except ValueError as err:
            raise fail(str(err)) from err
        except OSError as err:
            raise fail(f"{output}: {err}; {output_advice(err)}", code=3) from err
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
    task: Task | None, head: bool, top_k: int | None, address: str | None, on_ray: bool, ensemble: bool,
    ref: Path | None, auto: bool, engine: Path | None,
) -> None:  # fmt: skip
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


def sigma_router(denoiser, backend: str, precision: str, ensemble: bool, choose, auto: bool, jpeg: Path | None):
    """--sigma auto (each image's estimate to `choose`), a JPEG model: a router whose default weights' (`choose(None)`)
    backend is the one already built; the others are built on the same device, backend kind and precision when an
    image first needs them. None: one model runs all."""
    from fastdenoise.zoo import SigmaRouter, takes_level

    if not auto and jpeg is None:
        return None
    router = SigmaRouter(
        lambda path, bound: backend_options(path, backend, str(denoiser.device), precision, None, None, bound,
                                            ensemble)[1],
        choose, takes_level, jpeg=jpeg, estimate=auto,
    )  # fmt: skip
    router.built[Path(choose(None)), None] = denoiser
    return router


def report(summary, output: Path, ran: str, task_cfg) -> None:
    """The run's closing lines: a taken-over lock, counts and problems, what ran, the head's outputs, an early stop."""
    from fastdenoise.predictions import MASK_SUFFIX
    from fastdenoise.runner import MANIFEST
    from fastdenoise.summary import summary_lines

    if summary.taken_over:
        typer.secho(f"note: took over the output lock of a run no longer running ({summary.taken_over})", err=True)
    for line in [*summary_lines(summary, output / MANIFEST), ran]:
        typer.echo(line)
    if summary.predictions:
        typer.echo(f"predictions: {summary.predictions} (top-{task_cfg.top_k} of {task_cfg.head_name})")
    elif task_cfg is not None and task_cfg.task == "segment":
        typer.echo(f"masks: {summary.masks} ({task_cfg.head_name}), each beside its output as "
                   f"{output}/<path>{MASK_SUFFIX}")
    if summary.stopped:
        typer.secho(f"stopped early: {summary.stopped}; the same command again does the rest", err=True,
                    fg=typer.colors.YELLOW)
