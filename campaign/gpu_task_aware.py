"""Task-aware fine-tunes on a lent GPU, in lockstep: every arm (the MSE-only control and the task-aware arms) takes
the same batch at every step, so wherever the time budget stops the run, all arms have seen the same pixels and the
control is exact. Label-free (each head's softmax on the clean crop), BatchNorm frozen, constant LR after warm-up.

Each arm's weights are written to --out every --save-every steps and at the end (`<arm>.safetensors`, with a card:
step, pixels seen, objective), with `log.jsonl` (per-arm losses and realized gradient ratios) and `summary.json`, so
a run cut short still brings back matched arms.

Arms are `name=task:ratio,task:ratio` (balanced ratios, `docs/task-aware.md`), or `name=mse` for the control.

--photo-scale trains where users are (issue 26): noise on crops of the photos at their own resolution, rounded to
8 bits as a stored photo is, and the classifier's loss on the denoised crop resized as `run --task classify` resizes
the whole photo (its short side to --resize, bicubic antialiased, then the centre --crop): crops are as large as
that needs (a CamVid frame's 720 px short side to 256: 632 px crops for a 224 px head input). The segmenter sees the
crop at its own scale, as `run --task segment` sees the whole frame.

    python campaign/gpu_task_aware.py --data runs/mix --out /tmp/gta --device cpu --seconds 20 --patch 64 --batch 2 \
        --arm control=mse --arm both-r1=classify:1,segment:1         # dry run on the CPU
    python campaign/gpu_task_aware.py --data .gpu/mix --classifier-weights .gpu/lite0.pth \
        --segmenter-weights .gpu/espnetv2_s_2.0_city_1024x512.pth --out "$OUT" --seconds 330 \
        --arm control=mse --arm both-r1=classify:1,segment:1 --arm both-c3=classify:3,segment:1
    python campaign/gpu_task_aware.py --data runs/mix --out /tmp/gtp --device cpu --seconds 20 --batch 2 \
        --photo-scale --resize 32 --crop 24 --sigma 0-60 --arm control=mse --arm both=classify:3,segment:1   # dry run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_stretch import Prefetch

from fastdenoise.devices import resolve_amp, resolve_device
from fastdenoise.images import list_images, load_rgb
from fastdenoise.models.checkpoint import load_denoiser, save_weights
from fastdenoise.models.heads import load_head
from fastdenoise.pipeline.predictions import classifier_input
from fastdenoise.training.config import TrainConfig
from fastdenoise.training.joint import GradientBalance, JointConfig, JointLoss, TaskTarget, freeze, joint_sampler
from fastdenoise.training.losses import mse_loss
from fastdenoise.training.samplers import Batch
from fastdenoise.training.state import TrainState, build_state, optimizer_step, train_mode

HEADS = {"classify": "efficientnet-lite0", "segment": "espnetv2-camvid"}


@dataclass
class Arm:
    name: str
    ratios: dict[str, float]  # task -> balanced gradient ratio; {} = MSE only
    state: TrainState
    loss: object

    def objective(self) -> str:
        if not self.ratios:
            return "MSE"
        return "MSE + " + " + ".join(
            f"w * KL to softmax {HEADS[t]}(clean) (w balanced to {r:g})" for t, r in self.ratios.items()
        )


class AtPhotoScale(nn.Module):
    """A frozen classifier that sees each crop as `run --task classify` sees the whole photo: short side resized to
    `short_side` (set per batch: the crop's side times the photo's resize factor), centre `crop`."""

    def __init__(self, head: nn.Module, crop: int) -> None:
        super().__init__()
        self.head, self.crop, self.short_side = head, crop, crop
        self.task, self.num_classes = head.task, head.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(classifier_input(x, self.short_side, self.crop))


class PhotoScaleSampler:
    """Batches of crops of whole photos at their own resolution: photos grouped by short side, one group a batch (its
    share of photos), crop side P = crop * short / resize rounded up to 4 (so that the head's input is covered), left-
    right flips, Gaussian noise of a sigma uniform in the range per crop, then clipped and rounded to 8 bits (a stored
    noisy photo). `target` holds the crops' short side after the classifier's resize (round(P * resize / short))."""

    def __init__(
        self, images: list[np.ndarray], resize: int, crop: int, batch: int, sigma: tuple[float, float], seed: int
    ) -> None:
        groups: dict[int, list[np.ndarray]] = defaultdict(list)
        for image in images:
            groups[min(image.shape[:2])].append(image)
        self.groups, self.resize, self.crop, self.batch, self.sigma = dict(groups), resize, crop, batch, sigma
        self.shares = np.array([len(g) for g in self.groups.values()], dtype=np.float64) / len(images)
        self.rng = np.random.default_rng(seed)

    def side(self, short: int) -> int:
        return min(4 * math.ceil(self.crop * short / self.resize / 4), short - short % 4)

    def __iter__(self) -> PhotoScaleSampler:
        return self

    def __next__(self) -> Batch:
        short = list(self.groups)[self.rng.choice(len(self.groups), p=self.shares)]
        photos, p = self.groups[short], self.side(short)
        clean = np.empty((self.batch, p, p, 3), dtype=np.float32)
        for k in range(self.batch):
            image = photos[self.rng.integers(len(photos))]
            top, left = self.rng.integers(image.shape[0] - p + 1), self.rng.integers(image.shape[1] - p + 1)
            window = image[top : top + p, left : left + p]
            clean[k] = (window[:, ::-1] if self.rng.random() < 0.5 else window) / 255.0
        sigma = self.rng.uniform(*self.sigma, size=self.batch).astype(np.float32)
        noisy = (
            np.clip(
                np.rint((clean + self.rng.standard_normal(clean.shape) * sigma[:, None, None, None] / 255) * 255),
                0,
                255,
            )
            / 255
        )
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(0, 3, 1, 2)
        short_side = torch.full((self.batch,), round(p * self.resize / short))
        return Batch(as_tensor(noisy), as_tensor(clean), short_side, torch.from_numpy(sigma))


def parse_arm(text: str) -> tuple[str, dict[str, float]]:
    """'both-r1=classify:1,segment:1' -> ('both-r1', {'classify': 1.0, 'segment': 1.0}); 'control=mse' -> {}."""
    name, _, spec = text.partition("=")
    if not name or not spec:
        raise ValueError(f"--arm {text!r}: expected name=mse or name=task:ratio[,task:ratio]")
    if spec == "mse":
        return name, {}
    ratios = {}
    for part in spec.split(","):
        task, _, ratio = part.partition(":")
        if task not in HEADS or not ratio:
            raise ValueError(f"--arm {text!r}: {part!r} is not task:ratio with task in {sorted(HEADS)}")
        ratios[task] = float(ratio)
    return name, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="clean photos, none of them evaluated")
    parser.add_argument("--init", type=Path, default=Path("fastdenoise/weights/blind.safetensors"))
    parser.add_argument(
        "--init-dir", type=Path, default=None, help="each arm from <dir>/<arm>.safetensors (a 2nd stretch)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arm", action="append", required=True)
    parser.add_argument("--classifier-weights", type=Path, default=None)
    parser.add_argument("--segmenter-weights", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=330.0, help="training time budget")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--patch", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--sigma", default="15-60")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--photo-scale", action="store_true", help="crops at the photos' own scale (see above)")
    parser.add_argument("--resize", type=int, default=256, help="--photo-scale: the classifier's short side")
    parser.add_argument("--crop", type=int, default=224, help="--photo-scale: the classifier's centre crop")
    args = parser.parse_args()
    arms_spec = [parse_arm(a) for a in args.arm]
    lo, hi = (float(v) for v in args.sigma.split("-"))
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(
        data=str(args.data),
        out=str(args.out),
        sigma=(lo, hi),
        patch=args.patch,
        batch=args.batch,
        steps=10**9,
        lr=args.lr,
        schedule="constant",
        seed=args.seed,
        device=args.device,
        amp="auto",
        compile="off",
        freeze_bn=True,
    )
    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)
    torch.backends.cudnn.benchmark = True
    weights = {"classify": args.classifier_weights, "segment": args.segmenter_weights}
    used = sorted({t for _, ratios in arms_spec for t in ratios})
    heads = {t: freeze(load_head(HEADS[t], weights[t])).to(device) for t in used}
    if args.photo_scale:
        if "classify" in heads:
            heads["classify"] = freeze(AtPhotoScale(heads["classify"], args.crop))
        photos = [load_rgb(p) for p in list_images(args.data)]
        sampler = PhotoScaleSampler(photos, args.resize, args.crop, args.batch, (lo, hi), args.seed)
    else:  # the label-free sampler of a segment task: photos as they are, flipped left-right or not
        sampler = joint_sampler(JointConfig(train=cfg, tasks=("segment",), target="softmax"), nn.Identity())
    arms = []
    for name, ratios in arms_spec:
        init = args.init_dir / f"{name}.safetensors" if args.init_dir else args.init
        state = build_state(load_denoiser(init), cfg, device, amp, 1)
        train_mode(state.model, cfg.freeze_bn)
        loss = (
            mse_loss
            if not ratios
            else JointLoss(
                [heads[t] for t in ratios], GradientBalance(list(ratios.values()), True, 0.99), TaskTarget.SOFTMAX
            )
        )
        arms.append(Arm(name, ratios, state, loss))
    batches = Prefetch(sampler, depth=8)
    log = (args.out / "log.jsonl").open("a")
    start, step, pixels = time.perf_counter(), 0, 0

    def save(final: bool) -> None:
        for arm in arms:
            arm.state.model.eval()
            card = {
                "step": step,
                "gpx_seen": pixels / 1e9,
                "objective": arm.objective(),
                "arm": arm.name,
                "init": str(args.init),
                "config": asdict(cfg),
                "final": final,
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "torch": torch.__version__,
            }
            save_weights(arm.state.model, args.out / f"{arm.name}.safetensors", card)  # atomic
            train_mode(arm.state.model, cfg.freeze_bn)

    while time.perf_counter() - start < args.seconds:
        batch = next(batches).to(device)
        if args.photo_scale and "classify" in heads:
            heads["classify"].short_side = int(batch.target[0])  # this batch's resize, as run resizes the photo
        batch.noisy = batch.noisy.contiguous(memory_format=torch.channels_last)
        rows = {}
        for arm in arms:
            state = arm.state
            loss, logs = optimizer_step(state.model, arm.loss, batch, state.optimizer, state.scaler, amp)
            state.scheduler.step()
            rows[arm.name] = logs
        step += 1
        pixels += batch.noisy.shape[0] * batch.noisy.shape[-2] * batch.noisy.shape[-1]
        if step % args.log_every == 0:
            elapsed = time.perf_counter() - start
            row = {
                "step": step,
                "seconds": round(elapsed, 1),
                "steps_per_s": step / elapsed,
                "gpx_seen": pixels / 1e9,
                "lr": arms[0].state.scheduler.get_last_lr()[0],
                **{k: v for k, v in rows.items()},
            }
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(
                json.dumps({"step": step, "s": round(elapsed), **{k: round(v["mse"], 6) for k, v in rows.items()}}),
                flush=True,
            )
        if step % args.save_every == 0:
            save(final=False)
    save(final=True)
    seconds = time.perf_counter() - start
    summary = {
        "steps": step,
        "gpx_seen": pixels / 1e9,
        "seconds": seconds,
        "steps_per_s": step / seconds,
        "arms": {a.name: a.objective() for a in arms},
        "patch": args.patch if not args.photo_scale else f"photo scale, resize {args.resize}, crop {args.crop}",
        "batch": args.batch,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
