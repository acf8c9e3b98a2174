"""What the commands share: one-line errors (also for typer's usage errors), the options several commands take.

Imports nothing heavy: `fastdenoise --help` loads this module, typer and the choices (`fastdenoise.choices`) only; the
library loads inside each command."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from fastdenoise import interrupts
from fastdenoise.choices import BackendKind, ExitStatus, Precision

try:  # typer >= 0.2x ships its own copy of click; older ones use click itself
    from typer._click.exceptions import BadParameter, ClickException, MissingParameter, NoArgsIsHelpError
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import Abort, BadParameter, ClickException, MissingParameter, NoArgsIsHelpError


def fail(message: str, code: ExitStatus = ExitStatus.USAGE) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@contextmanager
def starting(until_run: bool = False) -> Iterator[None]:
    """Wrap a command's library imports: a signal while they load (seconds on a cold start) is one line and exit 130 /
    143 (`interrupts`). After the block signals raise, so the command stops as it planned to; with `until_run`, the
    command says when (`run` keeps start-up's handling through building and probing its backend)."""
    yield
    if not until_run:
        interrupts.enter(None)


QUOTE = "'"


def usage_error_line(err: ClickException) -> str:
    """Typer's usage errors (missing argument, bad value, unknown option) as one line: `--backend: 'x' is not one of
    eager, compiled, ...`."""
    param = getattr(err, "param", None)
    if not isinstance(err, BadParameter) or param is None:
        return " ".join(err.format_message().split())
    longest = max(getattr(param, "opts", None) or [""], key=len)
    is_option = longest.startswith("-")
    name = longest if is_option else (getattr(param, "name", None) or longest).upper()
    if isinstance(err, MissingParameter):
        return f"missing {'option' if is_option else 'argument'} {name}"
    choices = re.fullmatch(r"(?:Value error, )?(.*) is not one of (.*)\.", err.message, flags=re.DOTALL)
    message = f"{choices[1]} is not one of {choices[2].replace(QUOTE, '')}" if choices else bound(err.message)
    return " ".join(f"{name}: {message}".split())


BOUNDS = {"greater than or equal to": ">=", "less than or equal to": "<=", "greater than": ">", "less than": "<"}


def bound(message: str) -> str:
    """Typer's range errors in short: `Input should be greater than or equal to 1` -> `must be >= 1`."""
    found = re.fullmatch(r"Input should be (.*?) (-?[\d.]+)", message.strip())
    return f"must be {BOUNDS[found[1]]} {found[2]}" if found and found[1] in BOUNDS else message


class OneLineErrors(TyperGroup):
    """The command group: every usage error ends as `error: ...` on one line with exit 2, not typer's boxes."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as err:  # `fastdenoise` or `fastdenoise tables` alone: the help and exit 2, as before
            typer.echo(err.ctx.get_help() if err.ctx is not None else err.format_message(), err=True)
            code = err.exit_code
        except ClickException as err:
            typer.secho(f"error: {usage_error_line(err)}", err=True, fg=typer.colors.RED)
            code = err.exit_code
        except interrupts.Terminated:
            typer.secho("error: terminated", err=True, fg=typer.colors.RED)
            code = ExitStatus.TERMINATED
        except (Abort, KeyboardInterrupt):
            typer.secho("error: interrupted", err=True, fg=typer.colors.RED)
            code = ExitStatus.INTERRUPTED
        sys.exit(code if isinstance(code, int) else ExitStatus.OK)


def show_version(value: bool) -> None:
    if value:
        from fastdenoise import __version__

        typer.echo(f"fastdenoise {__version__}")
        raise typer.Exit(ExitStatus.OK)


VersionOpt = Annotated[
    bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=show_version)
]


PEER_PACKAGES = {"cbm3d": "bm3d"}  # peers that need an optional package (the `peers` extra)


def note(message: str) -> None:
    typer.secho(f"note: {message}", err=True, fg=typer.colors.YELLOW)


def missing_peer_package(peer: str) -> str | None:
    """Why `peer` cannot run here (its optional package is not installed), or None: checked before any work starts."""
    package = PEER_PACKAGES.get(peer)
    if package is None:
        return None
    try:
        importlib.import_module(package)
    except ImportError:
        return f"{peer} skipped: the {package} package is not installed (pip install {package}, or fastdenoise[peers])"
    return None


def skipped_peer(peer: str) -> bool:
    """Whether `peer` is left out because its package is missing (said in a note, before any work)."""
    why = missing_peer_package(peer)
    if why:
        note(why)
    return bool(why)


WeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        "-w",
        help=("Weights (.safetensors or checkpoint); default: the bundled model for --sigma, else blind."),
    ),
]
BlindWeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", help=("Weights (.safetensors or checkpoint); default: the bundled blind model.")),
]  # for commands without --sigma
ModelNameOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help=(
            "Bundled weights by name: blind, sigma15, sigma25, ..., joint-classify ... (default: per-sigma model "
            "within 7.5 of --sigma where bundled, else blind)."
        ),
    ),
]
EnsembleOpt = Annotated[
    bool, typer.Option(help="Average the 8 flips/rotations of each image: a little more PSNR for 8x the compute.")
]
BackendOpt = Annotated[
    BackendKind,
    typer.Option(
        help=(
            "auto (default): the fastest here of eager, onnxruntime, openvino (compiled where openvino is missing), by "
            "a short probe per shape class, cached per machine and weights; the summary says which ran and why."
        )
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
PrecisionOpt = Annotated[Precision, typer.Option(help="auto: bf16 where fast and accurate; int8: openvino only.")]


def parse_sigmas(text: str) -> list[float]:
    """'15,50' -> [15.0, 50.0]; a one-line --sigma error otherwise."""
    from fastdenoise.noise import check_sigma

    try:
        return [check_sigma(float(s)) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise fail(f"--sigma: {err}") from err


def backend_options(
    weights: Path | None,
    backend: str,
    device: str,
    precision: str,
    engine: Path | None = None,
    model: str | None = None,
    sigma: float | None = None,
    ensemble: bool = False,
    trust_engine: bool = False,
    build: bool = True,
) -> tuple:
    """Choose and load the weights (--weights, --model, or the per-sigma model nearest --sigma) and build the backend
    (with build=False: its config, for workers to build; --ensemble is then theirs to add), as the library does it
    (`backends.load_network`, `build_backend`); every expected failure one line."""
    from fastdenoise.backends import build_backend, load_network
    from fastdenoise.models.zoo import choose_weights

    with library_errors(backend):
        network = load_network(choose_weights(model, weights, sigma), sigma)
        cfg = backend_config(backend, device, precision, engine, trust_engine)
        return (network, build_backend(network, cfg, ensemble)) if build else (network, cfg)


def backend_config(backend: str, device: str, precision: str, engine: Path | None = None, trust_engine: bool = False):
    """The options of the backend as its config (`backends.BackendConfig`); a bad combination is one line."""
    from fastdenoise.backends import BackendConfig

    with library_errors(backend):
        return BackendConfig(
            kind=backend,
            device=device,
            precision=precision,
            engine=str(engine) if engine else None,
            trust_engine=trust_engine,
        )


@contextmanager
def library_errors(backend: str) -> Iterator[None]:
    """Loading weights and building a backend: each expected failure one line and exit 2 (a CheckpointError is a
    ValueError; an ImportError names the backend missing here; an OSError is the model cache's)."""
    try:
        yield
    except ValueError as err:
        raise fail(str(err)) from err
    except ImportError as err:
        raise fail(f"backend {backend!r} is not available here: {err}") from err
    except OSError as err:  # the model cache: a folder that is a file, a read-only disk, ...
        raise fail(f"{err.filename}: {err.strerror}" if err.filename else str(err)) from err
