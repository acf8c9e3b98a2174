"""`fastdenoise` and `python -m fastdenoise`: SIGINT/SIGTERM handling first (`interrupts`), then typer and the CLI."""

import sys

import fastdenoise
from fastdenoise import interrupts
from fastdenoise.choices import ExitStatus


def main() -> None:
    refuse_a_shadowing_folder()
    interrupts.install()
    from fastdenoise.cli import main as cli

    cli()


def refuse_a_shadowing_folder() -> None:
    """`python -m fastdenoise` puts the working directory first on the import path: there a folder named fastdenoise
    without an __init__.py (a clone of this repository) is imported as a namespace package in place of the installed
    one, which then lacks its version and bundled weights. One line and exit 2 instead of a traceback."""
    spec = fastdenoise.__spec__
    if spec is not None and spec.origin is None:  # a namespace package: no __init__.py behind it
        folder = next(iter(fastdenoise.__path__), "fastdenoise")
        print(
            f"error: {folder}: this folder hides the installed fastdenoise package (python -m imports the working "
            "directory's fastdenoise/ first); run the `fastdenoise` command, or python -m from another folder",
            file=sys.stderr,
        )
        sys.exit(ExitStatus.USAGE)


if __name__ == "__main__":
    main()
