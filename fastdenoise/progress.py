"""Progress bars: one rich recipe (rich imported only when a bar is made), columns chosen per use; plain lines now
and then where the output is no terminal (a log, a pipe); and the training bar's numbers (ProgressStats)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PLAIN_EVERY = 30.0  # seconds between two plain progress lines


def progress_bar(
    label: str,
    field: str = "last",
    remaining: bool = True,
    transient: bool = True,
    markup: bool = True,
    enabled: bool = True,
) -> Any:
    """A rich Progress: the label in bold, the bar, done of total, each task's `field`, elapsed and (remaining) time;
    `transient` bars vanish when done, `markup=False` shows the field's brackets as they are. Where the output is no
    terminal rich draws nothing: there a PlainProgress prints a line every PLAIN_EVERY seconds instead."""
    import rich
    from rich import progress as rp

    console = rich.get_console()
    if enabled and not (console.is_terminal or console.is_jupyter):
        return PlainProgress(label, field, remaining, PLAIN_EVERY, final=not transient)
    columns = [
        rp.TextColumn(f"[bold]{label}"),
        rp.BarColumn(),
        rp.MofNCompleteColumn(),
        rp.TextColumn(f"{{task.fields[{field}]}}", markup=markup),
        rp.TimeElapsedColumn(),
    ]
    if remaining:
        columns.append(rp.TimeRemainingColumn())
    return rp.Progress(*columns, transient=transient, disable=not enabled)


@dataclass
class PlainTask:
    """One task of a PlainProgress: how far it is and since when."""

    total: float | None
    completed: float
    fields: dict[str, Any]
    start: float
    first: float  # completed when added (a resumed run): the rate counts only what this process did


@dataclass
class PlainProgress:
    """The few calls of rich's Progress that the commands make (add_task, update, a `with`), printed as a plain line
    to stderr at most every `every` seconds: `denoise: 120/500 (24%), 0:01:02 elapsed, 0:03:15 left; photo.jpg`; with
    `final`, once more at the end."""

    label: str
    column: str = "last"  # the task field shown at the end of the line
    remaining: bool = True
    every: float = PLAIN_EVERY
    final: bool = False  # a last line per task on leaving the `with` when done, as rich leaves a lasting bar
    clock: Callable[[], float] = time.monotonic
    tasks: list[PlainTask] = field(default_factory=list)
    printed: float = 0.0  # when the last line was printed (or the first task added)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        for task in self.tasks if self.final and kind is None else []:  # a stop or an error says so itself
            print(self.line(task, self.clock()), file=sys.stderr, flush=True)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        self.printed = self.clock()
        self.tasks.append(PlainTask(total, completed, fields, self.printed, completed))
        return len(self.tasks) - 1

    def update(
        self,
        task_id: int,
        completed: float | None = None,
        total: float | None = None,
        advance: float | None = None,
        **fields: Any,
    ) -> None:
        task = self.tasks[task_id]
        task.total = task.total if total is None else total
        task.completed = (task.completed if completed is None else completed) + (advance or 0)
        task.fields |= fields
        now = self.clock()
        if now - self.printed >= self.every:
            self.printed = now
            print(self.line(task, now), file=sys.stderr, flush=True)

    def line(self, task: PlainTask, now: float) -> str:
        """`label: done/total (share), elapsed, left; field`: each part where known."""
        done, total, elapsed = int(task.completed), task.total, now - task.start
        text = f"{self.label}: {done}" + (f"/{int(total)} ({done / total:.0%})" if total else "")
        text += f", {clock_time(elapsed)} elapsed"
        rate = (task.completed - task.first) / elapsed if elapsed > 0 else 0.0
        if self.remaining and total and rate > 0:
            text += f", {clock_time((total - task.completed) / rate)} left"
        shown = str(task.fields.get(self.column, ""))
        return text + (f"; {shown}" if shown else "")


def clock_time(seconds: float) -> str:
    """h:mm:ss."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


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
            parts.append(f"ETA {clock_time(eta)}")
        return "  ".join(parts)
