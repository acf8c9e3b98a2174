"""Progress bars: one rich recipe (rich imported only when a bar is made), columns chosen per use; and the training
bar's numbers (ProgressStats)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def progress_bar(label: str, field: str = "last", remaining: bool = True, transient: bool = True, markup: bool = True,
                 enabled: bool = True) -> Any:  # fmt: skip
    """A rich Progress: the label in bold, the bar, done of total, each task's `field`, elapsed and (remaining) time;
    `transient` bars vanish when done, `markup=False` shows the field's brackets as they are."""
    from rich import progress as rp

    columns = [rp.TextColumn(f"[bold]{label}"), rp.BarColumn(), rp.MofNCompleteColumn(),
               rp.TextColumn(f"{{task.fields[{field}]}}", markup=markup), rp.TimeElapsedColumn()]  # fmt: skip
    if remaining:
        columns.append(rp.TimeRemainingColumn())
    return rp.Progress(*columns, transient=transient, disable=not enabled)


@dataclass
class ProgressStats:
    """The training bar's numbers, each shown once known; the ETA from a moving average of the step rate, so one slow
    window (validation, a checkpoint, other load) moves it a little instead of making it jump."""

    total: int
    step: int = 0
    loss: float | None = None
    psnr: float | None = None
    rate: float | None = None  # steps/s, exponential moving average over the logged windows
    mpx: float | None = None
    smoothing: float = 0.2  # weight of the newest window

    def timed(self, steps_per_s: float, mpx_per_s: float) -> None:
        keep = 1.0 - self.smoothing
        self.rate = steps_per_s if self.rate is None else keep * self.rate + self.smoothing * steps_per_s
        self.mpx = mpx_per_s if self.mpx is None else keep * self.mpx + self.smoothing * mpx_per_s

    def eta(self) -> float | None:
        return (self.total - self.step) / self.rate if self.rate else None

    def text(self) -> str:
        parts = [] if self.loss is None else [f"loss {self.loss:.2e}"]
        if self.psnr is not None:
            parts.append(f"val {self.psnr:.2f} dB")
        if self.rate is not None and self.mpx is not None:
            parts.append(f"{self.rate:.2f} it/s  {self.mpx:.3f} Mpx/s")
        eta = self.eta()
        if eta is not None:
            minutes, seconds = divmod(round(eta), 60)
            parts.append(f"ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}")
        return "  ".join(parts)
