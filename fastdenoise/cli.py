"""The `fastdenoise` command line: parses options and wires library calls, nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    data: Annotated[Path, typer.Argument(help="Folder of clean training images.", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, log.jsonl, config.json.")] = Path("runs/denoiser"),
    val: Annotated[Path | None, typer.Option(help="Folder of clean validation images.", exists=True, file_okay=False)] = None,
    sigma: Annotated[str, typer.Option(help="Noise level in 0-255 units: fixed (25) or a blind range (5-55).")] = "25",
    patch: Annotated[int, typer.Option(help="Patch size (multiple of 4).")] = 48,
    batch: Annotated[int, typer.Option(help="Patches per step.")] = 32,
    steps: Annotated[int, typer.Option(help="Optimizer steps in total.")] = 20_000,
    lr: Annotated[float, typer.Option(help="Peak Adam learning rate.")] = 1e-3,
    val_every: Annotated[int, typer.Option(help="Validate every N steps.")] = 1000,
    val_images: Annotated[int, typer.Option(help="Validation images used (first N of the folder).")] = 12,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 250,
    seed: Annotated[int, typer.Option(help="Seed of patches and noise.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    amp: Annotated[str, typer.Option(help="auto, off, bf16, fp16.")] = "auto",
    compile: Annotated[str, typer.Option(help="torch.compile: auto (on for CUDA), on, off.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt if present (refuse to reuse a finished folder otherwise).")] = False,
) -> None:
    """Train the denoiser with MSE alone ("separate" training)."""
    from fastdenoise.checkpoint import CheckpointError
    from fastdenoise.train import TrainConfig, train_denoiser

    if (out / "last.pt").exists() and not resume:
        raise fail(f"{out}: holds a run already; pass --resume to continue it or choose another --out")
    try:
        cfg = TrainConfig(
            data=str(data), out=str(out), val=str(val) if val else None, sigma=parse_range(sigma), patch=patch, batch=batch,
            steps=steps, lr=lr, val_every=val_every, val_images=val_images, ckpt_every=ckpt_every, seed=seed,
            device=device, amp=amp, compile=compile,
        )  # fmt: skip
        interrupt_on_sigterm()
        train_denoiser(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        raise fail(str(err)) from err
    except KeyboardInterrupt:
        raise fail(f"interrupted; the last checkpoint is {out / 'last.pt'}: continue with --resume", 130) from None
    typer.echo(f"weights: {out / 'model.safetensors'}")


def backend_options(
    weights: Path | None, backend: str, device: str, precision: str, engine: Path | None = None
) -> tuple:
    """Load the weights and build the backend; turns every expected failure into a one-line error."""
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.checkpoint import CheckpointError, load_denoiser

    try:
        model = load_denoiser(weights)
        cfg = BackendConfig(kind=backend, device=device, precision=precision, engine=str(engine) if engine else None)
        return model, make_backend(model, cfg)
    except (CheckpointError, ValueError) as err:
        raise fail(str(err)) from err
    except ImportError as err:
        raise fail(f"backend {backend!r} is not available here: {err}") from err


WeightsOpt = Annotated[Path | None, typer.Option("--weights", "-w", help="Weights (.safetensors or checkpoint); default: bundled blind model.")]
BackendOpt = Annotated[str, typer.Option(help="eager, compiled, triton, onnxruntime, tensorrt.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
PrecisionOpt = Annotated[str, typer.Option(help="auto (bf16 where fast and accurate), fp32, bf16, fp16.")]


@app.command()
def run(
    input: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    output: Annotated[Path, typer.Argument(help="Output folder; mirrors the input tree.")],
    weights: WeightsOpt = None,
    backend: BackendOpt = "eager",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    engine: Annotated[Path | None, typer.Option(help="Prebuilt TensorRT engine or ONNX file for those backends.")] = None,
    format: Annotated[str, typer.Option(help="Output format: png, jpg, webp, bmp, tiff.")] = "png",
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality.")] = 95,
    batch: Annotated[int, typer.Option(help="Images (or tiles) of equal size per batch.")] = 4,
    tile: Annotated[int, typer.Option(help="Images larger than this (px) go through overlapping tiles.")] = 1024,
    overlap: Annotated[int, typer.Option(help="Tile overlap in pixels (blended).")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Redo images whose output exists.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any input failed (default); --no-strict exits 0.")] = True,
) -> None:
    """Denoise every image under INPUT into OUTPUT (PNG by default) with a manifest.jsonl row per input."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from fastdenoise.images import list_images
    from fastdenoise.runner import MANIFEST, RunConfig, check_folders, denoise_folder

    try:
        cfg = RunConfig(format=format, quality=quality, batch=batch, tile=tile, overlap=overlap, overwrite=overwrite)
        check_folders(input, output)
    except ValueError as err:
        raise fail(str(err)) from err
    total = len(list_images(input))
    if total == 0:
        raise fail(f"{input}: no images found")
    _, denoiser = backend_options(weights, backend, device, precision, engine)
    columns = (TextColumn("[bold]denoise"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("run", total=total, last="")
        on_image = lambda row: bar.update(task, advance=1, last=row["input"][-40:])  # noqa: E731
        try:
            summary = denoise_folder(input, output, denoiser, cfg, on_image)
        except ValueError as err:
            raise fail(str(err)) from err
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary.stages.items())
    typer.echo(
        f"{summary.ok} denoised, {summary.skipped} skipped, {summary.failed} failed; {summary.megapixels:.2f} MP in "
        f"{summary.seconds:.1f} s = {summary.mp_per_s:.3f} MP/s ({stages}); manifest: {output / MANIFEST}"
    )
    if summary.failed and strict:
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

    if not data.is_dir():
        raise fail(f"{data}: not a folder")
    sigmas = parse_sigmas(sigma)
    _, denoiser = backend_options(weights, backend, device, precision)
    console = Console()
    try:
        with console.status("evaluating") as status:
            result = evaluate(backend_denoiser(denoiser), data, sigmas, seed, name, limit=limit, progress=status.update)
    except ValueError as err:
        raise fail(str(err)) from err
    table = Table("sigma", "noisy PSNR", "PSNR (dB)", "SSIM", title=f"{name} on {data} (seed {seed}, {len(result.rows) // len(sigmas)} images)")
    for s in result.sigmas:
        table.add_row(f"{s:g}", f"{result.mean(s, 'noisy_psnr'):.2f}", f"{result.mean(s):.2f}", f"{result.mean(s, 'ssim'):.4f}")
    console.print(table)
    write_results([result], out, {"weights": str(weights or "bundled"), "backend": backend, "precision": precision})
    console.print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the noisy | denoised | clean strips go.")] = Path("demo"),
    sigma: Annotated[float, typer.Option(help="Noise level, 0-255 units.")] = 25.0,
    weights: WeightsOpt = None,
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
    _, denoiser = backend_options(weights, "eager", device, "auto")
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
