"""Joint (task-aware) training of Liu et al.: L = MSE(D(x), clean) + sum_k w_k * task_loss_k(H_k(D(x)), target_k), every
H_k frozen; one head is the paper's setting, several train one denoiser for every task.

The loss is handed to the same `train.fit` as separate training. Each weight w_k is raw (lam, the paper's unit, which
depends on the head and the pixel scale) or balanced: set every step so that the task's gradient with respect to D's
output is `balance` times the MSE's (see docs/task-aware.md). Targets are ground truth (class folders, a `file,index`
CSV, or mask folders) or label-free: the frozen head's own prediction on the clean crop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.choices import Task, TaskTarget
from fastdenoise.devices import resolve_device
from fastdenoise.distributed import shard_from_env
from fastdenoise.files import atomic_write
from fastdenoise.images import list_images, load_rgb
from fastdenoise.models.checkpoint import load_denoiser, save_weights
from fastdenoise.models.denoiser import Denoiser, DenoiserSpec
from fastdenoise.models.heads import DEFAULT_HEADS, TORCHVISION, head_names, load_head
from fastdenoise.models.heads.geometry import resize_short_side
from fastdenoise.training.config import check_run_folder
from fastdenoise.training.fit import TrainConfig, fit, psnr_validator
from fastdenoise.training.samplers import Batch
from fastdenoise.training.task_data import CropSampler, check_masks, load_classification, load_segmentation


def default_lam(task: Task) -> float:
    """The paper's weights: 0.25 for classification, 0.5 for segmentation."""
    return 0.25 if task is Task.CLASSIFY else 0.5


def default_crop(task: Task) -> int:
    """Crop side for a task's head: 224 (ImageNet eval size) or 256."""
    return 224 if task is Task.CLASSIFY else 256


def parse_tasks(text: str) -> tuple[str, ...]:
    """'classify,segment' -> ('classify', 'segment'); ValueError naming the allowed tasks."""
    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    allowed = [t.value for t in Task]
    bad = [t for t in tasks if t not in allowed]
    if bad or not tasks:
        raise ValueError(f"task must be one of {', '.join(allowed)} (or several, comma-separated); got {text!r}")
    return tasks


def per_head(values: tuple, count: int, name: str) -> tuple:
    """One value per head: () stays (), one value is repeated, else there must be exactly `count`."""
    if len(values) in (0, count):
        return values
    if len(values) == 1:
        return values * count
    raise ValueError(f"{name}: give one value, or one per head ({count}); got {len(values)}")


@dataclass(frozen=True)
class JointConfig:
    """The options of `fastdenoise train --task ...` beyond TrainConfig (whose `patch` is the crop side). Per-head
    fields hold one entry per head (one entry: the same for every head; (): the defaults)."""

    train: TrainConfig
    tasks: tuple[str, ...] = ("classify",)
    heads: tuple[str, ...] = ()  # (): DEFAULT_HEADS[task] per task
    head_weights: tuple[str | None, ...] = ()  # (): each head's own (load_head)
    lam: tuple[float, ...] = ()  # raw weights; (): default_lam(task) per task, unless balance is given
    balance: tuple[float, ...] = ()  # target ratios |grad task_k| / |grad MSE| w.r.t. D's output (replaces lam)
    balance_decay: float = 0.99  # EMA decay of the gradient norms behind the balanced weights
    target: str = "labels"  # labels | argmax | softmax
    labels: str | None = None  # classify + labels: CSV `file,index` (paths relative to train.data); None: class folders
    masks: str | None = None  # segment + labels: folder of masks named like the images (any extension)
    ignore_index: int = 255  # segment: mask value without a class (CamVid: 11)
    resize: int | None = None  # short side to resize images to before cropping; None: classify 8/7 crop, segment as is
    init: str | None = None  # denoiser weights to start from (.safetensors or .pt); None: random init

    def __post_init__(self) -> None:
        tasks, targets = [t.value for t in Task], [t.value for t in TaskTarget]
        if not self.tasks or any(t not in tasks for t in self.tasks):
            raise ValueError(f"task must be one of {', '.join(tasks)} (one per head); got {self.tasks!r}")
        count = len(self.head_list)
        if self.heads and len(self.heads) != len(self.tasks) and len(self.tasks) != 1:
            raise ValueError(
                f"{len(self.heads)} heads for {len(self.tasks)} tasks: give one task per head, or one task for all"
            )
        for name, values in (("head_weights", self.head_weights), ("lam", self.lam), ("balance", self.balance)):
            per_head(values, count, name)
        if self.target not in targets:
            raise ValueError(f"target must be one of {', '.join(targets)}; got {self.target!r}")
        for head in self.head_list:
            if not head.startswith(TORCHVISION) and head not in head_names():
                raise ValueError(f"head must be one of {', '.join(head_names())}; got {head!r}")
        if any(not v >= 0 for v in self.lam):
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if any(not v > 0 for v in self.balance):
            raise ValueError(f"balance must be > 0 (a ratio of gradient norms), got {self.balance}")
        if self.lam and self.balance:
            raise ValueError("give lam (raw weights) or balance (gradient ratios), not both")
        if not 0 <= self.balance_decay < 1:
            raise ValueError(f"balance_decay must be in [0, 1), got {self.balance_decay}")
        if not 0 <= self.ignore_index <= 255:
            raise ValueError(f"ignore_index must be in 0..255 (a mask value), got {self.ignore_index}")
        if self.resize is not None and self.resize < self.train.patch:
            raise ValueError(f"resize ({self.resize}) must be >= the crop side, patch ({self.train.patch})")
        labelled = self.target == TaskTarget.LABELS.value
        if labelled and count > 1:
            raise ValueError("several heads train label-free only: use --target argmax or softmax")
        task = self.task_list[0]
        if self.labels is not None and not (labelled and task == Task.CLASSIFY.value):
            raise ValueError("labels (a CSV file) is for --task classify --target labels only")
        if task == Task.SEGMENT.value and labelled and self.masks is None:
            raise ValueError("segmentation with --target labels needs masks (a folder); or use --target argmax|softmax")
        if self.masks is not None and not (labelled and task == Task.SEGMENT.value):
            raise ValueError("masks is for --task segment --target labels only")

    @property
    def task_list(self) -> tuple[str, ...]:
        """The task of every head (one task given for several heads applies to all)."""
        return self.tasks * len(self.heads) if len(self.tasks) == 1 and len(self.heads) > 1 else self.tasks

    @property
    def head_list(self) -> tuple[str, ...]:
        return self.heads or tuple(DEFAULT_HEADS[Task(t)] for t in self.tasks)

    @property
    def task_weights(self) -> tuple[float, ...]:
        """Per head: the raw lam, or the target ratio when balanced."""
        if self.balance:
            return per_head(self.balance, len(self.head_list), "balance")
        return per_head(self.lam, len(self.head_list), "lam") or tuple(default_lam(Task(t)) for t in self.task_list)

    @property
    def short_side(self) -> int | None:
        if self.resize is not None or Task.SEGMENT.value in self.task_list:
            return self.resize
        return round(self.train.patch * 8 / 7)  # 224 -> 256

    def objective(self) -> str:
        """The loss in words, e.g. 'MSE + w * KL to softmax H(clean) of espnetv2-camvid, w balanced to ratio 0.1'."""
        target = {"labels": "CE to the label", "argmax": "CE to argmax H(clean)", "softmax": "KL to softmax H(clean)"}[
            self.target
        ]
        terms = []
        for head, weight in zip(self.head_list, self.task_weights):
            weighting = f"w balanced to gradient ratio {weight:g}" if self.balance else f"w = {weight:g}"
            terms.append(f"w * {target} of the frozen {head} ({weighting})")
        return "MSE + " + " + ".join(terms)


# ---- the objective -------------------------------------------------------------------------------------------------


def freeze(head: nn.Module) -> nn.Module:
    """Eval mode (BN statistics fixed) and no parameter gradients; `fit` never sees it, so no optimizer does."""
    head.eval()
    head.requires_grad_(False)
    return head


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean CE over targets != ignore_index; 0 (not NaN) when a crop holds only ignored pixels."""
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / (target != ignore_index).sum().clamp(min=1)


def soft_cross_entropy(logits: Tensor, reference: Tensor) -> Tensor:
    """KL(softmax(reference) || softmax(logits)) summed over classes (dim 1), mean over samples and pixels."""
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(reference, 1), reduction="none", log_target=True)
    return kl.sum(1).mean()


def task_loss(head: nn.Module, out: Tensor, batch: Batch, target: TaskTarget, ignore_index: int) -> Tensor:
    """One frozen head's loss on D's output: CE to the labels or masks, or label-free to its prediction on clean."""
    logits = head(out).float()  # (N, C) or (N, C, H, W); gradients reach D through the frozen head
    if target is TaskTarget.LABELS:
        if batch.target is None:
            raise ValueError("target mode 'labels' but the batch has no target; use a labelled sampler")
        return cross_entropy(
            logits, batch.target, ignore_index if head.task == Task.SEGMENT.value else -100
        )  # 255 is an ImageNet class
    with torch.no_grad():
        reference = head(batch.clean).float()
    return (
        cross_entropy(logits, reference.argmax(1))
        if target is TaskTarget.ARGMAX
        else soft_cross_entropy(logits, reference)
    )


class GradientBalance:
    """The task weights of a composed loss. Raw: w_k = lam_k, fixed. Balanced: w_k = r_k * m / t_k, with m and t_k
    bias-corrected EMAs of |dMSE/dD(x)| and |dtask_k/dD(x)| (L2 norms over the batch), so that the task pulls on D's
    output r_k times as hard as MSE whatever the head's logit scale. The first step calibrates (the EMAs are the
    first norms themselves); the state is a few floats (state_dict) so a resumed run can keep it."""

    def __init__(self, weights: Sequence[float], balanced: bool, decay: float = 0.99) -> None:
        self.targets, self.balanced, self.decay = [float(w) for w in weights], balanced, decay
        self.steps, self.mse_norm, self.task_norms = 0, 0.0, [0.0] * len(self.targets)

    def weights(self) -> list[float]:
        """The current weights (balanced before any step: the target ratios themselves, for a loss value only)."""
        if not self.balanced or self.steps == 0:
            return list(self.targets)
        correction = 1 - self.decay**self.steps
        mse = self.mse_norm / correction
        return [r * mse / max(t / correction, 1e-12) for r, t in zip(self.targets, self.task_norms)]

    def update(self, mse_norm: float, task_norms: Sequence[float]) -> list[float]:
        """Fold one step's gradient norms into the EMAs; the weights for this step."""
        if self.balanced:
            d = self.decay
            self.mse_norm = d * self.mse_norm + (1 - d) * mse_norm
            self.task_norms = [d * old + (1 - d) * new for old, new in zip(self.task_norms, task_norms)]
            self.steps += 1
        return self.weights()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "mse_norm": self.mse_norm, "task_norms": list(self.task_norms)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["task_norms"]) != len(self.targets):
            raise ValueError(f"balance state for {len(state['task_norms'])} heads, this loss has {len(self.targets)}")
        self.steps, self.mse_norm, self.task_norms = (
            int(state["steps"]),
            float(state["mse_norm"]),
            [float(t) for t in state["task_norms"]],
        )


class JointLoss:
    """loss_fn(model, batch) for `fit`: MSE(D(noisy), clean) + sum_k w_k * task_k, every head frozen, weights from a
    GradientBalance. Gradients w.r.t. D's output are taken per term (each head's backward runs once); the returned
    loss has the value of the sum and, w.r.t. D's parameters, the gradient J^T (g_mse + sum_k w_k g_k)."""

    def __init__(
        self,
        heads: Sequence[nn.Module],
        balance: GradientBalance,
        target: TaskTarget = TaskTarget.LABELS,
        ignore_index: int = 255,
    ) -> None:
        if len(heads) != len(balance.targets):
            raise ValueError(f"{len(heads)} heads but {len(balance.targets)} weights")
        for head in heads:
            if head.training or any(p.requires_grad for p in head.parameters()):
                raise ValueError("the head must be frozen (training.joint.freeze) so that only the denoiser learns")
        self.heads, self.balance, self.target, self.ignore_index = list(heads), balance, target, ignore_index

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        out = model(batch.noisy)
        mse = F.mse_loss(out.float(), batch.clean)
        tasks = [task_loss(h, out, batch, self.target, self.ignore_index) for h in self.heads]
        if not (torch.is_grad_enabled() and out.requires_grad):  # evaluation: nothing to balance
            weights = self.balance.weights()
            total = mse + sum(w * t for w, t in zip(weights, tasks))
            return total, self.logs(mse, tasks, weights)
        g_mse, *g_tasks = (torch.autograd.grad(term, out, retain_graph=True)[0].float() for term in (mse, *tasks))
        mse_norm, task_norms = float(g_mse.norm()), [float(g.norm()) for g in g_tasks]
        weights = self.balance.update(mse_norm, task_norms)
        direction = g_mse + sum(w * g for w, g in zip(weights, g_tasks))
        surrogate = (out.float() * direction).sum()
        total = (mse + sum(w * t for w, t in zip(weights, tasks))).detach()
        ratios = [w * n / max(mse_norm, 1e-12) for w, n in zip(weights, task_norms)]
        return surrogate - surrogate.detach() + total, self.logs(mse, tasks, weights, ratios)

    def logs(
        self, mse: Tensor, tasks: Sequence[Tensor], weights: Sequence[float], ratios: Sequence[float] = ()
    ) -> dict[str, float]:
        """mse, and per head its task loss, weight and realized gradient ratio (suffix _k when there are several)."""
        logs = {"mse": mse.item()}
        suffix = [""] if len(tasks) == 1 else [f"_{k}" for k in range(len(tasks))]
        for k, (s, t, w) in enumerate(zip(suffix, tasks, weights)):
            logs |= {f"task{s}": t.item(), f"weight{s}": w}
            if ratios:
                logs[f"ratio{s}"] = ratios[k]
        return logs

    def state_dict(self) -> dict:
        return self.balance.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.balance.load_state_dict(state)


def joint_loss(
    heads: nn.Module | Sequence[nn.Module],
    lam: float | Sequence[float] = 0.25,
    target: TaskTarget = TaskTarget.LABELS,
    ignore_index: int = 255,
    balance: float | Sequence[float] | None = None,
    decay: float = 0.99,
) -> JointLoss:
    """The composed loss for `fit`: raw weights `lam` per head, or balanced to the gradient ratios `balance`."""
    heads = [heads] if isinstance(heads, nn.Module) else list(heads)
    weights = lam if balance is None else balance
    weights = [float(weights)] * len(heads) if isinstance(weights, (int, float)) else list(weights)
    return JointLoss(heads, GradientBalance(weights, balance is not None, decay), target, ignore_index)


# ---- batches and training -----------------------------------------------------------------------------------------


def joint_sampler(cfg: JointConfig, head: nn.Module) -> CropSampler:
    """The CropSampler for cfg: labelled (one head) or label-free, classification or segmentation, from
    cfg.train.data."""
    t, data = cfg.train, Path(cfg.train.data)
    labels, masks = None, None
    if cfg.target != TaskTarget.LABELS.value:
        images = [load_rgb(p) for p in list_images(data)]
        if not images:
            raise FileNotFoundError(f"{data}: no images found")
        if cfg.short_side is not None:
            images = [resize_short_side(im, cfg.short_side) for im in images]
    elif cfg.task_list[0] == Task.CLASSIFY.value:
        images, labels = load_classification(
            data, Path(cfg.labels) if cfg.labels else None, head.num_classes, cfg.short_side
        )
    else:
        images, masks = load_segmentation(data, Path(cfg.masks), cfg.short_side)  # type: ignore[arg-type]
        check_masks(masks, head.num_classes, cfg.ignore_index)
    return CropSampler(images, t.patch, t.batch, t.sigma, t.seed, labels=labels, masks=masks)


def load_heads(cfg: JointConfig) -> list[nn.Module]:
    """Every head of cfg by name and weights, frozen; ValueError if one does not do its task."""
    weights = per_head(cfg.head_weights, len(cfg.head_list), "head_weights") or (None,) * len(cfg.head_list)
    heads = [freeze(load_head(name, Path(w) if w else None)) for name, w in zip(cfg.head_list, weights)]
    check_head_tasks(cfg, heads)
    return heads


def check_head_tasks(cfg: JointConfig, heads: Sequence[nn.Module]) -> None:
    if len(heads) != len(cfg.task_list):
        raise ValueError(f"{len(heads)} heads for {len(cfg.task_list)} tasks")
    for name, head, task in zip(cfg.head_list, heads, cfg.task_list):
        if head.task != task:
            raise ValueError(f"head {name!r} is a {head.task} network, not a {task} one")


def train_joint(
    cfg: JointConfig, heads: Sequence[nn.Module] | nn.Module | None = None, progress: bool = True, resume: bool = False
) -> Denoiser:
    """Joint training of a Denoiser against frozen heads (loaded from cfg unless given); writes joint.json, and
    model.safetensors at the end, to cfg.train.out beside fit's checkpoints and log; `resume` as `fit`'s."""
    t = cfg.train
    if shard_from_env().world > 1:  # each rank's gradient balance and label-free targets would drift apart
        raise ValueError(
            "joint training (--task) runs as one process; torchrun data-parallel training is for MSE training"
        )
    if heads is None:
        heads = load_heads(cfg)
    else:
        heads = [freeze(h) for h in ([heads] if isinstance(heads, nn.Module) else heads)]
        check_head_tasks(cfg, heads)
    device = resolve_device(t.device)
    for head in heads:
        head.to(device)
    sampler = joint_sampler(cfg, heads[0])
    if cfg.init is not None:
        model = load_denoiser(Path(cfg.init))
        if asdict(model.spec) != t.spec:
            raise ValueError(f"{cfg.init}: its architecture {asdict(model.spec)} differs from train.spec {t.spec}")
    else:
        model = Denoiser(DenoiserSpec(**t.spec))
    val_sigma = t.val_sigma if t.val_sigma is not None else sum(t.sigma) / 2
    validate = psnr_validator(Path(t.val), val_sigma, t.val_images) if t.val else None
    text = json.dumps({**asdict(cfg), "objective": cfg.objective()}, indent=2).encode()
    check_run_folder(Path(t.out), resume)  # before joint.json is written over a run's
    atomic_write(Path(t.out) / "joint.json", lambda handle: handle.write(text))  # makes OUT; replaces a planted link
    balanced = bool(cfg.balance)
    loss_fn = JointLoss(
        heads, GradientBalance(cfg.task_weights, balanced, cfg.balance_decay), TaskTarget(cfg.target), cfg.ignore_index
    )
    trained = fit(model, loss_fn, sampler, t, validate, progress, resume)
    save_weights(
        trained.cpu(),
        Path(t.out) / "model.safetensors",  # type: ignore[arg-type]
        {"config": asdict(cfg), "objective": cfg.objective()},
    )
    return trained  # type: ignore[return-value]


# ---- evaluation ----------------------------------------------------------------------------------------------------


def confusion(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """(num_classes, num_classes) counts, rows = ground truth, columns = prediction; ignored pixels left out."""
    keep = target != ignore_index
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(counts: Tensor) -> tuple[float, Tensor]:
    """(mIoU over classes present in ground truth or prediction, per-class IoU with NaN for absent classes)."""
    counts = counts.double()
    tp = counts.diag()
    union = counts.sum(0) + counts.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return float(iou.nanmean()), iou
