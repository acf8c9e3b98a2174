"""`fastdenoise run` throughput on one folder by executor, in the same process: the local runner vs Ray Data on a local
Ray instance (`--executor ray`), each timed from the call to its return; for Ray once cold (actors start, workers
import torch) and once warm (the same instance again). Needs `pip install 'fastdenoise[ray]'`.
Usage: taskset -c 1 python bench/bench_executors.py ../shared/data/kodak24 [--ray-cpus 2]"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.machine import machine_facts, machine_name
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.pipeline.cluster import denoise_on_cluster
from fastdenoise.pipeline.runner import RunConfig, denoise_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs the local Ray instance announces")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import ray

    model = load_denoiser()
    backend_cfg, cfg = BackendConfig(device="cpu", precision=args.precision), RunConfig(batch=args.batch)
    root = Path(__file__).resolve().parents[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        summary = denoise_folder(args.data, Path(tmp) / "local", make_backend(model, backend_cfg), cfg)
        rows.append({"executor": "local", "seconds": summary.seconds, "mp_per_s": summary.mp_per_s, "ok": summary.ok})
        print(rows[-1], flush=True)
        tick = time.perf_counter()
        path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])  # workers import this checkout
        ray.init(num_cpus=args.ray_cpus, logging_level="WARNING", runtime_env={"env_vars": {"PYTHONPATH": path}})
        started = time.perf_counter() - tick
        for run in ("ray cold", "ray warm"):
            summary = denoise_on_cluster(args.data, Path(tmp) / run.replace(" ", "-"), model, backend_cfg, cfg)
            rows.append({"executor": run, "seconds": summary.seconds, "mp_per_s": summary.mp_per_s, "ok": summary.ok})
            print(rows[-1], flush=True)
        ray.shutdown()
    local = rows[0]["mp_per_s"]
    facts = machine_facts()
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": facts,
        "affinity": sorted(os.sched_getaffinity(0)),
        "data": str(args.data),
        "ray_cpus": args.ray_cpus,
        "ray_init_seconds": started,
        "rows": rows,
        "ratio_vs_local": {r["executor"]: r["mp_per_s"] / local for r in rows},
    }
    out = args.out or Path(__file__).resolve().parent / "results" / machine_name(facts) / "executors.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for r in rows:
        print(f"{r['executor']:9s} {r['mp_per_s']:.3f} MP/s  {r['seconds']:.1f} s  x{r['mp_per_s'] / local:.2f}")
    print(f"ray.init {started:.1f} s (not in the rows); wrote {out}")


if __name__ == "__main__":
    main()
