"""How strongly the task loss pulls on the denoiser next to MSE: the norms of the gradients of MSE and of the task
cross-entropy with respect to the denoiser's parameters, and with respect to its output (the unit of `train
--balance R`: lam = R / output ratio), on a few joint-training batches.

With Adam only the ratio lam * |grad CE| / |grad MSE| matters (the step is invariant to the loss's overall scale), so
this says which lambda leaves the reconstruction term any say.

Usage: python bench/grad_balance.py classify DATA --labels runs/imagenet-train.csv
       python bench/grad_balance.py segment DATA --masks DATA/../trainannot --ignore-index 11 --head espnetv2-camvid
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.models.heads import load_head
from fastdenoise.models.heads.espnetv2 import find_segmenter_weights
from fastdenoise.training.fit import TrainConfig
from fastdenoise.training.joint import JointConfig, Task, cross_entropy, default_crop, freeze, joint_sampler


def grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=[t.value for t in Task])
    parser.add_argument("data", type=Path)
    parser.add_argument("--head", default=None)
    parser.add_argument("--labels", default=None)
    parser.add_argument("--masks", default=None)
    parser.add_argument("--ignore-index", type=int, default=255)
    parser.add_argument("--weights", type=Path, default=None, help="denoiser (default: the bundled blind model)")
    parser.add_argument("--sigma", default="15-60")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    task = Task(args.task)
    head_name = args.head or ("efficientnet-lite0" if task is Task.CLASSIFY else "espnetv2-camvid")
    low, high = (float(v) for v in args.sigma.split("-"))
    train = TrainConfig(
        data=str(args.data), out="unused", sigma=(low, high), patch=default_crop(task), batch=args.batch, seed=args.seed
    )
    head_weights = find_segmenter_weights(head_name, args.data) if task is Task.SEGMENT else None
    cfg = JointConfig(
        train,
        tasks=(task.value,),
        heads=(head_name,),
        head_weights=(str(head_weights) if head_weights else None,),
        labels=args.labels,
        masks=args.masks,
        ignore_index=args.ignore_index,
    )
    head = freeze(load_head(head_name, head_weights))
    model = load_denoiser(args.weights).train()
    params = list(model.parameters())
    sampler = joint_sampler(cfg, head)
    ignore = args.ignore_index if task is Task.SEGMENT else -100
    rows = []
    for _ in range(args.batches):
        batch = next(sampler)
        out = model(batch.noisy)
        mse = F.mse_loss(out, batch.clean)
        ce = cross_entropy(head(out).float(), batch.target, ignore)
        out_ratio = grad_norm(ce, [out]) / grad_norm(mse, [out])
        g_mse, g_ce = grad_norm(mse, params), grad_norm(ce, params)
        rows.append(
            {
                "mse": mse.item(),
                "ce": ce.item(),
                "grad_mse": g_mse,
                "grad_ce": g_ce,
                "ratio": g_ce / g_mse,
                "output_ratio": out_ratio,
            }
        )
        print(json.dumps({k: round(v, 6) for k, v in rows[-1].items()}))
    mean = sum(r["ratio"] for r in rows) / len(rows)
    print(
        f"mean |grad CE| / |grad MSE| = {mean:.0f}: lambda {1 / mean:.1e} gives the two terms equal pull at the start"
    )
    out_mean = sum(r["output_ratio"] for r in rows) / len(rows)
    print(
        f"w.r.t. the output: {out_mean:.0f}; "
        f"lambda L is --balance {out_mean:.0f} * L (--balance 1: lambda {1 / out_mean:.1e})"
    )


if __name__ == "__main__":
    main()
