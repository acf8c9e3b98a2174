"""SIGINT and SIGTERM in the command line: while a command starts (imports, models, engines, the backend probe) either
ends it at once with one line and exit 130 / 143; afterwards they raise, so commands stop as they planned to.

Start-up holds nothing a stop could lose, and an exception raised there can be swallowed or turned into a traceback
by the libraries loading (a Ctrl-C during torch's or OpenVINO's start-up was once ignored, once a traceback), so the
start-up handler exits from the handler itself. Standard library only (and the exit statuses, `choices`): the command
(`fastdenoise.__main__`) installs it before typer loads; importing the library changes no handler."""

from __future__ import annotations

import os
import signal

from fastdenoise.choices import ExitStatus

WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
_phase: str | None = "starting"  # while set, a signal ends the process at once, naming the phase


class Terminated(KeyboardInterrupt):
    """SIGTERM once a command has started: unwinds as Ctrl-C does, and the command exits 143."""


def on_signal(signum: int, _frame: object) -> None:
    if _phase is not None:
        os.write(2, f"error: {WORDS[signum]} while {_phase}\n".encode())
        os._exit(ExitStatus.after_signal(signum))
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def install() -> None:
    """Take over SIGINT and SIGTERM (a SIGINT ignored by the parent, as a shell does for `cmd &`, stays ignored)."""
    for signum in WORDS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, on_signal)


def enter(phase: str | None) -> None:
    """Name the phase in which a signal ends the command at once, or None: from now on signals raise."""
    global _phase
    _phase = phase
