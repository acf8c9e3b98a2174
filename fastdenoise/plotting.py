"""Shared matplotlib set-up for the plots of the benchmark report and the paper tables (imported only when a plot
is drawn)."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (files, no display), or a one-line ImportError naming the extra."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install matplotlib (or fastdenoise[plot])") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_log_ticks(axis) -> None:
    """Ticks at 1, 2, 5 x 10^k labelled as plain numbers (0.02, 0.05, 0.1) instead of 2 x 10^-2."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
