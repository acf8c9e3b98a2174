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
        train_denoiser(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        raise fail(str(err)) from err
    typer.echo(f"weights: {out / 'model.safetensors'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
