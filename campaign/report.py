"""Where a campaign stands: card.json beside its checkpoint (settings, pixels seen, wall time, throughput, the
validation curve, the commands of every stretch) and a plot of validation PSNR against pixels seen.

Usage: python campaign/report.py campaign/blind --plot docs/results/campaign-blind.png --export runs/campaign-blind-ema.safetensors
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from fastdenoise.devices import cpu_has_bf16
from fastdenoise.models.checkpoint import load_checkpoint, load_denoiser, save_weights

RESUME = "OMP_NUM_THREADS=1 nohup taskset -c 0 fastdenoise train --out {run} --resume > {run}/stdout.log 2>&1 &"


def stretches(rows: list[dict]) -> list[dict]:
    """Split the log where the step count restarts from a checkpoint: one entry per session's stretch."""
    found, last = [], None
    for row in rows:
        if "steps_per_s" not in row:
            continue
        if last is None or row["step"] <= last:
            found.append({"first_step": row["step"], "rates": []})
        found[-1]["rates"].append(row["mpx_per_s"])
        found[-1]["last_step"] = last = row["step"]
    return [
        {"steps": (s["first_step"], s["last_step"]), "median_mpx_per_s": sorted(s["rates"])[len(s["rates"]) // 2]}
        for s in found
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--note", default="", help="free text for the card (e.g. what this session did)")
    parser.add_argument("--export", type=Path, default=None, help="write the weight average here as .safetensors")
    args = parser.parse_args()
    config = json.loads((args.run / "config.json").read_text())
    rows = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    state = load_checkpoint(args.run / "last.pt")
    previous = json.loads((args.run / "card.json").read_text()) if (args.run / "card.json").is_file() else {}
    curve = [
        {"step": r["step"], "gpx_seen": r["gpx_seen"], "val_psnr": round(r["val_psnr"], 4)}
        | ({"val_jpeg_psnr": round(r["val_jpeg_psnr"], 4)} if "val_jpeg_psnr" in r else {})
        for r in rows
        if "val_psnr" in r
    ]
    # Each log row covers log_every steps (validation time excluded).
    seconds = sum(config["log_every"] / r["steps_per_s"] for r in rows if r.get("steps_per_s", 0) > 0)
    card = {
        "name": args.run.name,
        "what": "a training campaign resumed across work sessions; its weight average (EMA) is the model",
        "step": state["step"],
        "gpx_seen": state["pixels"] / 1e9,
        "train_hours": round(seconds / 3600, 2),
        "settings": {
            k: config.get(k)
            for k in (
                "data",
                "val",
                "sigma",
                "patch",
                "batch",
                "lr",
                "schedule",
                "ema",
                "loss",
                "seed",
                "amp",
                "jpeg",
                "jpeg_share",
            )
        },
        "stretches": stretches(rows),
        "val_curve": curve,
        "val_protocol": f"mean PSNR of the weight average on the first {config['val_images']} images of "
        "{config['val']} "
        f"at sigma {config['val_sigma'] or sum(config['sigma']) / 2:g}, fp32, noise seed 0",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "bf16_native": cpu_has_bf16(),
            "torch": torch.__version__,
        },
        "resume": RESUME.format(run=args.run),
        "note": args.note or previous.get("note", ""),  # a later report keeps the note unless given a new one
    }
    (args.run / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    if args.export:
        save_weights(
            load_denoiser(args.run / "last.pt"),
            args.export,
            {"campaign": str(args.run), "step": state["step"], "gpx_seen": card["gpx_seen"]},
        )
    print(json.dumps({k: card[k] for k in ("step", "gpx_seen", "train_hours")}), curve[-1] if curve else None)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        ax.plot([c["gpx_seen"] for c in curve], [c["val_psnr"] for c in curve], marker="o", label="white noise")
        stored = [c for c in curve if "val_jpeg_psnr" in c]
        if stored:  # a --jpeg run: the same noisy images stored as JPEG, on the same axes
            ax.plot(
                [c["gpx_seen"] for c in stored],
                [c["val_jpeg_psnr"] for c in stored],
                marker="s",
                label="noise, then stored as JPEG",
            )
            ax.legend(fontsize=7)
        ax.set_xlabel("training pixels seen in this campaign (Gpx)")
        ax.set_ylabel("validation PSNR (dB)")
        ax.set_title(
            f"campaign {args.run.name}: validation PSNR of the weight average\n{card['val_protocol']}", fontsize=7
        )
        ax.grid(alpha=0.3)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
