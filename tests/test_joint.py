"""Joint training: the frozen-head invariant, label-free targets, crop samplers, configs and a tiny run through
`fit`."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fastdenoise.models.checkpoint import load_checkpoint
from fastdenoise.models.denoiser import Denoiser, DenoiserSpec
from fastdenoise.models.heads.geometry import resize_short_side
from fastdenoise.training.fit import TrainConfig, fit, mse_loss
from fastdenoise.training.joint import (
    CropSampler,
    GradientBalance,
    JointConfig,
    TaskTarget,
    check_masks,
    confusion,
    cross_entropy,
    freeze,
    joint_loss,
    load_classification,
    load_segmentation,
    mean_iou,
    train_joint,
)
from fastdenoise.training.samplers import Batch

TINY = DenoiserSpec(c0=8, c1=8, c2=8, mid=4, up2=4, c3=8, mid3=4, up1=4)


class TinyHead(nn.Module):
    """A small classifier or segmenter with BatchNorm, so that train-mode statistics updates would show."""

    def __init__(self, task: str, num_classes: int, gain: float = 1.0) -> None:
        super().__init__()
        self.task, self.num_classes, self.class_names, self.gain = task, num_classes, None, gain
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, num_classes, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gain * self.body(x)
        return y.mean((2, 3)) if self.task == "classify" else y


def train_config(tmp_path: Path, data: Path, **overrides) -> TrainConfig:
    base = TrainConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        patch=32,
        batch=4,
        steps=3,
        lr=3e-3,
        warmup=1,
        log_every=1,
        ckpt_every=100,
        device="cpu",
        amp="off",
        compile="off",
        spec=asdict(TINY),
        seed=3,
    )
    return replace(base, **overrides)


def write_images(folder: Path, make_image, count: int, suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"im{i:02d}{suffix}" for i in range(count)]
    for path in paths:
        Image.fromarray(make_image(40, 52)).save(path)
    return paths


def write_masks(image_folder: Path, mask_folder: Path, rng: np.random.Generator, classes: int, void: int) -> None:
    mask_folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(image_folder.iterdir()):
        mask = rng.integers(0, classes, size=(40, 52)).astype(np.uint8)
        mask[:4] = void
        Image.fromarray(mask).save(mask_folder / (path.stem + ".png"))


# ---- the objective -------------------------------------------------------------------------------------------------


def test_joint_loss_refuses_a_head_that_is_not_frozen():
    with pytest.raises(ValueError, match="frozen"):
        joint_loss(TinyHead("classify", 5), 0.25)
    with pytest.raises(ValueError, match="frozen"):
        joint_loss(TinyHead("classify", 5).eval(), 0.25)  # eval but still trainable


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_label_free_softmax_target_is_zero_when_the_output_is_clean(task):
    head = freeze(TinyHead(task, 6))
    clean = torch.rand(3, 3, 16, 16)
    loss_fn = joint_loss(head, 0.5, TaskTarget.SOFTMAX)
    loss, logs = loss_fn(nn.Identity(), Batch(clean.clone(), clean))
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and logs["task"] == pytest.approx(0.0, abs=1e-6)
    noisy = clean + 0.3 * torch.randn_like(clean)
    loss, logs = loss_fn(nn.Identity(), Batch(noisy, clean))
    p_clean, log_p_clean, log_p_out = head(clean).softmax(1), head(clean).log_softmax(1), head(noisy).log_softmax(1)
    assert logs["task"] == pytest.approx((p_clean * (log_p_clean - log_p_out)).sum(1).mean().item(), rel=1e-4)
    assert logs["task"] > 0
    assert loss.item() == pytest.approx(logs["mse"] + 0.5 * logs["task"], rel=1e-5)


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_label_free_argmax_target_is_the_heads_prediction_on_clean(task):
    head = freeze(TinyHead(task, 6))
    clean = torch.rand(3, 3, 16, 16)
    noisy = clean + 0.3 * torch.randn_like(clean)
    _, logs = joint_loss(head, 0.25, TaskTarget.ARGMAX)(nn.Identity(), Batch(noisy, clean))
    expected = F.cross_entropy(head(noisy), head(clean).argmax(1))
    assert logs["task"] == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_the_denoiser_through_the_frozen_head_only():
    head = freeze(TinyHead("segment", 4))
    model = nn.Conv2d(3, 3, 1)
    clean = torch.rand(2, 3, 16, 16)
    target = torch.randint(0, 4, (2, 16, 16))
    with torch.no_grad():  # make the MSE term exactly zero: only the task term can produce gradients
        model.weight.copy_(torch.eye(3)[:, :, None, None])
        model.bias.zero_()
    loss, logs = joint_loss(head, 0.5)(model, Batch(clean, clean, target))
    loss.backward()
    assert logs["mse"] == 0.0 and logs["task"] > 0
    assert model.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in head.parameters())


def test_labels_mode_needs_a_target_and_ignores_void_pixels():
    head = freeze(TinyHead("segment", 4))
    clean = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="no target"):
        joint_loss(head, 0.5)(nn.Identity(), Batch(clean, clean))
    void = torch.full((2, 8, 8), 11)
    _, logs = joint_loss(head, 0.5, ignore_index=11)(nn.Identity(), Batch(clean, clean, void))
    assert logs["task"] == 0.0  # every pixel ignored: 0, not NaN
    assert cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1])).item() > 0


# ---- the balance ---------------------------------------------------------------------------------------------------


def test_composed_loss_has_the_value_and_parameter_gradient_of_the_plain_sum():
    head = freeze(TinyHead("classify", 5, gain=3.0))
    batch = Batch(torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16), torch.randint(0, 5, (3,)))
    model = Denoiser(TINY)
    loss, logs = joint_loss(head, 0.37)(model, batch)
    loss.backward()
    composed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = model(batch.noisy)
    plain = F.mse_loss(out, batch.clean) + 0.37 * F.cross_entropy(head(out), batch.target)
    plain.backward()
    assert loss.item() == pytest.approx(plain.item(), rel=1e-5)
    assert all(torch.allclose(a, p.grad, rtol=1e-4, atol=1e-7) for a, p in zip(composed, model.parameters()))
    assert logs["weight"] == 0.37 and logs["ratio"] > 0


def test_balance_weights_are_the_bias_corrected_ema_ratio(rng):
    balance = GradientBalance([0.5, 2.0], balanced=True, decay=0.9)
    norms = rng.uniform(0.1, 10.0, size=(6, 3))
    for t, (m, a, b) in enumerate(norms, 1):
        weights = balance.update(m, [a, b])
        decay = 0.9 ** np.arange(t)[::-1]  # oldest first
        ema = (decay[:, None] * norms[:t]).sum(0)  # the (1 - d) factors and the bias correction cancel in the ratio
        assert weights == pytest.approx([0.5 * ema[0] / ema[1], 2.0 * ema[0] / ema[2]], rel=1e-9)
    restored = GradientBalance([0.5, 2.0], balanced=True, decay=0.9)
    restored.load_state_dict(balance.state_dict())
    assert restored.weights() == balance.weights()
    assert GradientBalance([0.3], balanced=False).update(5.0, [7.0]) == [0.3]
    with pytest.raises(ValueError, match="2 heads"):
        GradientBalance([1.0], balanced=True).load_state_dict(balance.state_dict())


def geometric_mean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def realized_ratios(tmp_path: Path, make_image, heads: list[nn.Module], steps: int = 12, **weights) -> list[dict]:
    """Log rows of a short fit of a tiny denoiser against `heads` (label-free), weights raw or balanced."""
    images = [make_image(40, 40) for _ in range(4)]
    sampler = CropSampler(images, 32, 4, (20.0, 40.0), seed=5)
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    cfg = train_config(tmp_path, tmp_path, out=str(out), steps=steps, lr=1e-3, channels_last=False)
    fit(
        Denoiser(TINY),
        joint_loss([freeze(h) for h in heads], target=TaskTarget.SOFTMAX, **weights),
        sampler,
        cfg,
        progress=False,
    )
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_balance_reaches_the_requested_ratio_whatever_the_heads_scale(tmp_path, make_image):
    medians, raw = [], []
    for gain in (0.1, 10.0):  # logits 100x apart: the raw task gradient differs by orders of magnitude
        rows = realized_ratios(tmp_path, make_image, [TinyHead("classify", 6, gain)], balance=0.2, decay=0.5)
        assert rows[0]["ratio"] == pytest.approx(0.2, rel=1e-6)  # the first step calibrates exactly
        medians.append(geometric_mean([r["ratio"] for r in rows]))
        raw.append(
            geometric_mean(
                [
                    r["ratio"]
                    for r in realized_ratios(tmp_path, make_image, [TinyHead("classify", 6, gain)], steps=3, lam=0.2)
                ]
            )
        )
    assert all(0.2 / 1.5 < m < 0.2 * 1.5 for m in medians), medians
    assert raw[1] > 10 * raw[0], raw  # without the balance the same lam means a different pull per head


def test_one_balance_per_head_when_training_against_several(tmp_path, make_image):
    heads = [TinyHead("classify", 5, gain=40.0), TinyHead("segment", 3, gain=0.7)]
    rows = realized_ratios(tmp_path, make_image, heads, balance=[0.05, 1.0], decay=0.5)
    assert {"task_0", "task_1", "weight_0", "weight_1", "ratio_0", "ratio_1"} <= set(rows[0])
    for k, target in enumerate((0.05, 1.0)):
        mean = geometric_mean([r[f"ratio_{k}"] for r in rows])
        assert target / 1.5 < mean < target * 1.5, (k, mean)
    assert rows[-1]["weight_0"] < rows[-1]["weight_1"]


def test_train_joint_against_two_heads_label_free(tmp_path, make_image):
    write_images(tmp_path / "data", make_image, 3)
    cfg = JointConfig(
        train_config(tmp_path, tmp_path / "data"), tasks=("classify", "segment"), target="argmax", balance=(0.1, 0.2)
    )
    heads = [TinyHead("classify", 4), TinyHead("segment", 3)]
    train_joint(cfg, heads=heads, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert (
        len(rows) == 3
        and rows[0]["ratio_0"] == pytest.approx(0.1, rel=1e-6)
        and rows[0]["ratio_1"] == pytest.approx(0.2, rel=1e-6)
    )
    saved = json.loads((tmp_path / "run" / "joint.json").read_text())
    assert saved["tasks"] == ["classify", "segment"] and saved["balance"] == [0.1, 0.2]
    with pytest.raises(ValueError, match="is a segment network, not a classify one"):
        train_joint(cfg, heads=heads[::-1], progress=False)
    with pytest.raises(ValueError, match="holds a run already; pass --resume"):  # the library's rule, as the CLI's
        train_joint(replace(cfg, balance=(0.3, 0.2)), heads=heads, progress=False)
    assert json.loads((tmp_path / "run" / "joint.json").read_text()) == saved  # refused before anything is written


# ---- samplers ------------------------------------------------------------------------------------------------------


def test_crop_sampler_keeps_masks_aligned_with_the_crop_and_flip(make_image):
    images = [make_image(48, 60) for _ in range(3)]
    masks = [im[..., 0] // 32 for im in images]  # a mask that is a function of the pixel
    sampler = CropSampler(images, 24, 6, (10.0, 40.0), seed=1, masks=masks)
    for _ in range(4):
        batch = next(sampler)
        assert (
            batch.clean.shape == (6, 3, 24, 24)
            and batch.target.shape == (6, 24, 24)
            and batch.target.dtype == torch.long
        )
        red = torch.round(batch.clean[:, 0] * 255).long()
        assert torch.equal(batch.target, red // 32)
        assert not torch.equal(batch.noisy, batch.clean)


def test_crop_sampler_labels_follow_their_images_and_resume_repeats(rng):
    images = [np.full((40, 40, 3), 20 * i, dtype=np.uint8) for i in range(5)]
    sampler = CropSampler(images, 32, 8, (25.0, 25.0), seed=7, labels=[10 + i for i in range(5)])
    batch = next(sampler)
    picked = torch.round(batch.clean.mean((1, 2, 3)) * 255 / 20).long()
    assert torch.equal(batch.target, picked + 10)
    state = sampler.state_dict()
    first = next(sampler)
    sampler.load_state_dict(state)
    again = next(sampler)
    assert torch.equal(first.noisy, again.noisy) and torch.equal(first.target, again.target)


def test_crop_sampler_rejects_small_images_and_mismatched_targets(make_image):
    with pytest.raises(ValueError, match="smaller"):
        CropSampler([make_image(20, 40)], 32, 2, (25.0, 25.0), 0)
    with pytest.raises(ValueError, match="labels"):
        CropSampler([make_image(40, 40)], 32, 2, (25.0, 25.0), 0, labels=[1, 2])


# ---- data on disk --------------------------------------------------------------------------------------------------


def test_resize_short_side_keeps_aspect_and_mask_values(make_image):
    image = make_image(300, 400)
    assert resize_short_side(image, 256).shape == (256, 341, 3)
    mask = (make_image(30, 50)[..., 0] // 64).astype(np.uint8)
    assert set(np.unique(resize_short_side(mask, 45, nearest=True))) <= set(np.unique(mask))


def test_load_classification_from_csv_and_from_class_folders(tmp_path, make_image):
    paths = write_images(tmp_path / "flat", make_image, 3)
    (tmp_path / "labels.csv").write_text("file,index\n" + "".join(f"{p.name},{i * 2}\n" for i, p in enumerate(paths)))
    images, labels = load_classification(tmp_path / "flat", tmp_path / "labels.csv", 10, short_side=36)
    assert labels == [0, 2, 4] and min(images[0].shape[:2]) == 36
    for name in ("b_cat", "a_dog", "c_owl"):
        write_images(tmp_path / "folders" / name, make_image, 2)
    images, labels = load_classification(tmp_path / "folders", None, 3, short_side=None)
    assert labels == [0, 0, 1, 1, 2, 2] and images[0].shape == (40, 52, 3)
    with pytest.raises(ValueError, match="3 class folders for a 1000-class head"):
        load_classification(tmp_path / "folders", None, 1000, short_side=None)
    with pytest.raises(ValueError, match="outside"):
        load_classification(tmp_path / "flat", tmp_path / "labels.csv", 3, short_side=None)


def test_load_segmentation_pairs_masks_by_stem_and_checks_values(tmp_path, make_image, rng):
    write_images(tmp_path / "img", make_image, 3, suffix=".jpg")
    write_masks(tmp_path / "img", tmp_path / "ann", rng, classes=11, void=11)
    images, masks = load_segmentation(tmp_path / "img", tmp_path / "ann", short_side=80)
    assert len(images) == 3 and images[0].shape[:2] == masks[0].shape == (80, 104)
    check_masks(masks, 11, ignore_index=11)
    with pytest.raises(ValueError, match="neither classes"):
        check_masks(masks, 11, ignore_index=255)
    (tmp_path / "ann" / "im01.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no mask for 1 image \(first"):
        load_segmentation(tmp_path / "img", tmp_path / "ann", short_side=None)


# ---- config --------------------------------------------------------------------------------------------------------


def test_joint_config_validates_and_defaults_lambda(tmp_path):
    train = train_config(tmp_path, tmp_path)
    assert JointConfig(train).task_weights == (0.25,)
    segment = JointConfig(train, tasks=("segment",), target="argmax")
    assert segment.task_weights == (0.5,) and segment.head_list == ("espnetv2-camvid",)
    assert JointConfig(train, lam=(0.1,)).task_weights == (0.1,)
    assert JointConfig(train).short_side == 37  # 8/7 of the 32px crop
    both = JointConfig(train, tasks=("classify", "segment"), target="softmax", balance=(0.3,))
    assert both.head_list == ("efficientnet-lite0", "espnetv2-camvid") and both.task_weights == (0.3, 0.3)
    assert both.short_side is None and "balanced to gradient ratio 0.3" in both.objective()
    two = JointConfig(train, heads=("efficientnet-lite0", "efficientnet-lite1"), target="argmax", lam=(0.1, 0.2))
    assert two.task_list == ("classify", "classify") and two.task_weights == (0.1, 0.2)
    for bad, match in [
        ({"tasks": ("detect",)}, "task must be one of classify, segment"),
        ({"target": "pseudo"}, "target must be one of labels, argmax, softmax"),
        ({"heads": ("resnet",)}, "head must be one of"),
        ({"lam": (-1.0,)}, "lam"),
        ({"balance": (0.0,)}, "balance must be > 0"),
        ({"balance": (0.1,), "lam": (0.1,)}, "not both"),
        ({"balance_decay": 1.0}, "balance_decay"),
        ({"tasks": ("classify", "segment"), "target": "argmax", "lam": (1.0, 2.0, 3.0)}, "one per head"),
        ({"tasks": ("classify", "segment")}, "label-free"),
        ({"tasks": ("classify", "segment"), "heads": ("vgg16",), "target": "argmax"}, "one task per head"),
        ({"resize": 16}, "resize"),
        ({"tasks": ("segment",)}, "needs masks"),
        ({"tasks": ("segment",), "masks": "m", "labels": "l.csv"}, "labels"),
        ({"masks": "m"}, "masks is for"),
    ]:
        with pytest.raises(ValueError, match=match):
            JointConfig(train, **bad)
    assert JointConfig(train, heads=("torchvision:resnet18",)).head_list == ("torchvision:resnet18",)


# ---- training through fit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_train_joint_leaves_the_head_bit_identical_and_out_of_the_optimizer(tmp_path, make_image, rng, task):
    data = tmp_path / "data"
    paths = write_images(data, make_image, 4)
    if task == "classify":
        (tmp_path / "labels.csv").write_text(
            "file,index\n" + "".join(f"{p.name},{i % 3}\n" for i, p in enumerate(paths))
        )
        extra = {"labels": str(tmp_path / "labels.csv")}
    else:
        write_masks(data, tmp_path / "ann", rng, classes=3, void=11)
        extra = {"masks": str(tmp_path / "ann"), "ignore_index": 11}
    head = TinyHead(task, 3)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    cfg = JointConfig(train_config(tmp_path, data, channels_last=True), tasks=(task,), **extra)
    model = train_joint(cfg, heads=head, progress=False)
    after = head.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics included
    assert not head.training and all(p.grad is None and not p.requires_grad for p in head.parameters())
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    optimised = ckpt["optimizer"]["param_groups"][0]["params"]
    assert len(optimised) == len(list(model.parameters())) == len(ckpt["optimizer"]["state"])
    saved = json.loads((tmp_path / "run" / "joint.json").read_text())
    assert saved["tasks"] == [task] and saved["train"]["steps"] == 3 and saved["objective"].startswith("MSE + ")
    assert (tmp_path / "run" / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"mse", "task"} <= set(r) for r in rows)


def test_train_joint_refuses_a_head_of_the_other_task(tmp_path, make_image):
    write_images(tmp_path / "data", make_image, 2)
    cfg = JointConfig(train_config(tmp_path, tmp_path / "data"), tasks=("classify",), target="argmax")
    with pytest.raises(ValueError, match="segment network"):
        train_joint(cfg, heads=TinyHead("segment", 3), progress=False)


def test_a_joint_run_with_lam_0_takes_the_plain_mse_trainers_steps(tmp_path, make_image):
    images = [make_image(40, 40) for _ in range(4)]
    models = []
    for name, loss_fn in (
        ("joint", joint_loss(freeze(TinyHead("classify", 6, gain=5.0)), 0.0, target=TaskTarget.SOFTMAX)),
        ("mse", mse_loss),
    ):
        torch.manual_seed(0)
        model = Denoiser(TINY)
        cfg = train_config(tmp_path, tmp_path, out=str(tmp_path / name), steps=4, channels_last=False)
        models.append(fit(model, loss_fn, CropSampler(images, 32, 4, (20.0, 40.0), seed=5), cfg, progress=False))
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
    torch.manual_seed(0)
    assert not torch.allclose(models[0].conv0[0].weight, Denoiser(TINY).conv0[0].weight)  # the steps did move it


def test_a_resumed_balanced_run_keeps_its_balance_instead_of_recalibrating(tmp_path, make_image):
    images = [make_image(40, 40) for _ in range(4)]

    def run(out: str, steps: int) -> list[dict]:
        torch.manual_seed(0)
        cfg = train_config(
            tmp_path, tmp_path, out=str(tmp_path / out), steps=steps, schedule="constant", channels_last=False
        )
        loss_fn = joint_loss(
            freeze(TinyHead("classify", 6, gain=5.0)), target=TaskTarget.SOFTMAX, balance=0.3, decay=0.5
        )
        fit(Denoiser(TINY), loss_fn, CropSampler(images, 32, 4, (20.0, 40.0), seed=5), cfg, progress=False, resume=True)
        return [json.loads(line) for line in (tmp_path / out / "log.jsonl").read_text().splitlines()]

    straight = run("straight", 6)
    run("split", 3)
    assert load_checkpoint(tmp_path / "split" / "last.pt")["loss"]["steps"] == 3
    split = run("split", 6)  # resumes from last.pt with a fresh loss object
    assert [r["weight"] for r in split] == pytest.approx([r["weight"] for r in straight], rel=1e-6)
    assert split[3]["ratio"] != pytest.approx(0.3, rel=1e-3)  # a recalibration would hit R exactly at the resumed step


def test_a_tiny_joint_run_lowers_the_joint_loss(tmp_path, make_image):
    images = [make_image(48, 48) for _ in range(6)]
    labels = [1] * len(images)  # one class for all: learnable by a tiny denoiser in a few steps
    head = freeze(TinyHead("classify", 4, gain=8.0))
    loss_fn = joint_loss(head, 0.5)
    held_out = next(CropSampler(images, 32, 16, (30.0, 30.0), seed=99, labels=labels))
    model = Denoiser(TINY)

    def joint(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            return loss_fn(model, held_out)[0].item()

    start = joint(model)
    cfg = train_config(tmp_path, tmp_path, steps=20, batch=8, lr=1e-2, channels_last=False)
    fit(model, loss_fn, CropSampler(images, 32, 8, (30.0, 30.0), seed=1, labels=labels), cfg, progress=False)
    assert joint(model) < 0.9 * start


def test_confusion_and_mean_iou():
    target = torch.tensor([0, 0, 1, 1, 2, 9])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    counts = confusion(pred, target, 3, ignore_index=9)
    assert counts.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    miou, iou = mean_iou(counts)
    assert iou.tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert miou == pytest.approx(1 / 3)
