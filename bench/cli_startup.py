"""Wall time of `python -m fastdenoise --help` (the CLI's start) beside a bare `python -c pass`, in the same run.

    python bench/cli_startup.py [--repeats 10] [--ref ../main]

--ref times another checkout too (before/after a change). Runs are interleaved so that load on the machine hits every
variant alike; the table gives wall and CPU (user + system) seconds, and the CLI's own share (minus the bare
interpreter's median).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one run; CPU time is what other load on the core cannot inflate."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tick = time.perf_counter()
    subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    seconds = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ref", type=Path, help="another checkout to time the same way (e.g. the one before a change)")
    args = parser.parse_args()
    variants = {"python -c pass": ([sys.executable, "-c", "pass"], HERE)}
    variants["fastdenoise --help (this checkout)"] = ([sys.executable, "-m", "fastdenoise", "--help"], HERE)
    if args.ref:
        variants[f"fastdenoise --help ({args.ref})"] = ([sys.executable, "-m", "fastdenoise", "--help"], args.ref)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for name, (command, cwd) in variants.items():  # warm the file cache and the bytecode
        timed(command, cwd)
    for _ in range(args.repeats):
        for name, (command, cwd) in variants.items():
            times[name].append(timed(command, cwd))
    bare_wall = statistics.median(w for w, _ in times["python -c pass"])
    bare_cpu = statistics.median(c for _, c in times["python -c pass"])
    print(f"{'command':<45} {'wall median':>11} {'wall min':>8} {'CPU median':>10} {'CLI wall':>8} {'CLI CPU':>7}")
    for name, runs in times.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        low = min(w for w, _ in runs)
        print(f"{name:<45} {wall:11.3f} {low:8.3f} {cpu:10.3f} {wall - bare_wall:8.3f} {cpu - bare_cpu:7.3f}")
    print("seconds; CLI = the command minus the bare interpreter (median)")


if __name__ == "__main__":
    main()
