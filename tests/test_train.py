import json
import math
import os
import signal
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL

from fastdenoise.images import save_rgb
from fastdenoise.models.checkpoint import load_checkpoint, load_denoiser
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.training.config import read_config, resumed_config
from fastdenoise.training.fit import LOSSES, TrainConfig, TrainingStopped, fit, mse_loss, train_denoiser
from fastdenoise.training.samplers import PatchSampler, load_folder


@pytest.fixture
def image_folder(tmp_path, make_image) -> Path:
    folder = tmp_path / "clean"
    for i in range(4):
        save_rgb(make_image(40 + 4 * i, 52), folder / f"img{i}.png")
    return folder


def config(folder: Path, out: Path, steps: int, **kw) -> TrainConfig:
    return TrainConfig(
        data=str(folder),
        out=str(out),
        val=str(folder),
        sigma=(10, 40),
        patch=24,
        batch=4,
        steps=steps,
        lr=3e-3,
        warmup=2,
        val_every=6,
        val_images=2,
        ckpt_every=3,
        log_every=1,
        amp="off",
        compile="off",
        spec=asdict(SMALL),
        **kw,
    )


def test_short_run_lowers_the_loss(image_folder, tmp_path):
    cfg = config(image_folder, tmp_path / "run", steps=30)
    train_denoiser(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert any("val_psnr" in r for r in rows)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 30
    model = load_denoiser(tmp_path / "run" / "model.safetensors")
    assert model.spec == SMALL


class Interrupting(PatchSampler):
    """A sampler whose n-th draw is interrupted, as by Ctrl-C in the middle of a step."""

    def __init__(self, *args, at: int) -> None:
        super().__init__(*args)
        self.left = at

    def __next__(self):
        self.left -= 1
        if self.left == 0:
            super().__next__()  # the draw happens (the RNG advances), then the interrupt
            raise KeyboardInterrupt
        return super().__next__()


def test_resumed_run_matches_uninterrupted_run(image_folder, tmp_path):
    straight = tmp_path / "straight"
    train_denoiser(config(image_folder, straight, steps=8), progress=False)
    split = tmp_path / "split"
    cfg = config(image_folder, split, steps=8)
    images = load_folder(image_folder)
    sampler = Interrupting(images, cfg.patch, cfg.batch, cfg.sigma, cfg.seed, at=5)
    torch.manual_seed(cfg.seed)  # as train_denoiser does
    with pytest.raises(KeyboardInterrupt):
        fit(Denoiser(SMALL), mse_loss, sampler, cfg, progress=False)
    assert load_checkpoint(split / "last.pt")["step"] == 4  # the interrupted 5th step is not counted
    train_denoiser(cfg, progress=False, resume=True)  # resumes from last.pt
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert b["step"] == 8
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-6, msg=key)


def test_a_folder_holding_a_run_is_refused_unless_asked_to_resume(image_folder, tmp_path):
    cfg = config(image_folder, tmp_path / "run", steps=3)
    train_denoiser(cfg, progress=False)
    log = (tmp_path / "run" / "log.jsonl").read_text()
    with pytest.raises(ValueError, match="run: holds a run already; pass --resume to continue it"):
        train_denoiser(replace(cfg, steps=5), progress=False)
    assert (tmp_path / "run" / "log.jsonl").read_text() == log  # nothing written
    train_denoiser(replace(cfg, steps=5), progress=False, resume=True)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 5
    fresh = config(image_folder, tmp_path / "fresh", steps=2)
    train_denoiser(fresh, progress=False, resume=True)  # nothing to resume: a new run
    assert load_checkpoint(tmp_path / "fresh" / "last.pt")["step"] == 2


def test_a_resumed_config_keeps_the_run_and_takes_what_may_change(image_folder, tmp_path):
    stored = json.loads(json.dumps(asdict(config(image_folder, tmp_path / "old", steps=6))))
    again = replace(config(image_folder, tmp_path / "new", steps=9), lr=1e-4, seed=3)
    merged = resumed_config(again, stored, tmp_path / "run", given={"steps", "lr"})
    assert (merged.steps, merged.lr, merged.seed, merged.out) == (9, 1e-4, 0, str(tmp_path / "run"))
    with pytest.raises(ValueError, match="the run was started with --seed 0, not 3; drop --seed to resume it"):
        resumed_config(again, stored, tmp_path / "run", given={"seed"})
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a run config"):
        read_config(tmp_path / "config.json")


def test_sampler_state_round_trip(make_image):
    images = [make_image(30, 30) for _ in range(3)]
    s1 = PatchSampler(images, 16, 2, (5, 50), seed=3)
    next(s1)
    state = s1.state_dict()
    a = next(s1)
    s2 = PatchSampler(images, 16, 2, (5, 50), seed=99)
    s2.load_state_dict(state)
    b = next(s2)
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.clean, b.clean)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="sigma"):
        TrainConfig(data="x", out="y", sigma=(40, 10))
    with pytest.raises(ValueError, match="patch"):
        TrainConfig(data="x", out="y", patch=30)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(data="x", out="y", amp="int8")


def test_init_starts_from_given_weights(image_folder, tmp_path):
    from helpers import randomize_bn

    from fastdenoise.models.checkpoint import save_weights

    torch.manual_seed(7)
    start = randomize_bn(Denoiser(SMALL))
    save_weights(start, tmp_path / "start.safetensors")
    cfg = TrainConfig(**{**asdict(config(image_folder, tmp_path / "run", steps=2)), "lr": 1e-12, "val": None})
    tuned = train_denoiser(cfg, progress=False, init=str(tmp_path / "start.safetensors"))  # steps too small to move
    fresh = train_denoiser(TrainConfig(**{**asdict(cfg), "out": str(tmp_path / "fresh")}), progress=False)
    for name, value in start.named_parameters():
        torch.testing.assert_close(tuned.get_parameter(name), value, rtol=0, atol=1e-6, msg=name)
    assert not torch.allclose(fresh.get_parameter("conv0.0.weight"), start.get_parameter("conv0.0.weight"))


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_a_zero_lr_fine_tune_reproduces_its_init_only_with_frozen_batchnorm(image_folder, tmp_path, freeze_bn):
    from helpers import randomize_bn

    from fastdenoise.models.checkpoint import save_weights

    torch.manual_seed(5)
    start = randomize_bn(Denoiser(SMALL)).eval()
    save_weights(start, tmp_path / "start.safetensors")
    cfg = TrainConfig(
        **{
            **asdict(config(image_folder, tmp_path / "run", steps=4)),
            "lr": 0.0,
            "schedule": "constant",
            "freeze_bn": freeze_bn,
        }
    )
    tuned = train_denoiser(cfg, progress=False, init=str(tmp_path / "start.safetensors"))
    same = [torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), start.state_dict().values())]
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        close = torch.allclose(tuned.eval()(x), start(x), rtol=0, atol=1e-5)  # channels_last: not bit-equal
    # Without freezing, train-mode steps replace the init's BatchNorm statistics with those of a few small batches.
    assert all(same) == close == freeze_bn


class Signalling(PatchSampler):
    """A sampler that sends this process a signal during its n-th draw, as `kill` would in the middle of a step."""

    def __init__(self, *args, at: int, signum: int) -> None:
        super().__init__(*args)
        self.left, self.signum = at, signum

    def __next__(self):
        self.left -= 1
        if self.left == 0:
            os.kill(os.getpid(), self.signum)
        return super().__next__()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_then_resume_is_bit_identical(image_folder, tmp_path, signum):
    kw = {"ema": 0.9, "schedule": "constant", "loss": "charbonnier"}
    straight = train_denoiser(config(image_folder, tmp_path / "straight", steps=9, **kw), progress=False)
    cfg = config(image_folder, tmp_path / "split", steps=9, **kw)
    sampler = Signalling(load_folder(image_folder), cfg.patch, cfg.batch, cfg.sigma, cfg.seed, at=5, signum=signum)
    torch.manual_seed(cfg.seed)
    with pytest.raises(TrainingStopped) as stopped:
        fit(Denoiser(SMALL), LOSSES["charbonnier"], sampler, cfg, progress=False)
    assert stopped.value.signum == signum and stopped.value.step == 5  # the step under way is finished, then saved
    assert load_checkpoint(tmp_path / "split" / "last.pt")["step"] == 5
    (tmp_path / "split" / ".last.pt.abc.part").write_bytes(b"torn")  # as left by a kill -9 during a save
    resumed = train_denoiser(cfg, progress=False, resume=True)
    assert not list((tmp_path / "split").glob("*.part"))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert (
        signal.getsignal(signal.SIGTERM) is not None and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )


def test_weight_average_is_what_is_returned_and_validated(image_folder, tmp_path):
    cfg = config(image_folder, tmp_path / "run", steps=12, ema=0.5)
    averaged = train_denoiser(cfg, progress=False)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    raw = Denoiser(SMALL)
    raw.load_state_dict(last["model"])
    name = "conv0.0.weight"
    assert torch.equal(averaged.state_dict()[name], last["ema"][name])
    assert not torch.equal(raw.state_dict()[name], last["ema"][name])
    saved = load_denoiser(tmp_path / "run" / "model.safetensors")
    assert torch.equal(saved.state_dict()[name], last["ema"][name])
    assert torch.equal(load_denoiser(tmp_path / "run" / "last.pt").state_dict()[name], last["ema"][name])


def test_constant_schedule_and_lr_change_on_resume(image_folder, tmp_path):
    cfg = config(image_folder, tmp_path / "run", steps=6, schedule="constant")
    train_denoiser(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if "lr" in r][1:] == [cfg.lr] * 5  # flat after the warm-up, whatever `steps` is
    assert all(r["mpx_per_s"] > 0 and r["steps_per_s"] > 0 for r in rows if "lr" in r)
    train_denoiser(TrainConfig(**{**asdict(cfg), "steps": 8, "lr": 1e-4}), progress=False, resume=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if "lr" in r][-2:] == [1e-4, 1e-4]
    assert rows[-1]["gpx_seen"] == pytest.approx(8 * 4 * 24 * 24 / 1e9)


def test_losses_are_selectable_and_validated(image_folder, tmp_path):
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(data="x", out="y", loss="huber")
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(data="x", out="y", schedule="step")
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(data="x", out="y", ema=1.0)
    batch = next(PatchSampler(load_folder(image_folder), 24, 2, (20, 20), seed=0))
    model = Denoiser(SMALL)
    values = {name: fn(model, batch)[0].item() for name, fn in LOSSES.items()}
    assert values["mse"] < values["l1"] < values["charbonnier"] + 1e-3  # on [0, 1] errors, d^2 < |d|


def test_jpeg_share_stores_that_share_of_noisy_patches_as_camera_jpegs(image_folder):
    from fastdenoise.training.samplers import jpeg_roundtrip

    images = load_folder(image_folder)
    plain = next(PatchSampler(images, 24, 64, (25, 25), seed=3))
    mixed = next(PatchSampler(images, 24, 64, (25, 25), seed=3, jpeg=(75, 75), jpeg_share=0.5))
    assert torch.equal(plain.clean, mixed.clean)  # the same crops and noise; only the storage differs
    changed = [not torch.equal(a, b) for a, b in zip(plain.noisy, mixed.noisy)]
    assert 16 <= sum(changed) <= 48
    for k in [i for i, c in enumerate(changed) if c][:4]:
        assert torch.equal(mixed.noisy[k], jpeg_roundtrip(plain.noisy[k], 75))
        assert mixed.noisy[k].mul(255).sub(mixed.noisy[k].mul(255).round()).abs().max() < 1e-3  # 8-bit levels
    again = next(PatchSampler(images, 24, 64, (25, 25), seed=3, jpeg=(75, 75), jpeg_share=0.5))
    assert torch.equal(again.noisy, mixed.noisy)  # seeded: a resumed run repeats
    with pytest.raises(ValueError, match="jpeg must be a quality range"):
        TrainConfig(data=".", out=".", jpeg=(90, 80))


def test_a_jpeg_run_validates_on_the_noisy_images_stored_as_jpeg_too(image_folder):
    from fastdenoise.training.fit import psnr_validator

    model = Denoiser(SMALL).eval()
    plain = psnr_validator(image_folder, 25.0, 3)(model)
    both = psnr_validator(image_folder, 25.0, 3, jpeg=75)(model)
    assert set(plain) == {"psnr"} and set(both) == {"psnr", "jpeg_psnr"}
    assert both["psnr"] == plain["psnr"]  # the white-noise score is unchanged by the extra set
    assert abs(both["jpeg_psnr"] - both["psnr"]) > 0.01  # a different input: JPEG alters the noisy images


def test_moved_colours_keep_the_values_grey_and_range(rng):
    from fastdenoise.training.samplers import move_colours

    patch = torch.from_numpy(rng.random((3, 9, 7), dtype=np.float32))
    permuted = move_colours(patch, (2, 0, 1), saturation=1.0, hue=0.0)
    assert torch.allclose(permuted, patch[[2, 0, 1]], atol=1e-6)  # the same channel values, another order
    assert sorted(permuted.flatten().tolist()) == pytest.approx(sorted(patch.flatten().tolist()), abs=1e-6)
    grey = move_colours(patch, (0, 1, 2), saturation=0.0, hue=1.0)
    assert torch.allclose(grey, patch.mean(0, keepdim=True).expand_as(patch), atol=1e-6)
    turned = move_colours(patch, (0, 1, 2), saturation=1.0, hue=2 * math.pi / 3)
    assert torch.allclose(turned, patch[[2, 0, 1]], atol=1e-5)  # a third of a turn about grey: a cyclic channel shift
    muted = move_colours(patch, (1, 0, 2), saturation=0.4, hue=0.7)  # inside the cube: no clip
    assert torch.allclose(muted.mean(0), patch.mean(0), atol=1e-6)  # each pixel keeps its grey level
    vivid = move_colours(patch, (1, 2, 0), saturation=2.0, hue=-2.0)
    assert vivid.min() == 0.0 and vivid.max() == 1.0  # pushed out of the cube, clipped back


def test_colour_share_moves_that_share_of_clean_patches_only(image_folder):
    images = load_folder(image_folder)
    plain = next(PatchSampler(images, 24, 64, (25, 25), seed=3))
    moved = next(PatchSampler(images, 24, 64, (25, 25), seed=3, colour=0.5))
    changed = [not torch.equal(a, b) for a, b in zip(plain.clean, moved.clean)]
    assert 16 <= sum(changed) <= 48
    assert all(torch.allclose(a.mean(0), b.mean(0), atol=0.2) for a, b in zip(plain.clean, moved.clean))
    assert torch.equal(next(PatchSampler(images, 24, 64, (25, 25), seed=3, colour=0.5)).clean, moved.clean)
    with pytest.raises(ValueError, match="colour must be a share"):
        TrainConfig(data=".", out=".", colour=1.5)


def test_downscale_shrinks_larger_squares_to_the_patch(make_image):
    from fastdenoise.training.samplers import shrink

    region = torch.from_numpy(make_image(40, 40)).permute(2, 0, 1)
    half = shrink(region, 20)
    box = region.float().div(255).reshape(3, 20, 2, 20, 2).mean((2, 4))  # a 2x2 box average
    assert half.shape == (3, 20, 20) and (half - box).abs().mean() < 0.02
    image = make_image(120, 120)
    big = next(PatchSampler([image], 24, 32, (25, 25), seed=1, downscale=3.0))
    small = next(PatchSampler([image], 24, 32, (25, 25), seed=1))
    assert big.clean.shape == small.clean.shape == (32, 3, 24, 24)
    gradient = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    assert gradient(big.clean) > 1.3 * gradient(small.clean)  # the same photo, more detail per pixel
    assert not torch.equal(big.clean.mul(255), big.clean.mul(255).round())  # resampled, not cut
    with pytest.raises(ValueError, match="downscale must be a factor"):
        TrainConfig(data=".", out=".", downscale=0.5)


def test_extra_folders_are_drawn_from_and_evaluation_sets_refused(image_folder, tmp_path, monkeypatch):
    import fastdenoise.training.fit as fit_module

    extra = tmp_path / "more"
    for i in range(4):
        save_rgb(np.full((30, 30, 3), 7 * i + 1, np.uint8), extra / f"flat{i}.png")  # flat: recognisable patches
    cfg = replace(config(image_folder, tmp_path / "run", steps=1), extra=(str(extra),), val=None)
    seen = []

    class Spy(PatchSampler):
        def __init__(self, images, *args, **kw):
            seen.extend(images)
            super().__init__(images, *args, **kw)

    monkeypatch.setattr(fit_module, "PatchSampler", Spy)
    train_denoiser(cfg, progress=False)
    assert len(seen) == 8 and sum(im.std() == 0 for im in seen) == 4
    batch = next(PatchSampler(seen, 24, 64, (0, 0), seed=0))
    assert 16 <= sum(float(p.std()) < 1e-6 for p in batch.clean) <= 48  # half the photos: about half the patches
    for folder in ("data/kodak24", "runs/unlike24", "data/camvid/val", "x/CBSD68"):
        with pytest.raises(ValueError, match="train on training photos only"):
            TrainConfig(data=".", out=".", extra=(folder,))
    with pytest.raises(ValueError, match="CamVid's evaluation split"):
        TrainConfig(data="data/camvid/val", out=".")
    assert TrainConfig(data="data/camvid/train", out=".").extra == ()


def test_a_config_without_the_new_fields_resumes_with_them_off(image_folder, tmp_path):
    stored = json.loads(json.dumps(asdict(config(image_folder, tmp_path / "old", steps=6))))
    for name in ("extra", "colour", "downscale"):
        stored.pop(name)  # a config.json written before these options
    merged = resumed_config(config(image_folder, tmp_path / "new", steps=9), stored, tmp_path / "run", given={"steps"})
    assert (merged.extra, merged.colour, merged.downscale, merged.steps) == ((), 0.0, 1.0, 9)
    again = replace(config(image_folder, tmp_path / "new", steps=9), colour=0.5)
    with pytest.raises(ValueError, match="started with --colour 0.0, not 0.5"):
        resumed_config(again, stored, tmp_path / "run", given={"colour"})
    stored = json.loads(json.dumps(asdict(replace(again, extra=(str(image_folder),)))))
    merged = resumed_config(again, stored, tmp_path / "run", given={"steps"})
    assert merged.extra == (str(image_folder),) and merged.colour == 0.5  # a list in config.json, a tuple again
