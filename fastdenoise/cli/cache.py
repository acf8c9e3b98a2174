"""`fastdenoise cache`: list the model cache (each entry's size and last use), trim it to a size, or clear it."""

from typing import Annotated

import typer

from fastdenoise.cli.common import fail


def cache_cmd(
    clear: Annotated[bool, typer.Option("--clear", help="Remove every entry.")] = False,
    trim: Annotated[
        str | None,
        typer.Option(
            "--trim",
            metavar="SIZE",
            help=("Remove the least recently used entries until the cache holds at most SIZE (2G, 500M)."),
        ),
    ] = None,
) -> None:
    """List the model cache under $FASTDENOISE_CACHE (default ~/.cache/fastdenoise): ONNX exports, OpenVINO IR and
    compiled blobs, TensorRT engines, the auto probe. One line per entry (size, time since last use, name), least
    recently used first, then the total. Runs remove the least recently used entries past the budget,
    $FASTDENOISE_CACHE_MAX (default 2G). bench/ results and the cbm3d/ output cache are left alone."""
    from fastdenoise import cache
    from fastdenoise.engines.export import default_cache_dir

    root = default_cache_dir()
    if root.exists() and not root.is_dir():
        raise fail(f"{root}: the cache folder is a file; remove it or set FASTDENOISE_CACHE")
    if clear and trim is not None:
        raise fail("--clear and --trim: choose one")
    try:
        budget = cache.parse_size(trim) if trim is not None else cache.cache_budget()
    except ValueError as err:
        raise fail(f"--trim: {err}" if trim is not None else str(err)) from err
    if clear:
        count, size = cache.clear(root)
        typer.echo(f"cache: removed {count} entries ({cache.size_text(size)}) from {root}")
        return
    if trim is not None:
        gone = cache.trim(root, budget)
        typer.echo(f"cache: removed {len(gone)} entries ({cache.size_text(sum(e.size for e in gone))})")
    found = cache.entries(root)
    if trim is None:
        for entry in found:
            typer.echo(f"{cache.size_text(entry.size):>9}  {cache.age_text(entry.used):>6}  {entry.name}")
    total = cache.size_text(sum(e.size for e in found))
    typer.echo(f"cache: {root}: {len(found)} entries, {total} (budget {cache.size_text(budget)})")
