"""`fastdenoise train`: the denoiser alone (MSE) or jointly with frozen heads (--task)."""

from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated

import typer

from fastdenoise import interrupts
from fastdenoise.choices import Amp, ExitStatus, Loss, Schedule, Switch, TaskTarget
from fastdenoise.cli.common import DeviceOpt, fail, starting


def interrupt_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C, so training checkpoints and folder runs flush before exiting."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise interrupts.Terminated  # told apart from Ctrl-C: exit 143

    signal.signal(signal.SIGTERM, handler)


def parse_range(text: str) -> tuple[float, float]:
    """'25' -> (25, 25); '5-55' or '5:55' -> (5, 55)."""
    parts = text.replace(":", "-").split("-")
    try:
        values = [float(p) for p in parts if p != ""]
    except ValueError as err:
        raise fail(f"--sigma: expected a number or a range like 5-55, got {text!r}") from err
    if len(values) not in (1, 2):
        raise fail(f"--sigma: expected a number or a range like 5-55, got {text!r}")
    return (values[0], values[-1])


def train(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Argument(
            metavar="DATA",
            help="Folder of clean training images (optional with --resume: the run's own).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, log.jsonl, config.json.")] = Path(
        "runs/denoiser"
    ),
    val: Annotated[
        Path | None, typer.Option(help="Folder of clean validation images.", exists=True, file_okay=False)
    ] = None,
    sigma: Annotated[str, typer.Option(help="Noise level in 0-255 units: fixed (25) or a blind range (5-55).")] = "25",
    patch: Annotated[
        int | None,
        typer.Option(help=("Crop side, multiple of 4 (default 48; joint: 224 classify, 256 segment)."), min=4),
    ] = None,
    batch: Annotated[int, typer.Option(help="Patches per step.", min=1)] = 32,
    steps: Annotated[int, typer.Option(help="Optimizer steps in total.", min=1)] = 20_000,
    lr: Annotated[float, typer.Option(help="Peak Adam learning rate.")] = 1e-3,
    schedule: Annotated[
        Schedule,
        typer.Option(help=("cosine: to --steps; constant: after warm-up, for runs extended with --resume --steps.")),
    ] = Schedule.cosine,
    ema: Annotated[
        float,
        typer.Option(
            help=("Decay of a moving average of the weights, validated and saved (0.999; 0 = off)."),
            min=0.0,
            max=0.9999,
        ),
    ] = 0.0,
    loss: Annotated[Loss, typer.Option(help="Reconstruction loss.")] = Loss.mse,
    val_every: Annotated[int, typer.Option(help="Validate every N steps.", min=1)] = 1000,
    val_images: Annotated[int, typer.Option(help="Validation images used (first N of the folder).", min=1)] = 12,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps.", min=1)] = 250,
    seed: Annotated[int, typer.Option(help="Seed of initial weights, patches and noise.", min=0)] = 0,
    device: DeviceOpt = "auto",
    amp: Annotated[Amp, typer.Option(help="Mixed precision; auto: bf16 on a GPU that has it.")] = Amp.auto,
    compile: Annotated[Switch, typer.Option(help="torch.compile; auto: on for CUDA.")] = Switch.auto,
    freeze_bn: Annotated[
        bool | None,
        typer.Option(
            "--freeze-bn/--batch-bn",
            help=(
                "BatchNorm keeps its running statistics while training (default with --init: a fine-tune on small "
                "batches keeps its init's) or uses each batch's (default from scratch)."
            ),
        ),
    ] = None,
    sync_bn: Annotated[
        bool,
        typer.Option(
            help=(
                "Under torchrun on GPUs: BatchNorm statistics over the global batch (default: each process its own "
                "share, as one GPU saw its batch in the paper)."
            )
        ),
    ] = False,
    resume: Annotated[
        bool, typer.Option(help=("Continue from OUT/last.pt if present (refuse to reuse a finished folder otherwise)."))
    ] = False,
    task: Annotated[
        str | None,
        typer.Option(
            help=(
                "Joint training against frozen heads: classify, segment, or several comma-separated (classify,segment: "
                "one denoiser for both, label-free); omit for MSE alone."
            )
        ),
    ] = None,
    head: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "Frozen head, repeat for several (one per task, or several for one task): efficientnet-lite0|1|2, "
                "espnetv2-voc|cityscapes|camvid, vgg16, deeplab-largefov, torchvision:<model>. Default: "
                "efficientnet-lite0 (classify), espnetv2-camvid (segment)."
            )
        ),
    ] = None,
    head_weights: Annotated[
        list[Path] | None,
        typer.Option(
            help=(
                "Weights of the head, one per --head (default: its pip package; ESPNetv2: weights/espnetv2 under "
                "$FASTDENOISE_DATA or a folder above DATA)."
            ),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    lam: Annotated[
        list[float] | None,
        typer.Option(
            help=("Raw weight of the task loss, one or one per head (default 0.25 classify, 0.5 segment)."), min=0.0
        ),
    ] = None,
    balance: Annotated[
        list[float] | None,
        typer.Option(
            help=(
                "Instead of --lam: the task's gradient w.r.t. the denoiser output is kept at R times the MSE's (EMA of "
                "the norms; docs/task-aware.md); one or one per head."
            ),
            min=0.0,
        ),
    ] = None,
    balance_decay: Annotated[
        float, typer.Option(help=("EMA decay of the gradient norms behind --balance."), min=0.0, max=0.9999)
    ] = 0.99,
    target: Annotated[
        TaskTarget,
        typer.Option(
            help=("labels: ground truth; argmax / softmax: label-free, the head's prediction on the clean crop.")
        ),
    ] = TaskTarget.LABELS,
    labels: Annotated[
        Path | None,
        typer.Option(
            help=("Classify: CSV 'file,index' (files relative to DATA); default: one sub-folder per class."),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    masks: Annotated[
        Path | None, typer.Option(help="Segment: folder of masks named like the images.", exists=True, file_okay=False)
    ] = None,
    ignore_index: Annotated[
        int, typer.Option(help="Segment: mask value without a class (CamVid: 11).", min=0, max=255)
    ] = 255,
    resize: Annotated[
        int | None,
        typer.Option(
            help=("Short side before cropping (default: 8/7 of --patch for classify, unchanged for segment).")
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            help=("Start from these denoiser weights (.safetensors or last.pt), e.g. an MSE run."),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    jpeg: Annotated[
        str | None,
        typer.Option(
            help=(
                "Store a share of the noisy patches as JPEG of a quality in this range (e.g. 70-95, 4:2:0 chroma), as "
                "cameras save noisy photos."
            )
        ),
    ] = None,
    jpeg_share: Annotated[
        float, typer.Option(help="The share of patches --jpeg stores as JPEG.", min=0.0, max=1.0)
    ] = 0.5,
    extra: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FOLDER",
            help=(
                "Another folder of clean training photos, drawn from with DATA's (every photo alike); repeat for "
                "several. Evaluation sets (Kodak24, CBSD68, unlike24, CamVid val) are refused."
            ),
            exists=True,
            file_okay=False,
        ),
    ] = None,
    colour: Annotated[
        float,
        typer.Option(
            help=(
                "The share of clean patches given a random channel order, saturation (x0.5-2) and hue before the noise "
                "(0 = off)."
            ),
            min=0.0,
            max=1.0,
        ),
    ] = 0.0,
    downscale: Annotated[
        float,
        typer.Option(
            help=(
                "Cut each patch from a square up to this many times larger and shrink it (antialiased): sharper edges "
                "and finer texture (1 = off; e.g. 2)."
            ),
            min=1.0,
            max=4.0,
        ),
    ] = 1.0,
    noise_map: Annotated[
        bool,
        typer.Option(
            help=(
                "Give the network the noise level as a fourth input channel (then run and eval need --sigma); --init "
                "with blind weights starts it exactly where they are."
            )
        ),
    ] = False,
) -> None:
    """Train the denoiser with MSE alone ("separate"), or jointly with a frozen classifier/segmenter (--task).

    Under torchrun (`torchrun --nproc-per-node N -m fastdenoise train ...`) the N processes train one model with
    DistributedDataParallel: --batch is the global batch, each process draws its share; rank 0 writes OUT."""
    with starting():
        from fastdenoise.models.checkpoint import CheckpointError
        from fastdenoise.models.denoiser import DenoiserSpec
        from fastdenoise.training.config import resumed_config
        from fastdenoise.training.fit import TrainConfig, train_denoiser
        from fastdenoise.training.joint import JointConfig, Task, default_crop, parse_tasks, train_joint

    joint_only = (labels, masks, head, head_weights, lam, balance, resize, target is not TaskTarget.LABELS)
    hold_run_folder(ctx, out)
    stored = stored_config(out, data, resume, task, any(joint_only))
    try:
        tasks = parse_tasks(task) if task is not None else ()
    except ValueError as err:
        raise fail(f"--task: {err}") from err
    crop = patch if patch is not None else (max(default_crop(Task(t)) for t in tasks) if tasks else 48)
    try:
        cfg = TrainConfig(
            data=str(data or "."),
            out=str(out),
            val=str(val) if val else None,
            sigma=parse_range(sigma),
            patch=crop,
            batch=batch,
            steps=steps,
            lr=lr,
            val_every=val_every,
            val_images=val_images,
            ckpt_every=ckpt_every,
            seed=seed,
            device=device,
            amp=amp.value,
            compile=compile.value,
            schedule=schedule.value,
            ema=ema,
            loss=loss.value,
            sync_bn=sync_bn,
            freeze_bn=freeze_bn if freeze_bn is not None else init is not None,
            spec=asdict(DenoiserSpec(noise_map=noise_map)),
            jpeg=tuple(int(q) for q in parse_range(jpeg)) if jpeg else None,
            jpeg_share=jpeg_share,
            extra=tuple(str(folder) for folder in extra or ()),
            colour=colour,
            downscale=downscale,
        )
        separate_only(tasks, noise_map, augmented=bool(extra or colour or downscale != 1.0))
        if stored is not None:
            cfg = resumed_config(cfg, stored, out, {name for name in asdict(cfg) if given(ctx, name)})
            data = Path(cfg.data)
        interrupt_on_sigterm()
        if not tasks:
            train_denoiser(cfg, init=str(init) if init else None, resume=resume)
        else:
            joint = JointConfig(
                cfg,
                tasks=tasks,
                heads=tuple(head or ()),
                lam=tuple(lam or ()),
                balance=tuple(balance or ()),
                balance_decay=balance_decay,
                target=target.value,
                labels=str(labels) if labels else None,
                masks=str(masks) if masks else None,
                ignore_index=ignore_index,
                resize=resize,
                init=str(init) if init else None,
            )
            train_joint(
                replace(joint, head_weights=found_head_weights(joint.head_list, head_weights, data)), resume=resume
            )
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as err:
        raise fail(str(err)) from err
    except OSError as err:  # disk full, read-only, no permission: one line
        raise unwritable(err, out) from None
    except KeyboardInterrupt as err:
        raise stopped(err, out) from None
    typer.echo(f"weights: {out / 'model.safetensors'}")


def separate_only(tasks: tuple, noise_map: bool, augmented: bool) -> None:
    """ValueError for options of the denoiser alone (--noise-map; --extra, --colour, --downscale) given with --task."""
    if noise_map and tasks:
        raise ValueError("--noise-map trains the denoiser alone; joint training (--task) takes blind denoisers")
    if augmented and tasks:
        raise ValueError("--extra, --colour and --downscale are for the denoiser alone, not joint training (--task)")


def hold_run_folder(ctx: typer.Context, out: Path) -> None:
    """Rank 0 holds OUT's lock (`lock.OutputLock`, as `run` does) until the command ends: a second `train` or `run` on
    OUT stops at once naming the holder (one line, exit 2); the lock of a run that died is taken over with a note. A
    folder made here for a command that then fails is removed again while empty."""
    from fastdenoise import distributed
    from fastdenoise.pipeline.lock import OutputLock

    if distributed.shard_from_env().rank != 0:  # the other ranks of a torchrun job write nothing to OUT
        return
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # innermost first
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = OutputLock(out)
    except OSError as err:
        raise fail(f"{out}: cannot use it as the run folder ({err.strerror or err})") from err
    except ValueError as err:  # LockError: another live run; or a link planted at the lock's name
        raise fail(str(err)) from err
    ctx.call_on_close(lambda: let_go(lock, made))
    if lock.taken_over:
        typer.secho(
            f"note: took over the output lock of a run no longer running ({lock.taken_over})",
            err=True,
            fg=typer.colors.YELLOW,
        )


def let_go(lock, made: list[Path]) -> None:
    """Release the lock; remove the folders this command made (innermost first) while they are empty."""
    lock.release()
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty: the run wrote there
            return


def stored_config(out: Path, data: Path | None, resume: bool, task: str | None, joint_options: bool) -> dict | None:
    """The run folder's config.json when resuming (else None); one line, exit 2, for a folder that holds a run not to
    be resumed (`config.check_run_folder`, as the library refuses it), a missing DATA, or options of joint training
    without --task."""
    from fastdenoise.training.config import check_run_folder, read_config

    try:
        check_run_folder(out, resume)
        stored = read_config(out / "config.json") if resume and (out / "config.json").is_file() else None
    except ValueError as err:
        raise fail(str(err)) from err
    if data is None and stored is None:
        raise fail(
            "missing DATA: the folder of clean training images (only --resume of a run with a config.json may omit it)"
        )
    if stored is not None and task is None and (out / "joint.json").is_file():
        raise fail(f"{out}: a joint run; resume it with its --task, --head ... options as in {out / 'joint.json'}")
    if task is None and joint_options:
        raise fail(
            "--head, --head-weights, --lam, --balance, --target, --labels, --masks and --resize are for joint "
            "training: add --task"
        )
    return stored


def found_head_weights(heads: tuple[str, ...], paths: list[Path] | None, data: Path) -> tuple[str | None, ...]:
    """One weights file per head: the --head-weights given, else where the head's are found (None: its package's)."""
    from fastdenoise.evaluation.tables import find_segmenter_weights

    weights = list(paths or [None] * len(heads))
    if len(weights) != len(heads):
        raise ValueError(f"--head-weights: give one per head ({len(heads)}), got {len(weights)}")
    found = [w or find_segmenter_weights(name, data) for name, w in zip(heads, weights)]
    return tuple(str(w) if w else None for w in found)


def stopped(err: KeyboardInterrupt, out: Path) -> typer.Exit:
    """The one message of a stopped run (SIGINT or SIGTERM) and its exit code, 128 + the signal's number."""
    import signal

    sigterm = getattr(err, "signum", None) == signal.SIGTERM or isinstance(err, interrupts.Terminated)
    code = ExitStatus.TERMINATED if sigterm else ExitStatus.INTERRUPTED
    step = getattr(err, "step", None)  # TrainingStopped: fit saved a checkpoint at this step
    if step is None and not (out / "last.pt").is_file():
        return fail("interrupted before the first checkpoint", code=code)
    at = "" if step is None else f" at step {step}"
    typer.secho(
        f"stopped{at}: the last checkpoint is {out / 'last.pt'}; continue with --out {out} --resume",
        err=True,
        fg=typer.colors.YELLOW,
    )
    return typer.Exit(code)


def unwritable(err: OSError, out: Path) -> typer.Exit:
    """The one line of a run stopped by an OSError, and its exit code: 3, as `run`'s, for a full or read-only disk
    (the last checkpoint, written atomically, is intact), else 1."""
    import errno

    if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return fail(f"{err.filename or out}: {err.strerror or err}", code=ExitStatus.FAILED)
    last = out / "last.pt"
    kept = f"{last} keeps step {last_step(last)}" if last.is_file() else "no checkpoint was saved"
    return fail(
        f"{err.filename or out}: cannot write it ({err.strerror}); {kept}: continue with --out {out} --resume "
        "once OUT can be written",
        code=ExitStatus.OUTPUT,
    )


def last_step(path: Path) -> str:
    """The step a checkpoint holds, '?' if it cannot be read."""
    from fastdenoise.models.checkpoint import CheckpointError, load_checkpoint

    try:
        return str(load_checkpoint(path).get("step", "?"))
    except CheckpointError:
        return "?"


def given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was typed on the command line (not a default)."""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) == "COMMANDLINE"  # typer may ship its own click: compare by name
