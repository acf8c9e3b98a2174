"""Wall time of `python -m fastdenoise --help` (the CLI's start) beside a bare `python -c pass`, in the same run.

    python bench/cli_startup.py [--repeats 10] [--ref ../main]

--ref times another checkout too (before/after a change). Runs are interleaved so that load on the machine hits every
variant alike; the table gives median and min seconds, and the CLI's own share (median minus the bare interpreter's).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def wall(command: list[str], cwd: Path) -> float:
    tick = time.perf_counter()
    subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ref", type=Path, help="another checkout to time the same way (e.g. the one before a change)")
    args = parser.parse_args()
    variants = {"python -c pass": ([sys.executable, "-c", "pass"], HERE)}
    variants["fastdenoise --help (this checkout)"] = ([sys.executable, "-m", "fastdenoise", "--help"], HERE)
    if args.ref:
        variants[f"fastdenoise --help ({args.ref})"] = ([sys.executable, "-m", "fastdenoise", "--help"], args.ref)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, (command, cwd) in variants.items():  # warm the file cache and the bytecode
        wall(command, cwd)
    for _ in range(args.repeats):
        for name, (command, cwd) in variants.items():
            times[name].append(wall(command, cwd))
    bare = statistics.median(times["python -c pass"])
    print(f"{'command':<50} {'median s':>9} {'min s':>7} {'CLI s':>7}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<50} {median:9.3f} {min(seconds):7.3f} {median - bare:7.3f}")


if __name__ == "__main__":
    main()
