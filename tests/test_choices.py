"""The vocabulary (fastdenoise.choices): torch-free, one Enum per choice, and the exit statuses of the command."""

import subprocess
import sys

from conftest import ROOT

from fastdenoise.choices import ExitStatus


def test_the_choices_import_no_torch():
    code = (
        "import sys, fastdenoise.choices, fastdenoise.models.catalog\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'typer')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_exit_statuses_keep_their_numbers():
    """Scripts test these numbers (`run`'s help lists them): a status may be added, never renumbered."""
    assert {s.name: int(s) for s in ExitStatus} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "OUTPUT": 3,
        "CLUSTER": 4,
        "INTERRUPTED": 130,
        "TERMINATED": 143,
    }
    assert ExitStatus.after_signal(2) is ExitStatus.INTERRUPTED and ExitStatus.after_signal(15) is ExitStatus.TERMINATED
    assert ExitStatus.after_signal(1) == 129  # SIGHUP: no status of its own, the shell's number all the same
