"""`fastdenoise export-onnx` and `build-engine`: the ONNX graph and the TensorRT engine."""

from pathlib import Path
from typing import Annotated

import typer

from fastdenoise.choices import Exporter, HardwareCompatibility, OnnxPrecision
from fastdenoise.cli.common import BlindWeightsOpt, DeviceOpt, fail, starting

PrecisionChoice = Annotated[
    OnnxPrecision, typer.Option(help=("Weights and compute (auto: as `run`); I/O stays float32."))
]


def export_onnx_cmd(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="ONNX file to write.", dir_okay=False)],
    weights: BlindWeightsOpt = None,
    precision: PrecisionChoice = OnnxPrecision.fp32,
    head: Annotated[
        str | None,
        typer.Option(
            help=(
                "Append a head and export denoiser -> head as one graph (efficientnet-lite0, espnetv2-voc, "
                "torchvision:<model> ...)."
            )
        ),
    ] = None,
    head_weights: Annotated[
        Path | None, typer.Option(help=("Weights for --head (default: the head's own)."), exists=True, dir_okay=False)
    ] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 18; 22 for bf16).")] = None,
    exporter: Annotated[
        Exporter, typer.Option(help=("dynamo (default) exports every head; torchscript the denoiser and simple heads."))
    ] = Exporter.dynamo,
    timeout: Annotated[
        float, typer.Option(help=("Seconds the exporter may take before it stops with an error (0: no limit)."), min=0)
    ] = 600,
) -> None:
    """Export the BN-folded denoiser (or denoiser -> head) to ONNX with dynamic batch, height and width."""
    with starting():
        import torch

        from fastdenoise.backends import Precision, resolve_precision
        from fastdenoise.engines.build import file_sha256
        from fastdenoise.engines.export import export_cascade, export_denoiser
        from fastdenoise.models.checkpoint import CheckpointError, load_denoiser
    precision, exporter = precision.value, exporter.value  # the library's str

    try:
        dtype = resolve_precision(Precision(precision), torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_denoiser(weights)
        if head is None:
            path = export_denoiser(model, out, dtype=dtype, opset=opset, exporter=exporter, timeout=timeout)
        else:
            from fastdenoise.models.heads import load_head

            path = export_cascade(
                model, load_head(head, head_weights), out, dtype=dtype, opset=opset, exporter=exporter, timeout=timeout
            )
    except (CheckpointError, ValueError, ImportError) as err:  # ExportError is a ValueError
        raise fail(str(err)) from err
    typer.echo(f"onnx: {path} (sha256 {file_sha256(path)[:12]})")


def build_engine_cmd(
    onnx_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="ONNX_FILE",
            help=("ONNX from `export-onnx`; omitted: export --weights at --precision first."),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    weights: BlindWeightsOpt = None,  # only without ONNX_FILE
    precision: PrecisionChoice = OnnxPrecision.auto,  # only without ONNX_FILE; a given ONNX file carries its precision
    tile: Annotated[
        int,
        typer.Option(
            help=("Profile for `run --tile T --batch B`: up to B x 3 x (T+3) x (T+3), tuned for B x 3 x T x T."), min=1
        ),
    ] = 1024,
    batch: Annotated[int, typer.Option(help="Largest batch of the profile (see --tile).", min=1)] = 4,
    min_shape: Annotated[
        str | None,
        typer.Option("--min", help=("Explicit profile: NxCxHxW; --min, --opt, --max together replace --tile/--batch.")),
    ] = None,
    opt_shape: Annotated[str | None, typer.Option("--opt", help="Shape TensorRT tunes for, NxCxHxW.")] = None,
    max_shape: Annotated[str | None, typer.Option("--max", help="Largest accepted shape, NxCxHxW.")] = None,
    workspace: Annotated[
        int | None, typer.Option(help=("Builder workspace limit in MiB (default: TensorRT's, the whole GPU)."), min=1)
    ] = None,
    optimization_level: Annotated[
        int, typer.Option(help=("Builder optimization level 0 (fast build) .. 5 (slowest build)."), min=0, max=5)
    ] = 3,
    hardware_compatibility: Annotated[
        HardwareCompatibility, typer.Option(help=("none: this GPU model only."))
    ] = HardwareCompatibility.none,
    version_compatible: Annotated[bool, typer.Option(help="Loadable by later TensorRT 10.x runtimes too.")] = False,
    timing_cache: Annotated[
        Path | None,
        typer.Option(
            help=("Timing cache file (default: one per GPU and TensorRT version in the cache)."), dir_okay=False
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help=("Engine cache (default: $FASTDENOISE_CACHE/engines or ~/.cache/fastdenoise/engines)."),
            file_okay=False,
        ),
    ] = None,
    device: DeviceOpt = "cuda",
    rebuild: Annotated[bool, typer.Option(help="Build again even if the cache holds this engine.")] = False,
    list_engines_: Annotated[
        bool,
        typer.Option(
            "--list", help=("List the cached engines (GPU, TensorRT, precision, profile, checksum state) and exit.")
        ),
    ] = False,
) -> None:
    """Build a TensorRT engine for this GPU (cached with a JSON sidecar); use it with `run --backend tensorrt
    --engine`."""
    with starting():
        import torch

        from fastdenoise.engines.build import BuildConfig, EngineError, build_engine, current_target
    precision, hardware_compatibility = precision.value, hardware_compatibility.value  # the library's str

    if list_engines_:
        return print_engines(cache_dir)
    try:
        profile = engine_profile(tile, batch, min_shape, opt_shape, max_shape)
        cfg = BuildConfig(
            profile=profile,
            workspace_mib=workspace,
            optimization_level=optimization_level,
            hardware_compatibility=hardware_compatibility,
            version_compatible=version_compatible,
            timing_cache=str(timing_cache) if timing_cache else None,
        )
        cuda = torch.device(device)
        current_target(cuda)  # TensorRT and a GPU are there, before minutes of ONNX export
        if onnx_file is None:
            onnx_file = exported_onnx(weights, precision, cuda)
        path = build_engine(onnx_file, cfg, cache_dir=cache_dir, device=cuda, rebuild=rebuild)
    except (EngineError, ValueError, ImportError) as err:  # CheckpointError is a ValueError too
        raise fail(str(err)) from err
    typer.echo(f"engine: {path} (profile {profile.text})")
    typer.echo(f"use: fastdenoise run IN OUT --backend tensorrt --engine {path}  (images/tiles must fit the profile)")


def print_engines(cache_dir: Path | None) -> None:
    """--list: one line per cached engine."""
    from fastdenoise.engines.build import list_engines

    infos = list_engines(cache_dir)
    for info in infos:
        typer.echo(info.describe())
    if not infos:
        typer.echo("no engines cached")


def engine_profile(tile: int, batch: int, min_shape: str | None, opt_shape: str | None, max_shape: str | None):
    """The engine's shape profile: --min/--opt/--max together, else the one of `run --tile --batch`."""
    from fastdenoise.engines.build import Profile

    shapes = (min_shape, opt_shape, max_shape)
    if any(shapes) and not all(shapes):
        raise ValueError("--min, --opt and --max go together")
    if all(shapes):
        return Profile.parse(f"{min_shape}:{opt_shape}:{max_shape}")
    return Profile.for_tiles(tile, batch)


def exported_onnx(weights: Path | None, precision: str, cuda) -> Path:
    """The denoiser's ONNX at the precision resolved on this GPU (exported once, then from the cache)."""
    from fastdenoise.backends import Precision, resolve_precision
    from fastdenoise.engines.export import cached_denoiser_onnx, default_cache_dir
    from fastdenoise.models.checkpoint import load_denoiser

    dtype = resolve_precision(Precision(precision), cuda)
    return cached_denoiser_onnx(load_denoiser(weights), dtype, default_cache_dir() / "onnx")
