"""The `fastdenoise` command line: parses options and wires library calls, nothing more."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

try:  # torch loads here (seconds): Ctrl-C meanwhile ends the command with one line, as it does later
    import typer

    from fastdenoise.cluster import ClusterError, Executor
    from fastdenoise.joint import Target, Task
    from fastdenoise.tables import PEERS, Split
except KeyboardInterrupt:
    sys.stderr.write("error: interrupted while starting\n")
    raise SystemExit(130) from None

if TYPE_CHECKING:
    from fastdenoise.train import TrainConfig

app = typer.Typer(help="Fast task-aware image denoising (Liu et al., IJCAI 2018).", no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """Fast task-aware image denoising (Liu et al., IJCAI 2018)."""


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def interrupt_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C, so training checkpoints and folder runs flush before exiting."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def parse_range(text: str) -> tuple[float, float]:
    """'25' -> (25, 25); '5-55' or '5:55' -> (5, 55)."""
    parts = text.replace(":", "-").split("-")
    try:
        values = [float(p) for p in parts if p != ""]
    except ValueError as err:
        raise typer.BadParameter(f"expected a number or a range like 5-55, got {text!r}") from err
    if len(values) not in (1, 2):
        raise typer.BadParameter(f"expected a number or a range like 5-55, got {text!r}")
    return (values[0], values[-1])


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Argument(help="Folder of clean training images (optional with --resume: the run's own).", exists=True, file_okay=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, log.jsonl, config.json.")] = Path("runs/denoiser"),
    val: Annotated[Path | None, typer.Option(help="Folder of clean validation images.", exists=True, file_okay=False)] = None,
    sigma: Annotated[str, typer.Option(help="Noise level in 0-255 units: fixed (25) or a blind range (5-55).")] = "25",
    patch: Annotated[int | None, typer.Option(help="Crop side, multiple of 4 (default 48; joint: 224 classify, 256 segment).")] = None,
    batch: Annotated[int, typer.Option(help="Patches per step.")] = 32,
    steps: Annotated[int, typer.Option(help="Optimizer steps in total.")] = 20_000,
    lr: Annotated[float, typer.Option(help="Peak Adam learning rate.")] = 1e-3,
    schedule: Annotated[str, typer.Option(help="cosine (to --steps) or constant (after warm-up; for runs extended with --resume --steps).")] = "cosine",
    ema: Annotated[float, typer.Option(help="Decay of a moving average of the weights, validated and saved (0.999; 0 = off).", min=0.0, max=0.9999)] = 0.0,
    loss: Annotated[str, typer.Option(help="Reconstruction loss: mse, l1, charbonnier.")] = "mse",
    val_every: Annotated[int, typer.Option(help="Validate every N steps.")] = 1000,
    val_images: Annotated[int, typer.Option(help="Validation images used (first N of the folder).")] = 12,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 250,
    seed: Annotated[int, typer.Option(help="Seed of initial weights, patches and noise.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    amp: Annotated[str, typer.Option(help="auto, off, bf16, fp16.")] = "auto",
    compile: Annotated[str, typer.Option(help="torch.compile: auto (on for CUDA), on, off.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt if present (refuse to reuse a finished folder otherwise).")] = False,
    task: Annotated[str | None, typer.Option(help="Joint training against frozen heads: classify, segment, or several comma-separated (classify,segment: one denoiser for both, label-free); omit for MSE alone.")] = None,
    head: Annotated[list[str] | None, typer.Option(help="Frozen head, repeat for several (one per task, or several for one task): efficientnet-lite0|1|2, espnetv2-voc|cityscapes|camvid, vgg16, deeplab-largefov, torchvision:<model>. Default: efficientnet-lite0 (classify), espnetv2-camvid (segment).")] = None,
    head_weights: Annotated[list[Path] | None, typer.Option(help="Weights of the head, one per --head (default: its pip package; ESPNetv2: weights/espnetv2 under $FASTDENOISE_DATA or a folder above DATA).", exists=True, dir_okay=False)] = None,
    lam: Annotated[list[float] | None, typer.Option(help="Raw weight of the task loss, one or one per head (default 0.25 classify, 0.5 segment).", min=0.0)] = None,
    balance: Annotated[list[float] | None, typer.Option(help="Instead of --lam: the task's gradient w.r.t. the denoiser output is kept at R times the MSE's (EMA of the norms; docs/task-aware.md); one or one per head.", min=0.0)] = None,
    balance_decay: Annotated[float, typer.Option(help="EMA decay of the gradient norms behind --balance.", min=0.0, max=0.9999)] = 0.99,
    target: Annotated[Target, typer.Option(help="labels: ground truth; argmax / softmax: label-free, the head's prediction on the clean crop.")] = Target.LABELS,
    labels: Annotated[Path | None, typer.Option(help="Classify: CSV 'file,index' (files relative to DATA); default: one sub-folder per class.", exists=True, dir_okay=False)] = None,
    masks: Annotated[Path | None, typer.Option(help="Segment: folder of masks named like the images.", exists=True, file_okay=False)] = None,
    ignore_index: Annotated[int, typer.Option(help="Segment: mask value without a class (CamVid: 11).", min=0, max=255)] = 255,
    resize: Annotated[int | None, typer.Option(help="Short side before cropping (default: 8/7 of --patch for classify, unchanged for segment).")] = None,
    init: Annotated[Path | None, typer.Option(help="Start from these denoiser weights (.safetensors or last.pt), e.g. an MSE run.", exists=True, dir_okay=False)] = None,
    freeze_bn: Annotated[bool | None, typer.Option("--freeze-bn/--batch-bn", help="BatchNorm keeps its running statistics while training (default with --init: a fine-tune on small batches keeps its init's) or uses each batch's (default from scratch).")] = None,
) -> None:
    """Train the denoiser with MSE alone ("separate"), or jointly with a frozen classifier/segmenter (--task)."""
    from fastdenoise.checkpoint import CheckpointError
    from fastdenoise.joint import JointConfig, default_crop, parse_tasks, train_joint
    from fastdenoise.train import TrainConfig, train_denoiser

    if (out / "last.pt").exists() and not resume:
        raise fail(f"{out}: holds a run already; pass --resume to continue it or choose another --out")
    stored = json.loads((out / "config.json").read_text()) if resume and (out / "config.json").is_file() else None
    if data is None and stored is None:
        raise fail("missing DATA: the folder of clean training images (only --resume of a run with a config.json may omit it)")
    if stored is not None and task is None and (out / "joint.json").is_file():
        raise fail(f"{out}: a joint run; resume it with its --task, --head ... options as in {out / 'joint.json'}")
    joint_only = (labels, masks, head, head_weights, lam, balance, resize, target is not Target.LABELS)
    if task is None and any(joint_only):
        raise fail("--head, --head-weights, --lam, --balance, --target, --labels, --masks and --resize are for joint training: add --task")
    try:
        tasks = parse_tasks(task) if task is not None else ()
    except ValueError as err:
        raise fail(f"--task: {err}") from err
    crop = patch if patch is not None else (max(default_crop(Task(t)) for t in tasks) if tasks else 48)
    try:
        cfg = TrainConfig(
            data=str(data or "."), out=str(out), val=str(val) if val else None, sigma=parse_range(sigma), patch=crop,
            batch=batch, steps=steps, lr=lr, val_every=val_every, val_images=val_images, ckpt_every=ckpt_every, seed=seed,
            device=device, amp=amp, compile=compile, schedule=schedule, ema=ema, loss=loss,
            freeze_bn=freeze_bn if freeze_bn is not None else init is not None,
        )  # fmt: skip
        if stored is not None:
            cfg = resumed_config(ctx, cfg, stored, out)
            data = Path(cfg.data)
        interrupt_on_sigterm()
        if not tasks:
            train_denoiser(cfg, init=str(init) if init else None)
        else:
            joint = JointConfig(
                cfg, tasks=tasks, heads=tuple(head or ()), lam=tuple(lam or ()), balance=tuple(balance or ()),
                balance_decay=balance_decay, target=target.value, labels=str(labels) if labels else None,
                masks=str(masks) if masks else None, ignore_index=ignore_index, resize=resize, init=str(init) if init else None,
            )  # fmt: skip
            weights = list(head_weights or [None] * len(joint.head_list))
            if len(weights) != len(joint.head_list):
                raise ValueError(f"--head-weights: give one per head ({len(joint.head_list)}), got {len(weights)}")
            from fastdenoise.tables import find_segmenter_weights

            found = [w or find_segmenter_weights(name, data) for name, w in zip(joint.head_list, weights)]
            train_joint(replace(joint, head_weights=tuple(str(w) if w else None for w in found)))
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as err:
        raise fail(str(err)) from err
    except KeyboardInterrupt as err:
        import signal

        code = 143 if getattr(err, "signum", None) == signal.SIGTERM else 130  # 128 + the signal's number
        typer.secho(f"stopped: the last checkpoint is {out / 'last.pt'}; continue with --out {out} --resume", err=True, fg=typer.colors.YELLOW)
        raise typer.Exit(code) from None
    typer.echo(f"weights: {out / 'model.safetensors'}")


def given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was typed on the command line (not a default)."""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) == "COMMANDLINE"  # typer may ship its own click: compare by name


def resumed_config(ctx: typer.Context, cfg: TrainConfig, stored: dict, out: Path) -> TrainConfig:
    """The stored run's config, with the options given on this command line that may change (steps, LR...).

    An option given with another value than the run was started with is refused: it would silently make another run."""
    from fastdenoise.train import RESUMABLE_CHANGES, TrainConfig

    fresh = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as in config.json
    merged = dict(stored)
    for field, value in fresh.items():
        if field not in stored or field == "out" or not given(ctx, field):
            continue
        same = Path(value).resolve() == Path(stored[field]).resolve() if field in ("data", "val") and value and stored[field] else value == stored[field]
        if same or field in RESUMABLE_CHANGES:
            merged[field] = value
        else:
            flag = "DATA" if field == "data" else "--" + field.replace("_", "-")
            was, now = (("-".join(f"{v:g}" for v in x) if field == "sigma" else x) for x in (stored[field], value))
            raise ValueError(f"{out}: the run was started with {flag} {was}, not {now}; drop {flag} to resume it as it was, or train into another --out")
    try:
        return TrainConfig(**{**merged, "sigma": tuple(merged["sigma"])})
    except TypeError as err:
        raise ValueError(f"{out / 'config.json'}: not a config of this version ({err})") from err


def backend_options(
    weights: Path | None, backend: str, device: str, precision: str, engine: Path | None = None,
    model: str | None = None, sigma: float | None = None, ensemble: bool = False, trust_engine: bool = False,
    build: bool = True,
) -> tuple:  # fmt: skip
    """Choose and load the weights (--weights, --model, or the per-sigma model nearest --sigma) and build the backend
    (with build=False: its config, for workers to build; --ensemble is then theirs to add); turns every expected
    failure into a one-line error."""
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.checkpoint import CheckpointError, load_denoiser
    from fastdenoise.zoo import SelfEnsemble, choose_weights

    try:
        network = load_denoiser(choose_weights(model, weights, sigma))
        cfg = BackendConfig(kind=backend, device=device, precision=precision, engine=str(engine) if engine else None,
                            trust_engine=trust_engine)  # fmt: skip
        if not build:
            return network, cfg
        runner = make_backend(network, cfg)
        return network, SelfEnsemble(runner) if ensemble else runner
    except (CheckpointError, ValueError) as err:
        raise fail(str(err)) from err
    except ImportError as err:
        raise fail(f"backend {backend!r} is not available here: {err}") from err


WeightsOpt = Annotated[Path | None, typer.Option("--weights", "-w", help="Weights (.safetensors or checkpoint); default: the bundled model for --sigma, else blind.")]
ModelNameOpt = Annotated[str | None, typer.Option("--model", help="Bundled weights by name: blind, sigma15, sigma25, ..., joint-classify ... (default: per-sigma model nearest --sigma where bundled, else blind).")]
EnsembleOpt = Annotated[bool, typer.Option(help="Average the 8 flips/rotations of each image: a little more PSNR for 8x the compute.")]
BackendOpt = Annotated[str, typer.Option(help="eager, compiled, triton, onnxruntime, tensorrt, openvino, auto (the fastest here, by a short probe cached per machine).")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
PrecisionOpt = Annotated[str, typer.Option(help="auto (bf16 where fast and accurate), fp32, bf16, fp16, int8 (openvino).")]


@app.command()
def run(
    input: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    output: Annotated[Path, typer.Argument(help="Output folder; mirrors the input tree.")],
    weights: WeightsOpt = None,
    model: ModelNameOpt = None,
    sigma: Annotated[float | None, typer.Option(help="Noise level of the inputs (0-255), if known: picks the bundled per-sigma model nearest it.", min=0, max=255)] = None,
    ensemble: EnsembleOpt = False,
    backend: BackendOpt = "eager",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    engine: Annotated[Path | None, typer.Option(help="Prebuilt TensorRT engine or ONNX file for those backends.")] = None,
    trust_engine: Annotated[bool, typer.Option(help="Run an --engine ONNX file that lacks fastdenoise's metadata (made elsewhere).")] = False,
    max_pixels: Annotated[int, typer.Option(help="Images with more pixels (by their header) get an error row, undecoded: peak memory grows ~50 bytes a pixel of the largest image.", min=1)] = 64_000_000,
    format: Annotated[str, typer.Option(help="Output format: png, jpg, webp, bmp, tiff.")] = "png",
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality.")] = 95,
    batch: Annotated[int, typer.Option(help="Images (or tiles) of equal size per batch.")] = 4,
    tile: Annotated[int, typer.Option(help="Images larger than this (px) go through overlapping tiles.")] = 1024,
    overlap: Annotated[int, typer.Option(help="Tile overlap in pixels (blended).")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Redo images the manifest says are done.")] = False,
    workers: Annotated[int, typer.Option(help="Decoder and writer threads (each).")] = 2,
    loader: Annotated[str, typer.Option(help="auto (DALI on a GPU where installed, else Pillow), dali, pil.")] = "auto",
    strict: Annotated[bool, typer.Option(help="Exit 1 if any input failed (default); --no-strict exits 0.")] = True,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first input that fails (exit 1).")] = False,
    task: Annotated[Task | None, typer.Option(help="Also run a frozen head on each denoised image: classify (top-k into OUTPUT/predictions.csv) or segment (a <name>.mask.png beside each output).")] = None,
    head: Annotated[str | None, typer.Option(help="Head for --task (default: efficientnet-lite0 for classify, espnetv2-camvid for segment); the names of `train --head`.")] = None,
    head_weights: Annotated[Path | None, typer.Option(help="Weights of the head (default: its pip package; ESPNetv2: weights/espnetv2 under $FASTDENOISE_DATA or a folder above DATA).", exists=True, dir_okay=False)] = None,
    top_k: Annotated[int | None, typer.Option(help="Classes kept per image with --task classify (default 5).", min=1)] = None,
    executor: Annotated[Executor, typer.Option(help="local: this machine (under torchrun, each process a share); ray: Ray Data on a cluster, one denoising actor per GPU (pip install 'fastdenoise[ray]').")] = Executor.LOCAL,
    address: Annotated[str | None, typer.Option(help="--executor ray: the cluster's address (default: $RAY_ADDRESS, else a Ray instance started on this machine).")] = None,
) -> None:
    """Denoise every image under INPUT into OUTPUT (PNG by default) with a manifest.jsonl row per file; with --task,
    also classify (OUTPUT/predictions.csv) or segment (OUTPUT/<path>.mask.png) each denoised image.

    Exit codes: 0 done; 1 some input failed (see the manifest; 0 with --no-strict); 2 bad arguments or the run could
    not start; 3 stopped because the output could not be written (disk full, read-only); 130 / 143 stopped by
    SIGINT / SIGTERM; 4 the Ray pipeline failed as a whole. After 1, 3, 4, 130, 143 or a kill, the same command again
    does only what is left. Under torchrun (RANK / WORLD_SIZE set) each process takes its share of the files; with
    --executor ray, Ray Data spreads them over the cluster (INPUT and OUTPUT at the same path on every node)."""
    import threading

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from fastdenoise import distributed
    from fastdenoise.autoselect import describe_backend
    from fastdenoise.images import iter_entries
    from fastdenoise.predictions import MASK_SUFFIX, TaskConfig, load_predictor
    from fastdenoise.runner import MANIFEST, RunConfig, check_folders, denoise_folder, stop_on_signals

    if task is None and (head or head_weights or top_k is not None):
        raise fail("--head, --head-weights and --top-k are for --task classify|segment")
    if task is Task.SEGMENT and top_k is not None:
        raise fail("--top-k is for --task classify")
    if address is not None and executor is not Executor.RAY:
        raise fail("--address is for --executor ray")
    if ensemble and executor is Executor.RAY:
        raise fail("--ensemble is not available with --executor ray (yet): run it with --executor local")
    on_ray = executor is Executor.RAY
    try:
        cfg = RunConfig(format=format, quality=quality, batch=batch, tile=tile, overlap=overlap, overwrite=overwrite,
                        workers=workers, loader=loader, strict=strict, fail_fast=fail_fast, max_pixels=max_pixels)  # fmt: skip
        task_cfg = TaskConfig(task.value, head, str(head_weights) if head_weights else None, top_k or 5) if task else None
        check_folders(input, output)
        shard = distributed.Shard() if on_ray else distributed.shard_from_env()
    except ValueError as err:
        raise fail(str(err)) from err
    total = sum(1 for _ in distributed.take(iter_entries(input), shard))
    network, denoiser = backend_options(weights, backend, distributed.shard_device(device, shard), precision, engine, model, sigma,
                                        ensemble, trust_engine, build=not on_ray)  # on Ray: a BackendConfig, built by each actor
    predictor = None
    if task_cfg is not None:
        try:
            predictor = load_predictor(task_cfg, "cpu" if on_ray else denoiser.device)  # on Ray, each actor moves it
        except (ValueError, FileNotFoundError, ImportError) as err:
            raise fail(str(err)) from err
    if on_ray:
        from fastdenoise.cluster import ClusterConfig, connect, denoise_on_cluster

        try:
            connect(address)  # before the signal handlers below, so Ray's own do not replace them
        except (ImportError, ValueError) as err:
            raise fail(str(err)) from err
    columns = (TextColumn("[bold]denoise"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"), TimeElapsedColumn(), TimeRemainingColumn())
    stop = threading.Event()
    with distributed.process_group(shard), stop_on_signals(stop) as received:
        with Progress(*columns, transient=True, disable=shard.rank > 0) as bar:
            progress = bar.add_task("run", total=total, last="")
            on_image = lambda row: bar.update(progress, advance=1, last=row["input"][-40:])  # noqa: E731
            try:
                if on_ray:
                    summary = denoise_on_cluster(input, output, network, denoiser, cfg, on_image, stop=stop, predictor=predictor,
                                                 cluster=ClusterConfig(address))  # fmt: skip
                else:
                    summary = denoise_folder(input, output, denoiser, cfg, on_image, stop=stop, shard=shard, predictor=predictor)
            except ClusterError as err:
                raise fail(f"{err}; what was done is in {output / MANIFEST}, the same command again does the rest", code=4) from err
            except ImportError as err:
                raise fail(f"loader {loader!r} is not available here: {err}") from err
            except ValueError as err:
                raise fail(str(err)) from err
            except OSError as err:
                raise fail(f"{output}: {err}; run the same command again to resume", code=3) from err
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary.stages.items())
    prefix = f"rank {shard.rank}/{shard.world}: " if shard.world > 1 else ""
    if summary.taken_over:
        typer.secho(f"{prefix}note: took over the output lock of a run no longer running ({summary.taken_over})", err=True)
    typer.echo(
        f"{prefix}{summary.ok} denoised, {summary.skipped} skipped, {summary.failed} failed, {summary.ignored} not images; "
        f"{summary.megapixels:.2f} MP in {summary.seconds:.1f} s = {summary.mp_per_s:.3f} MP/s ({stages}); manifest: {output / MANIFEST}"
    )
    typer.echo(f"{prefix}backend: {describe_backend(denoiser, backend)}")
    if summary.predictions:
        typer.echo(f"{prefix}predictions: {summary.predictions} (top-{task_cfg.top_k} of {task_cfg.head_name})")
    elif task is Task.SEGMENT:
        typer.echo(f"{prefix}masks: {summary.masks} ({task_cfg.head_name}), each beside its output as {output}/<path>{MASK_SUFFIX}")
    if summary.stopped:
        typer.secho(f"{prefix}stopped early: {summary.stopped}; the same command again does the rest", err=True, fg=typer.colors.YELLOW)
    if received:
        raise typer.Exit(128 + received[0])
    if summary.cause == "output":
        raise typer.Exit(3)
    if summary.failed and (strict or fail_fast):
        raise typer.Exit(1)


def parse_sigmas(text: str) -> list[float]:
    from fastdenoise.noise import check_sigma

    try:
        return [check_sigma(float(s)) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise fail(f"--sigma: {err}") from err


@app.command("eval")
def evaluate_cmd(
    data: Annotated[Path, typer.Argument(help="Folder of clean images (e.g. Kodak24).")],
    sigma: Annotated[str, typer.Option(help="Comma-separated noise levels, 0-255 units.")] = "25,35,50",
    weights: WeightsOpt = None,
    model: ModelNameOpt = None,
    ensemble: EnsembleOpt = False,
    backend: BackendOpt = "eager",
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(help="fp32 (default, for reported numbers), bf16, fp16, auto.")] = "fp32",
    seed: Annotated[int, typer.Option(help="Noise seed (image i uses [seed, i]).")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for eval.json and eval.md.")] = Path("results/eval"),
    name: Annotated[str, typer.Option(help="Method name in the tables.")] = "fastdenoise",
    limit: Annotated[int | None, typer.Option(help="Only the first N images.")] = None,
) -> None:
    """Per-image and mean PSNR/SSIM on a folder at one or more noise levels."""
    from rich.console import Console
    from rich.table import Table

    from fastdenoise.evaluate import backend_denoiser, evaluate, write_results
    from fastdenoise.zoo import choose_weights

    if not data.is_dir():
        raise fail(f"{data}: not a folder")
    sigmas = parse_sigmas(sigma)
    # Each sigma gets the model a user would get for it (the per-sigma one where bundled), unless one is named.
    try:
        chosen = {s: choose_weights(model, weights, s) for s in sigmas}
    except ValueError as err:
        raise fail(str(err)) from err
    denoisers = {path: backend_denoiser(backend_options(path, backend, device, precision, ensemble=ensemble)[1]) for path in set(chosen.values())}
    console = Console()
    try:
        with console.status("evaluating") as status:
            result = evaluate(lambda x, s: denoisers[chosen[s]](x, s), data, sigmas, seed, name, limit=limit, progress=status.update)
    except ValueError as err:
        raise fail(str(err)) from err
    table = Table("sigma", "noisy PSNR", "PSNR (dB)", "SSIM", title=f"{name} on {data} (seed {seed}, {len(result.rows) // len(sigmas)} images)")
    for s in result.sigmas:
        table.add_row(f"{s:g}", f"{result.mean(s, 'noisy_psnr'):.2f}", f"{result.mean(s):.2f}", f"{result.mean(s, 'ssim'):.4f}")
    console.print(table)
    meta = {"weights": {f"{s:g}": str(p) for s, p in chosen.items()}, "backend": backend, "precision": precision, "ensemble": ensemble}
    write_results([result], out, meta)
    console.print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")


tables_app = typer.Typer(help="The paper's Tables 1-3, regenerated: Markdown + JSON + PNG per table.", no_args_is_help=True)
app.add_typer(tables_app, name="tables")

SigmaOpt = Annotated[str, typer.Option(help="Comma-separated noise levels, 0-255 units.")]
SeedOpt = Annotated[str, typer.Option("--seeds", "--seed", help="Noise seeds, comma-separated (0,1): image i gets numpy default_rng([seed, i]) under each; cells pool the seeds.")]
ControlOpt = Annotated[str | None, typer.Option(help="Arm every other arm is tested against (paired tests in the table); default: separate, if given.")]
DrawsOpt = Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals and paired tests.", min=100)]
LimitOpt = Annotated[int | None, typer.Option(help="Only the first N images (quick runs).", min=1)]
ModelOpt = Annotated[list[str] | None, typer.Option("--model", "-m", help="Extra arm NAME=WEIGHTS (or WEIGHTS: named by its stem); repeatable.")]
ArmWeights = Annotated[Path | None, typer.Option(exists=True, dir_okay=False)]
CacheOpt = Annotated[Path | None, typer.Option(help="CBM3D results cache (keyed by noisy image, sigma, bm3d version); default ~/.cache/fastdenoise/cbm3d or $FASTDENOISE_CACHE/cbm3d.", file_okay=False)]
QuantizeOpt = Annotated[bool, typer.Option(help="Every arm starts from the noisy image clipped and rounded to 8 bits (as the data README's reference numbers); --no-quantize: denoisers get the unclipped float noisy image.")]
CleanOpt = Annotated[bool, typer.Option(help="Add the head on the clean image as a reference row.")]


def run_table(label: str, build, out: Path) -> None:  # build: ProgressFn -> TableResult
    """Build a table under a progress bar, write its files, print it; expected failures become one-line errors."""
    import shlex
    import sys

    import torch
    from rich.console import Console
    from rich.markdown import Markdown

    from fastdenoise.tables import markdown, progress_bar, write_table

    console = Console()
    try:
        with progress_bar(label) as progress:
            table = build(progress)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise fail(str(err)) from err
    meta = {"command": shlex.join(["fastdenoise", *sys.argv[1:]]), "torch": torch.__version__}
    paths = write_table(table, out, meta)
    console.print(Markdown(markdown(table)))
    console.print(f"wrote {', '.join(str(p) for p in paths)}")


def named_models(model: list[str] | None) -> list[tuple[str, Path]]:
    from fastdenoise.tables import parse_named

    try:
        pairs = [parse_named(m) for m in model or []]
    except ValueError as err:
        raise fail(f"--model: {err}") from err
    missing = [str(p) for _, p in pairs if not p.is_file()]
    if missing:
        raise fail(f"--model: no such weights file {missing[0]}")
    return pairs


def seed_list(text: str) -> tuple[int, ...]:
    """'0,1' -> (0, 1); a one-line error otherwise."""
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise fail(f"--seeds: expected comma-separated integers like 0,1, got {text!r}") from None
    if not seeds:
        raise fail("--seeds: give at least one noise seed")
    return seeds


def sigma_list(text: str) -> tuple[float, ...]:
    from fastdenoise.cli import parse_sigmas

    sigmas = tuple(parse_sigmas(text))
    if not sigmas:
        raise fail("--sigma: give at least one noise level")
    return sigmas


@tables_app.command("table1")
def table1_cmd(
    data: Annotated[Path, typer.Argument(help="Folder of clean images (Kodak24).", exists=True, file_okay=False)],
    model: ModelOpt = None,
    peers: Annotated[str, typer.Option(help=f"Comma-separated peers run in the same command ('' for none): {', '.join(PEERS)}; cdncnn = the network trained for each sigma.")] = "cbm3d,cdncnn,cdncnn-b,ffdnet",
    peer_data: Annotated[Path | None, typer.Option(help="Shared data folder holding weights/dncnn and weights/ffdnet; default $FASTDENOISE_DATA or DATA/..", exists=True, file_okay=False)] = None,
    cbm3d_limit: Annotated[int | None, typer.Option(help="CBM3D on the first N images only (~25 s a Kodak image per sigma on 2 cores; cached).", min=1)] = None,
    cbm3d_cache: CacheOpt = None,
    sigma: SigmaOpt = "25,35,50",
    seed: SeedOpt = "0",
    control: ControlOpt = None,
    draws: DrawsOpt = 2000,
    limit: LimitOpt = None,
    ssim: Annotated[bool, typer.Option(help="Also SSIM (slower).")] = False,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for table1.md, table1.json, table1.png.")] = Path("results/table1"),
) -> None:
    """Table 1: mean PSNR at each sigma for our denoisers (--model, default the bundled one) beside the peers."""
    from fastdenoise.tables import Table1Config, default_peer_data, model_arm, peer_arm, table1

    models = named_models(model) or [("fastdenoise (bundled)", None)]
    names = [p.strip() for p in peers.split(",") if p.strip()]
    root = peer_data or default_peer_data(data)

    def build(progress):
        cfg = Table1Config(str(data), sigma_list(sigma), seed_list(seed), control, draws, limit, ssim)
        arms = [model_arm(name, weights, device) for name, weights in models]
        arms += [peer_arm(p, root, device, cbm3d_limit, cbm3d_cache) for p in names]
        return table1(cfg, arms, progress)

    run_table("table 1", build, out)


@tables_app.command("table2")
def table2_cmd(
    data: Annotated[Path, typer.Argument(help="Folder of labelled photos (imagenet-samples) with labels.csv 'file,index'.", exists=True, file_okay=False)],
    separate: Annotated[Path | None, typer.Option(help="Arm 'separate': denoiser weights trained with MSE alone.", exists=True, dir_okay=False)] = None,
    joint: Annotated[Path | None, typer.Option(help="Arm 'joint': denoiser weights trained with the classifier (--task classify).", exists=True, dir_okay=False)] = None,
    cross_task: Annotated[Path | None, typer.Option(help="Arm 'cross-task': denoiser weights trained with the segmenter (--task segment).", exists=True, dir_okay=False)] = None,
    model: ModelOpt = None,
    cbm3d: Annotated[int, typer.Option(help="CBM3D arm on the first N images of the split (~3 s a 224x224 crop per sigma; cached); 0 leaves it out.", min=0)] = 100,
    cbm3d_cache: CacheOpt = None,
    labels: Annotated[Path | None, typer.Option(help="CSV 'file,index' (files relative to DATA); default DATA/labels.csv.", exists=True, dir_okay=False)] = None,
    split: Annotated[Split, typer.Option(help="Rows of labels.csv used (0-based): train = even rows, test = odd rows, all. Evaluate a denoiser trained on the train half with --split test.")] = Split.all,
    head: Annotated[str, typer.Option(help="Classifier: efficientnet-lite0|1|2, vgg16 (with --head-weights), torchvision:<model>. A head other than the one the joint arm was trained with measures cross-architecture transfer.")] = "efficientnet-lite0",
    head_weights: Annotated[Path | None, typer.Option(help="Weights of the head (default: its pip package; vgg16 needs torchvision's vgg16-397923af.pth).", exists=True, dir_okay=False)] = None,
    resize: Annotated[int | None, typer.Option(help="Short side before the centre crop (default: the head's; Lite0 256, Lite1 272, Lite2 292, others 256).", min=8)] = None,
    crop: Annotated[int | None, typer.Option(help="Centre crop side (default: the head's; Lite0 224, Lite1 240, Lite2 260, others 224).", min=8)] = None,
    sigma: SigmaOpt = "15,30,45,60",
    seed: SeedOpt = "0",
    control: ControlOpt = None,
    draws: DrawsOpt = 2000,
    limit: LimitOpt = None,
    quantize: QuantizeOpt = True,
    clean: CleanOpt = True,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for table2.md, table2.json, table2.png.")] = Path("results/table2"),
) -> None:
    """Table 2: top-1 / top-5 of a frozen classifier at each sigma for the arms noisy, CBM3D, separate, joint,
    cross-task (each only if its weights are given), extra --model arms, and clean."""
    from fastdenoise.tables import Table2Config, table2, task_arms

    extra = named_models(model)

    def build(progress):
        cfg = Table2Config(
            str(data), str(labels) if labels else None, sigma_list(sigma), seed_list(seed), control, draws, split=split.value,
            limit=limit, head=head, head_weights=str(head_weights) if head_weights else None, resize=resize, crop=crop,
            quantize=quantize, device=device,
        )  # fmt: skip
        arms = task_arms(separate, joint, cross_task, cbm3d, extra, device, cbm3d_cache)
        return table2(cfg, arms, clean=clean, progress=progress)

    run_table("table 2", build, out)


@tables_app.command("table3")
def table3_cmd(
    data: Annotated[Path, typer.Argument(help="CamVid folder (SegNet layout: val/ and valannot/ inside).", exists=True, file_okay=False)],
    separate: Annotated[Path | None, typer.Option(help="Arm 'separate': denoiser weights trained with MSE alone.", exists=True, dir_okay=False)] = None,
    joint: Annotated[Path | None, typer.Option(help="Arm 'joint': denoiser weights trained with the segmenter (--task segment).", exists=True, dir_okay=False)] = None,
    cross_task: Annotated[Path | None, typer.Option(help="Arm 'cross-task': denoiser weights trained with the classifier (--task classify).", exists=True, dir_okay=False)] = None,
    model: ModelOpt = None,
    cbm3d: Annotated[int, typer.Option(help="CBM3D arm on the first N images (~11 s a 480x360 image per sigma; cached); 0 leaves it out.", min=0)] = 25,
    cbm3d_cache: CacheOpt = None,
    subset: Annotated[str, typer.Option(help="Images in DATA/<subset>, masks in DATA/<subset>annot.")] = "val",
    head: Annotated[str, typer.Option(help="Segmenter: espnetv2-camvid (Cityscapes weights, classes merged into CamVid's 11), or another head with CamVid classes.")] = "espnetv2-camvid",
    head_weights: Annotated[Path | None, typer.Option(help="Weights of the head (default: weights/espnetv2 under $FASTDENOISE_DATA or a folder above DATA).", exists=True, dir_okay=False)] = None,
    scale: Annotated[float, typer.Option(help="The head sees the image resized by this (1.5: 720x540, mIoU 0.606 clean vs 0.551 at 1.0); scored on the native masks.", min=0.1, max=8.0)] = 1.0,
    ignore_index: Annotated[int, typer.Option(help="Mask value without a class (CamVid void: 11).", min=0, max=255)] = 11,
    sigma: SigmaOpt = "15,30,45,60",
    seed: SeedOpt = "0",
    control: ControlOpt = None,
    draws: DrawsOpt = 2000,
    limit: LimitOpt = None,
    quantize: QuantizeOpt = True,
    clean: CleanOpt = True,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for table3.md, table3.json, table3.png.")] = Path("results/table3"),
) -> None:
    """Table 3: mIoU (confusion summed over the images) of a frozen segmenter at each sigma for the arms noisy, CBM3D,
    separate, joint, cross-task (each only if its weights are given), extra --model arms, and clean."""
    from fastdenoise.tables import Table3Config, find_segmenter_weights, table3, task_arms

    images, masks = data / subset, data / f"{subset}annot"
    for folder in (images, masks):
        if not folder.is_dir():
            raise fail(f"{folder}: not a folder (expected the SegNet CamVid layout, e.g. val/ and valannot/)")
    weights = head_weights or find_segmenter_weights(head, data)
    extra = named_models(model)

    def build(progress):
        cfg = Table3Config(
            str(images), str(masks), sigma_list(sigma), seed_list(seed), control, draws, limit=limit, head=head,
            head_weights=str(weights) if weights else None, scale=scale, ignore_index=ignore_index, quantize=quantize, device=device,
        )  # fmt: skip
        arms = task_arms(separate, joint, cross_task, cbm3d, extra, device, cbm3d_cache)
        return table3(cfg, arms, clean=clean, progress=progress)

    run_table("table 3", build, out)


@tables_app.command("split")
def split_cmd(
    labels: Annotated[Path, typer.Argument(help="CSV 'file,index' (imagenet-samples/labels.csv).", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the split's CSV (pass it to fastdenoise train --labels).")],
    split: Annotated[Split, typer.Option(help="train = even rows (0-based), test = odd rows.")] = Split.train,
) -> None:
    """Write one half of a labels CSV: train a joint denoiser on --split train, then `tables table2 --split test`."""
    from fastdenoise.tables import write_split_labels

    try:
        rows = write_split_labels(labels, split, out)
    except ValueError as err:
        raise fail(str(err)) from err
    typer.echo(f"{rows} rows ({split.value}: {'even' if split is Split.train else 'odd' if split is Split.test else 'all'} rows of {labels}) -> {out}")


PrecisionChoice = Annotated[str, typer.Option(help="auto (as `run`), fp32, fp16, bf16: weights and compute; I/O stays float32.")]


@app.command("export-onnx")
def export_onnx_cmd(
    out: Annotated[Path, typer.Argument(help="ONNX file to write.", dir_okay=False)],
    weights: WeightsOpt = None,
    precision: PrecisionChoice = "fp32",
    head: Annotated[str | None, typer.Option(help="Append a head and export denoiser -> head as one graph (efficientnet-lite0, espnetv2-voc, torchvision:<model> ...).")] = None,
    head_weights: Annotated[Path | None, typer.Option(help="Weights for --head (default: the head's own).", exists=True, dir_okay=False)] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 18; 22 for bf16).")] = None,
    exporter: Annotated[str, typer.Option(help="dynamo (default) or torchscript (for heads torch.export cannot trace, e.g. efficientnet-lite*).")] = "dynamo",
) -> None:
    """Export the BN-folded denoiser (or denoiser -> head) to ONNX with dynamic batch, height and width."""
    import torch

    from fastdenoise.backends import Precision, resolve_precision
    from fastdenoise.checkpoint import CheckpointError, load_denoiser
    from fastdenoise.engines.build import file_sha256
    from fastdenoise.engines.export import export_cascade, export_denoiser

    try:
        dtype = resolve_precision(Precision(precision), torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_denoiser(weights)
        if head is None:
            path = export_denoiser(model, out, dtype=dtype, opset=opset, exporter=exporter)
        else:
            from fastdenoise.heads import load_head

            path = export_cascade(model, load_head(head, head_weights), out, dtype=dtype, opset=opset, exporter=exporter)
    except (CheckpointError, ValueError, ImportError) as err:  # ExportError is a ValueError
        raise fail(str(err)) from err
    typer.echo(f"onnx: {path} (sha256 {file_sha256(path)[:12]})")


@app.command("build-engine")
def build_engine_cmd(
    onnx_file: Annotated[Path | None, typer.Argument(help="ONNX from `export-onnx`; omitted: export --weights at --precision first.", exists=True, dir_okay=False)] = None,
    weights: WeightsOpt = None,  # only without ONNX_FILE
    precision: PrecisionChoice = "auto",  # only without ONNX_FILE; a given ONNX file carries its precision
    tile: Annotated[int, typer.Option(help="Profile for `run --tile T --batch B`: up to B x 3 x (T+3) x (T+3), tuned for B x 3 x T x T.")] = 1024,
    batch: Annotated[int, typer.Option(help="Largest batch of the profile (see --tile).")] = 4,
    min_shape: Annotated[str | None, typer.Option("--min", help="Explicit profile: NxCxHxW; --min, --opt, --max together replace --tile/--batch.")] = None,
    opt_shape: Annotated[str | None, typer.Option("--opt", help="Shape TensorRT tunes for, NxCxHxW.")] = None,
    max_shape: Annotated[str | None, typer.Option("--max", help="Largest accepted shape, NxCxHxW.")] = None,
    workspace: Annotated[int | None, typer.Option(help="Builder workspace limit in MiB (default: TensorRT's, the whole GPU).")] = None,
    optimization_level: Annotated[int, typer.Option(help="Builder optimization level 0 (fast build) .. 5 (slowest build).")] = 3,
    hardware_compatibility: Annotated[str, typer.Option(help="none (this GPU model), ampere_plus, same_compute_capability.")] = "none",
    version_compatible: Annotated[bool, typer.Option(help="Loadable by later TensorRT 10.x runtimes too.")] = False,
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache file (default: one per GPU and TensorRT version in the cache).", dir_okay=False)] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Engine cache (default: $FASTDENOISE_CACHE/engines or ~/.cache/fastdenoise/engines).", file_okay=False)] = None,
    device: DeviceOpt = "cuda",
    rebuild: Annotated[bool, typer.Option(help="Build again even if the cache holds this engine.")] = False,
    list_engines_: Annotated[bool, typer.Option("--list", help="List the cached engines (GPU, TensorRT, precision, profile, checksum state) and exit.")] = False,
) -> None:
    """Build a TensorRT engine for this GPU (cached with a JSON sidecar); use it with `run --backend tensorrt --engine`."""
    import torch

    from fastdenoise.engines.build import BuildConfig, EngineError, Profile, build_engine, list_engines

    if list_engines_:
        infos = list_engines(cache_dir)
        for info in infos:
            typer.echo(info.describe())
        if not infos:
            typer.echo("no engines cached")
        return
    try:
        shapes = (min_shape, opt_shape, max_shape)
        if any(shapes) and not all(shapes):
            raise ValueError("--min, --opt and --max go together")
        profile = Profile.parse(f"{min_shape}:{opt_shape}:{max_shape}") if all(shapes) else Profile.for_tiles(tile, batch)
        cfg = BuildConfig(
            profile=profile, workspace_mib=workspace, optimization_level=optimization_level,
            hardware_compatibility=hardware_compatibility, version_compatible=version_compatible,
            timing_cache=str(timing_cache) if timing_cache else None,
        )  # fmt: skip
        cuda = torch.device(device)
        if onnx_file is None:
            from fastdenoise.backends import Precision, resolve_precision
            from fastdenoise.checkpoint import load_denoiser
            from fastdenoise.engines.export import cached_denoiser_onnx, default_cache_dir

            dtype = resolve_precision(Precision(precision), cuda)
            onnx_file = cached_denoiser_onnx(load_denoiser(weights), dtype, default_cache_dir() / "onnx")
        path = build_engine(onnx_file, cfg, cache_dir=cache_dir, device=cuda, rebuild=rebuild)
    except (EngineError, ValueError, ImportError) as err:  # CheckpointError is a ValueError too
        raise fail(str(err)) from err
    typer.echo(f"engine: {path} (profile {profile.text})")
    typer.echo(f"use: fastdenoise run IN OUT --backend tensorrt --engine {path}  (images/tiles must fit the profile)")


@app.command()
def bench(
    profile: Annotated[str, typer.Option(help="quick (CI-sized CPU run, a few minutes), full (CPU, all sizes and peers), gpu.")] = "quick",
    data: Annotated[Path | None, typer.Option(help="Shared data folder (kodak24/, weights/, SHA256SUMS); default $FASTDENOISE_DATA or ../shared/data.", exists=True, file_okay=False)] = None,
    weights: WeightsOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results root: writes OUT/<machine>/<profile>.json, .txt and -throughput/-quality.png.")] = Path("bench/results"),
    compare: Annotated[Path | None, typer.Option(help="A saved result (.json) to compare with: prints the ratios, exit 1 past --threshold.", exists=True, dir_okay=False)] = None,
    threshold: Annotated[float, typer.Option(help="With --compare: fail when a speed falls below (1 - threshold) x the saved one.", min=0.0, max=0.99)] = 0.10,
    accuracy_only: Annotated[bool, typer.Option("--accuracy-only", help="Only the accuracy checks against the baselines (CI): no timings, nothing written.")] = False,
    baselines: Annotated[Path | None, typer.Option(help="Accuracy baselines; default bench/baselines.json of this checkout.", exists=True, dir_okay=False)] = None,
    cache: Annotated[Path | None, typer.Option(help="CBM3D output cache; default ~/.cache/fastdenoise/cbm3d.", file_okay=False)] = None,
    report: Annotated[Path | None, typer.Option(help="Show a saved result (.json) instead of running; redraws its plots beside it.", exists=True, dir_okay=False)] = None,
) -> None:
    """Throughput per backend, training steps and the roofline, quality vs the peers, accuracy regressions: table, JSON, plots.

    Exit 1 when an accuracy check fails or --compare finds a metric past the threshold.
    """
    from rich.console import Console

    from fastdenoise.benchmark import SECTIONS, BenchConfig, run_benchmark
    from fastdenoise.report import (
        accuracy_failed,
        compare_results,
        compare_table,
        load_result,
        plot_result,
        render,
        write_outputs,
    )

    console = Console()
    try:
        saved = load_result(compare) if compare else None
        if report:
            result = load_result(report)
        else:
            cfg = BenchConfig(
                profile=profile, data=str(data) if data else None, weights=str(weights) if weights else None,
                baselines=str(baselines) if baselines else None,
                cache=str(cache) if cache else None, sections=("accuracy",) if accuracy_only else SECTIONS,
            )  # fmt: skip
            with console.status(f"bench --profile {profile}") as status:
                result = run_benchmark(cfg, log=status.update)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise fail(str(err)) from err
    console.print(render(result))
    if report:
        written = plot_result(result, report.parent)
    elif not accuracy_only:
        written = write_outputs(result, out)
    else:
        written = []
    if written:
        console.print("wrote " + ", ".join(str(p) for p in written))
    failed = bool(accuracy_failed(result))
    if saved is not None:
        changes = compare_results(result, saved, threshold)
        console.print(compare_table(changes, result, saved, threshold))
        failed |= any(c.failed for c in changes)
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the noisy | denoised | clean strips go.")] = Path("demo"),
    sigma: Annotated[float, typer.Option(help="Noise level, 0-255 units.")] = 25.0,
    weights: WeightsOpt = None,
    model: ModelNameOpt = None,
    ensemble: EnsembleOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Denoise scikit-image's sample photos with the bundled weights and print PSNR before/after."""
    from rich.console import Console
    from rich.table import Table

    from fastdenoise.demo import run_demo
    from fastdenoise.evaluate import backend_denoiser
    from fastdenoise.noise import check_sigma

    try:
        check_sigma(sigma)
    except ValueError as err:
        raise fail(f"--sigma: {err}") from err
    _, denoiser = backend_options(weights, "eager", device, "auto", model=model, sigma=sigma, ensemble=ensemble)
    rows = run_demo(backend_denoiser(denoiser), out, sigma)
    table = Table("image", "size", "noisy PSNR", "denoised PSNR", "gain", title=f"fastdenoise demo, sigma {sigma:g}")
    for r in rows:
        table.add_row(r["image"], r["size"], f"{r['noisy_psnr']:.2f} dB", f"{r['psnr']:.2f} dB", f"{r['psnr'] - r['noisy_psnr']:+.2f} dB")
    Console().print(table)
    typer.echo(f"noisy | denoised | clean images written to {out}/")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
