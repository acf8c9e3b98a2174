"""`fastdenoise` and `python -m fastdenoise`: SIGINT/SIGTERM handling first (`interrupts`), then typer and the CLI."""

from fastdenoise import interrupts


def main() -> None:
    interrupts.install()
    from fastdenoise.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
