"""`fastdenoise demo`: the bundled weights on scikit-image's sample photos."""

from pathlib import Path
from typing import Annotated

import typer

from fastdenoise.cli.common import DeviceOpt, EnsembleOpt, ModelNameOpt, WeightsOpt, backend_options, fail, starting


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the noisy | denoised | clean strips go.")] = Path(
        "demo"
    ),
    sigma: Annotated[float, typer.Option(help="Noise level, 0-255 units.")] = 25.0,
    weights: WeightsOpt = None,
    model: ModelNameOpt = None,
    ensemble: EnsembleOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Denoise scikit-image's sample photos with the bundled weights and print PSNR before/after."""
    with starting():
        from rich.console import Console
        from rich.table import Table

        from fastdenoise.evaluation.demo import run_demo
        from fastdenoise.evaluation.evaluate import backend_denoiser
        from fastdenoise.noise import check_sigma

    try:
        check_sigma(sigma)
    except ValueError as err:
        raise fail(f"--sigma: {err}") from err
    if sigma == 0:  # nothing to remove: PSNR against the clean image would be infinite
        raise fail("--sigma: give a noise level above 0 (the demo adds that much noise and removes it)")
    _, denoiser = backend_options(weights, "eager", device, "auto", model=model, sigma=sigma, ensemble=ensemble)
    rows = run_demo(backend_denoiser(denoiser), out, sigma)
    table = Table("image", "size", "noisy PSNR", "denoised PSNR", "gain", title=f"fastdenoise demo, sigma {sigma:g}")
    for r in rows:
        table.add_row(
            r["image"],
            r["size"],
            f"{r['noisy_psnr']:.2f} dB",
            f"{r['psnr']:.2f} dB",
            f"{r['psnr'] - r['noisy_psnr']:+.2f} dB",
        )
    Console().print(table)
    typer.echo(f"noisy | denoised | clean images written to {out}/")
