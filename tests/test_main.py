"""`python -m fastdenoise` from the folder that holds a clone named fastdenoise/ (no __init__.py at its top)."""

import os
import subprocess
import sys

from fastdenoise import __version__


def test_python_m_beside_a_clone_named_fastdenoise_is_one_line_or_works(tmp_path):
    clone = tmp_path / "fastdenoise"
    (clone / "fastdenoise").mkdir(parents=True)  # a checkout's layout: the package one level down
    (clone / "pyproject.toml").write_text("[project]\nname = 'fastdenoise'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [sys.executable, "-c", "import fastdenoise; print(fastdenoise.__spec__.origin)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    done = subprocess.run(
        [sys.executable, "-m", "fastdenoise", "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.stdout.strip() == "None":  # an editable install: the folder shadows the package
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == (
            f"error: {clone}: this folder hides the installed fastdenoise package (python -m imports the working "
            "directory's fastdenoise/ first); run the `fastdenoise` command, or python -m from another folder\n"
        )
    else:  # a wheel install: the installed package comes first, and the command works
        assert done.returncode == 0 and done.stdout == f"fastdenoise {__version__}\n", done.stderr
