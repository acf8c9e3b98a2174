"""(Re)record accuracy baselines in fastdenoise/baselines.json (package data): measure each check's PSNR now and write
it, with the weights' SHA-256 and a stamp (date, machine, commit). By default every entry of the bundled model; peers
with --keys.

    nice -n 15 python bench/record_baselines.py                                # all bundled-model entries (~5 min CPU)
    nice -n 15 python bench/record_baselines.py --keys kodak24-first4-sigma25  # the CI subset only (~30 s)
    nice -n 15 python bench/record_baselines.py --weights runs/blind/model.safetensors --dry-run

Review the diff before committing: a recorded baseline is what CI holds the bundled model to.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastdenoise.accuracy import (
    DEFAULT_BASELINES,
    Scorer,
    load_baselines,
    record_baselines,
    weights_digest,
)
from fastdenoise.checkpoint import load_denoiser
from fastdenoise.datasets import require_data_root
from fastdenoise.machine import machine_facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", default=None, help="comma-separated entries (default: every bundled-model entry)")
    parser.add_argument("--weights", type=Path, default=None, help="weights to measure (default: the bundled ones)")
    parser.add_argument(
        "--data", type=Path, default=None, help="shared data folder (default: $FASTDENOISE_DATA or ../shared/data)"
    )
    parser.add_argument("--baselines", type=Path, default=DEFAULT_BASELINES)
    parser.add_argument("--dry-run", action="store_true", help="print the numbers, write nothing")
    args = parser.parse_args()
    checks = load_baselines(args.baselines)
    keys = args.keys.split(",") if args.keys else [k for k, c in checks.items() if c.method == "bundled"]
    unknown = [k for k in keys if k not in checks]
    if unknown:
        parser.error(f"no such entries in {args.baselines}: {', '.join(unknown)}")
    scorer = Scorer(args.data or require_data_root(), load_denoiser(args.weights), torch.device("cpu"), log=print)
    measured = {}
    for key in keys:
        c = checks[key]
        measured[key] = scorer.score(c.method, c.data, c.limit, c.sigma, c.seed)["psnr"]
        old = f"{c.psnr:.3f}" if c.psnr is not None else "none"
        print(f"{key}: {measured[key]:.3f} dB (was {old})", flush=True)
    if not args.dry_run:
        record_baselines(args.baselines, measured, weights_digest(args.weights), machine_facts())
        print(f"wrote {args.baselines}")


if __name__ == "__main__":
    main()
