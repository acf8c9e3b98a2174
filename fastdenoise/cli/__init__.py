"""The `fastdenoise` command line: one module per command group, each parsing options and making one library call.

Only typer loads here; each command imports the library (and torch) when it runs, so `fastdenoise --help` is quick."""

from __future__ import annotations

import typer

from fastdenoise import interrupts
from fastdenoise.cli import bench, cache, demo, engines, evaluate, run, tables, train
from fastdenoise.cli.common import OneLineErrors, VersionOpt, backend_options, fail, parse_sigmas

__all__ = ["app", "backend_options", "fail", "main", "parse_sigmas"]

HELP = "Fast task-aware image denoising (Liu et al., IJCAI 2018)."
app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(version: VersionOpt = False) -> None:
    """Fast task-aware image denoising (Liu et al., IJCAI 2018)."""


app.command()(train.train)
app.command()(run.run)
app.command("eval")(evaluate.evaluate_cmd)
app.add_typer(tables.tables_app, name="tables")
app.command("export-onnx")(engines.export_onnx_cmd)
app.command("build-engine")(engines.build_engine_cmd)
app.command()(bench.bench)
app.command()(demo.demo)
app.command("cache")(cache.cache_cmd)


def main() -> None:
    interrupts.install()  # again for callers that reach the CLI without `fastdenoise.__main__` (idempotent)
    app()
