"""Copy a trained run's weights into the package with a card (data, steps, command, Kodak24 PSNR from `eval`); a
joint run (its joint.json) adds the objective, head, lambda, target, starting weights and final losses.

Usage: python bench/bundle_weights.py RUN_DIR EVAL_JSON --name blind --command "fastdenoise train ..." [--note "..."]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastdenoise.models.checkpoint import load_denoiser, save_weights

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "fastdenoise" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("eval_json", type=Path, help="`fastdenoise eval` JSON, or a `tables table1` JSON with --arm")
    parser.add_argument("--arm", help="the row of a table1 JSON holding this model")
    parser.add_argument("--name", default="blind")
    parser.add_argument("--weights", default="model.safetensors", help="file inside RUN to ship")
    parser.add_argument("--command", action="append", required=True, help="the training command(s), in order")
    parser.add_argument("--eval-command", required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--half", action="store_true", help="ship the weights in half precision (check PSNR first)")
    args = parser.parse_args()
    config = json.loads((args.run / "config.json").read_text())
    log = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    evaluation = kodak_means(json.loads(args.eval_json.read_text()), args.arm)
    card = {
        "name": args.name,
        "architecture": "Liu et al. IJCAI 2018 released denoiser (fastdenoise.models.denoiser.Denoiser)",
        "train_data": config["data"],
        "val_data": config["val"],
        "sigma_range": config["sigma"],
        "patch": config["patch"],
        "batch": config["batch"],
        "steps": log[-1]["step"],
        "lr": config["lr"],
        "seed": config["seed"],
        "commands": args.command,
        "val_psnr_curve": [
            {"step": r["step"], "psnr": round(r["val_psnr"], 3)}
            | ({"jpeg_psnr": round(r["val_jpeg_psnr"], 3)} if "val_jpeg_psnr" in r else {})
            for r in log
            if "val_psnr" in r
        ],
        "kodak24": {
            "command": args.eval_command,
            "seed": evaluation["seed"],
            "psnr": {k: round(v["psnr"], 3) for k, v in evaluation["mean"].items()},
            "ssim": {k: round(v["ssim"], 4) for k, v in evaluation["mean"].items() if "ssim" in v},
        },
        "note": args.note,
        "precision": "fp16" if args.half else "fp32",
    }
    if config.get("jpeg"):
        card |= {"jpeg_quality": config["jpeg"], "jpeg_share": config["jpeg_share"]}
    card |= joint_fields(args.run, log)
    model = load_denoiser(args.run / args.weights)
    save_weights(model, PACKAGE_WEIGHTS / f"{args.name}.safetensors", card, half=args.half)
    (PACKAGE_WEIGHTS / f"{args.name}.json").write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps(card["kodak24"], indent=1))


def kodak_means(payload: dict, arm: str | None) -> dict:
    """{"seed", "mean": {sigma: {"psnr", "ssim"?}}} from an `eval` JSON, or from one arm of a `tables table1` JSON."""
    if payload.get("table") != "table1":
        return payload["results"][0]
    cells = [c for c in payload["cells"] if c["arm"] == arm]
    if not cells:
        raise SystemExit(f"no arm {arm!r} in the table (arms: {', '.join(payload['arms'])})")
    mean = {str(c["sigma"]): {k: c[k] for k in ("psnr", "ssim") if k in c} for c in cells}
    config = payload["meta"]["config"]
    seeds = config["seeds"] if "seeds" in config else [config["seed"]]  # tables take several noise seeds now
    return {"seed": seeds[0] if len(seeds) == 1 else seeds, "mean": mean}


def joint_fields(run: Path, log: list[dict]) -> dict:
    """What a joint run adds to the card (nothing for an MSE run): objective, head, lambda, target, init, final
    losses."""
    path = run / "joint.json"
    last = next((r for r in reversed(log) if "loss" in r), {})
    if not path.is_file():
        return {"objective": "MSE", "final_loss": {"mse": last.get("mse")}}
    joint = json.loads(path.read_text())
    if "tasks" in joint:  # one or several heads, raw or balanced weights (training.joint.JointConfig.objective)
        weights = {"balance": joint["balance"]} if joint["balance"] else {"lam": joint["lam"] or None}
        facts = {"objective": joint["objective"], "tasks": joint["tasks"], "heads": joint["heads"], **weights}
    else:  # a run from before multi-head training
        lam = joint["lam"] if joint["lam"] is not None else {"classify": 0.25, "segment": 0.5}[joint["task"]]
        task_loss = (
            "CE to the label"
            if joint["target"] == "labels"
            else f"label-free ({joint['target']} of the head on the clean crop)"
        )
        facts = {
            "objective": f"MSE + {lam} * {task_loss} of the frozen {joint['head']} on D(x)",
            "task": joint["task"],
            "head": joint["head"],
            "lam": lam,
        }
    tasks = [k for k in last if k.startswith("task")]
    return {
        **facts,
        "target": joint["target"],
        "init": joint["init"],
        "labels": joint.get("labels"),
        "masks": joint.get("masks"),
        "ignore_index": joint.get("ignore_index"),
        "final_loss": {"mse": last.get("mse"), **{k: last.get(k) for k in tasks}},
    }


if __name__ == "__main__":
    main()
