"""`fastdenoise eval`: PSNR/SSIM of the denoiser on a folder at one or more noise levels."""

from pathlib import Path
from typing import Annotated

import typer

from fastdenoise.choices import BackendKind, Precision
from fastdenoise.cli.common import (
    BackendOpt,
    DeviceOpt,
    EnsembleOpt,
    ModelNameOpt,
    WeightsOpt,
    backend_options,
    fail,
    parse_sigmas,
    starting,
)
from fastdenoise.words import plural


def evaluate_cmd(
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Folder of clean images (e.g. Kodak24).")],
    sigma: Annotated[str, typer.Option(help="Comma-separated noise levels, 0-255 units.")] = "25,35,50",
    weights: WeightsOpt = None,
    model: ModelNameOpt = None,
    ensemble: EnsembleOpt = False,
    backend: BackendOpt = BackendKind.auto,
    device: DeviceOpt = "auto",
    precision: Annotated[Precision, typer.Option(help="fp32 for reported numbers.")] = Precision.fp32,
    seed: Annotated[int, typer.Option(help="Noise seed (image i uses [seed, i]).", min=0)] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for eval.json and eval.md.")] = Path("results/eval"),
    name: Annotated[str, typer.Option(help="Method name in the tables.")] = "fastdenoise",
    limit: Annotated[int | None, typer.Option(help="Only the first N images.", min=1)] = None,
    jpeg: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=100,
            help=(
                "Store each noisy image as JPEG at this quality (4:2:0, as phones and cameras do) before it is "
                "denoised; without a named model, the JPEG model runs where bundled (as `run` does for JPEG inputs)."
            ),
        ),
    ] = None,
) -> None:
    """Per-image and mean PSNR/SSIM on a folder at one or more noise levels."""
    with starting():
        from rich.console import Console
        from rich.table import Table

        from fastdenoise.evaluation.evaluate import backend_denoiser, evaluate, write_results
        from fastdenoise.models.zoo import choose_weights, jpeg_model, takes_level
    backend, precision = backend.value, precision.value  # the library's str

    if not data.is_dir():
        raise fail(f"{data}: not a folder")
    sigmas = parse_sigmas(sigma)
    # Each sigma gets the model a user would get for it (the per-sigma one where bundled), unless one is named.
    stored = jpeg_model() if jpeg is not None and model is None and weights is None else None
    try:
        chosen = {s: choose_weights(model, weights, s) for s in sigmas}
    except ValueError as err:
        raise fail(str(err)) from err
    # A noise-map model runs bound to each sigma (the protocol's level is known); a blind one serves every sigma.
    keys = {s: (path, s if takes_level(path) else None) for s, path in chosen.items()}
    denoisers = {
        key: backend_denoiser(backend_options(key[0], backend, device, precision, sigma=key[1], ensemble=ensemble)[1])
        for key in set(keys.values())
    }
    denoise = lambda x, s: denoisers[keys[s]](x, s)  # noqa: E731
    if stored is not None:  # as `run` routes a JPEG input: the JPEG model from its estimated level JPEG_MIN_SIGMA
        denoise = jpeg_routed(
            denoise, backend_denoiser(backend_options(stored, backend, device, precision, ensemble=ensemble)[1])
        )
    console = Console()
    try:
        with console.status("evaluating") as status:
            result = evaluate(denoise, data, sigmas, seed, name, limit=limit, progress=status.update, jpeg=jpeg)
    except ValueError as err:
        raise fail(str(err)) from err
    images = len(result.rows) // len(sigmas)
    stored_as = f", stored as JPEG {jpeg}" if jpeg is not None else ""
    table = Table(
        "sigma",
        "noisy PSNR",
        "PSNR (dB)",
        "SSIM",
        title=f"{name} on {data} (seed {seed}, {plural(images, 'image')}{stored_as})",
    )
    for s in result.sigmas:
        table.add_row(
            f"{s:g}", f"{result.mean(s, 'noisy_psnr'):.2f}", f"{result.mean(s):.2f}", f"{result.mean(s, 'ssim'):.4f}"
        )
    console.print(table)
    meta = {
        "weights": {f"{s:g}": str(p) for s, p in chosen.items()},
        "backend": backend,
        "precision": precision,
        "ensemble": ensemble,
        "jpeg": jpeg,
        "jpeg_model": str(stored) if stored else None,
    }
    write_results([result], out, meta)
    console.print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")


def jpeg_routed(default, on_jpeg):
    """Per image, what `run` runs on a JPEG input: `on_jpeg` where the estimated noise level reaches JPEG_MIN_SIGMA,
    `default` below it."""
    from fastdenoise.models.zoo import jpeg_gate
    from fastdenoise.noise import to_uint8

    return lambda x, s: (on_jpeg if jpeg_gate(to_uint8(x))[1] else default)(x, s)
