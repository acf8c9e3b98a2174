"""(Re)record accuracy baselines in fastdenoise/baselines.json (package data): measure each check's PSNR now and write
it, with the SHA-256 of the weights it ran and a stamp (date, machine, commit). By default every entry of a bundled
model: those of the default (blind, or --weights) and those naming a bundled model (`"model": "sigma25"`, run from
fastdenoise/weights/ or --weights-folder; an entry whose model is not there is left out, and says so; named in
--keys, it is refused). Peers with --keys.

    nice -n 15 python bench/record_baselines.py                                 # every bundled-model entry (minutes)
    nice -n 15 python bench/record_baselines.py --keys kodak24-first4-sigma25   # the CI subset only (~30 s)
    nice -n 15 python bench/record_baselines.py --keys sigma25-kodak24-sigma25  # one per-sigma model's entry
    nice -n 15 python bench/record_baselines.py --weights runs/blind/model.safetensors --dry-run

--weights replaces the default model only: entries naming a model always run that model's file. Nothing is written
when a requested entry cannot be measured. Review the diff before committing: a recorded baseline is what CI holds
the bundled models to.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastdenoise.datasets import require_data_root
from fastdenoise.evaluation.accuracy import (
    DEFAULT_BASELINES,
    Scorer,
    load_baselines,
    record_baselines,
    run_accuracy,
    weights_digest,
)
from fastdenoise.machine import machine_facts
from fastdenoise.models.checkpoint import bundled_weights, load_denoiser
from fastdenoise.models.zoo import weights_in


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", default=None, help="comma-separated entries (default: every bundled-model entry)")
    parser.add_argument(
        "--weights", type=Path, default=None, help="weights of the entries that name no model (default: blind)"
    )
    parser.add_argument(
        "--weights-folder", type=Path, default=None, help="where named models are read (default: fastdenoise/weights)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="shared data folder (default: $FASTDENOISE_DATA or ../shared/data)"
    )
    parser.add_argument("--baselines", type=Path, default=DEFAULT_BASELINES)
    parser.add_argument("--dry-run", action="store_true", help="print the numbers, write nothing")
    args = parser.parse_args(argv)
    checks = load_baselines(args.baselines)
    folder = args.weights_folder or bundled_weights().parent
    keys = args.keys.split(",") if args.keys else [k for k, c in checks.items() if c.method == "bundled"]
    unknown = [k for k in keys if k not in checks]
    if unknown:
        parser.error(f"no such entries in {args.baselines}: {', '.join(unknown)}")
    present = weights_in(folder)
    absent = [f"{k} (model {checks[k].model!r})" for k in keys if checks[k].model not in (None, *present)]
    if absent and args.keys:
        parser.error(f"not bundled in {folder}: {', '.join(absent)}")
    for line in absent:
        print(f"left out, not bundled in {folder}: {line}")
    keys = [k for k in keys if checks[k].model in (None, *present)]
    scorer = Scorer(
        args.data or require_data_root(),
        load_denoiser(args.weights),
        torch.device("cpu"),
        log=print,
        weights_folder=folder,
    )
    outcomes = run_accuracy(scorer, [checks[k] for k in keys], weights_digest(args.weights))
    for outcome in outcomes:
        if outcome.psnr is None:
            print(f"{outcome.key}: not measured: {outcome.message.removeprefix(outcome.key + ': ')}")
        else:
            old = f"{outcome.baseline:.3f}" if outcome.baseline is not None else "none"
            print(f"{outcome.key}: {outcome.psnr:.3f} dB (was {old})", flush=True)
    if any(o.psnr is None for o in outcomes):
        print(f"wrote nothing to {args.baselines}")
        return 1
    if not args.dry_run:
        psnrs = {o.key: o.psnr for o in outcomes}
        record_baselines(args.baselines, psnrs, {o.key: o.weights_sha256 for o in outcomes}, machine_facts())
        print(f"wrote {args.baselines}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
