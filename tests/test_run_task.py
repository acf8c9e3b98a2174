"""`fastdenoise run --task classify|segment`: a frozen head on every denoised image, kept across resumed and sharded
runs."""

import csv
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from fastdenoise import distributed
from fastdenoise.cli import app
from fastdenoise.distributed import Shard
from fastdenoise.images import load_rgb, save_rgb
from fastdenoise.pipeline.manifest import MANIFEST
from fastdenoise.pipeline.predictions import PREDICTIONS, Predictor, classifier_input
from fastdenoise.pipeline.runner import RunConfig, denoise_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyClassifier(nn.Module):
    """A random 7-class classifier on 24 px crops of a 28 px short side (as EfficientNet-Lite's `scale` says)."""

    task = "classify"
    scale = SimpleNamespace(resolution=24, resize=28)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 7, 3)
        self.num_classes, self.class_names = 7, tuple(f"class-{c}" for c in range(7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3)) * 30  # (N, 7), spread out so the ranking is clear


class PixelClassifier(TinyClassifier):
    """Seven classes read off seven pixels of the 24 px crop: every pixel of the head's input moves the ranking."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)[:, 5, 3:10] * 50


class TinySegmenter(nn.Module):
    """A random 5-class per-pixel segmenter; logits at input size."""

    task = "segment"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.num_classes, self.class_names = 5, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def rows_of(dst: Path) -> dict[str, dict]:
    return {r["input"]: r for r in map(json.loads, (dst / MANIFEST).read_text().splitlines())}


def predictions(dst: Path) -> list[dict]:
    with (dst / PREDICTIONS).open(newline="") as handle:
        return list(csv.DictReader(handle))


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


@pytest.fixture
def photos(tmp_path, make_image) -> Path:
    src = tmp_path / "in"
    for name, (h, w) in {"a.png": (24, 32), "b.jpg": (24, 32), "sub/c.png": (37, 21), "sub/d.png": (20, 40)}.items():
        save_rgb(make_image(h, w), src / name)
    return src


def test_classify_writes_ranked_predictions_csv_from_the_manifest(photos, tmp_path, backend):
    dst = tmp_path / "out"
    predictor = Predictor(TinyClassifier(), "classify", top_k=3, name="tiny")
    summary = denoise_folder(photos, dst, backend, RunConfig(batch=2), predictor=predictor)
    assert summary.ok == 4 and summary.predictions == str(dst / PREDICTIONS) and "head" in summary.stages
    table = predictions(dst)
    assert list(table[0]) == ["input", "rank", "class", "label", "probability"]
    assert [r["input"] for r in table] == sorted(r["input"] for r in table)
    rows = rows_of(dst)
    for name, row in rows.items():
        mine = [r for r in table if r["input"] == name]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3]
        probs = [float(r["probability"]) for r in mine]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(r["label"] == f"class-{r['class']}" for r in mine)
        assert [[int(r["class"]), r["label"]] for r in mine] == [t[:2] for t in row["top"]]
        # the head saw the denoised image as written: the same prediction from the output file
        alone = predictor(as_tensor(load_rgb(dst / row["output"])))[0].top
        assert [t[0] for t in alone] == [t[0] for t in row["top"]]
        assert np.allclose([t[2] for t in alone], probs, atol=2e-6)


def test_classifier_input_is_the_tables_preprocessing_in_torch(make_image):
    from fastdenoise.models.heads.geometry import centre_crop, resize_short_side

    for h, w in [(37, 21), (30, 90)]:
        image = make_image(h, w)
        pil = centre_crop(resize_short_side(image, 28), 24).astype(np.float32) / 255  # Pillow bicubic, uint8
        mine = classifier_input(as_tensor(image), 28, 24)[0].permute(1, 2, 0).numpy()
        assert mine.shape == (24, 24, 3) and np.abs(mine - pil).max() <= 1.5 / 255
    x = torch.rand(2, 3, 28, 30)
    assert torch.equal(classifier_input(x, 28, 24), x[..., 2:26, 3:27])  # at the size: the crop alone


def test_second_run_skips_everything_and_keeps_predictions_identical(photos, tmp_path, backend):
    dst = tmp_path / "out"
    predictor = Predictor(TinyClassifier(), "classify", top_k=2, name="tiny")
    denoise_folder(photos, dst, backend, RunConfig(), predictor=predictor)
    first = (dst / PREDICTIONS).read_bytes()
    again = denoise_folder(photos, dst, backend, RunConfig(), predictor=predictor)
    assert (again.ok, again.skipped) == (0, 4)
    assert (dst / PREDICTIONS).read_bytes() == first
    assert all(len(r["top"]) == 2 for r in rows_of(dst).values())  # skipped rows carry the prediction on
    # another top-k (or head) is not what the rows hold: every image is redone
    wider = denoise_folder(
        photos, dst, backend, RunConfig(), predictor=Predictor(TinyClassifier(), "classify", 4, "tiny")
    )
    assert (wider.ok, wider.skipped) == (4, 0) and len(predictions(dst)) == 4 * 4


def test_segment_writes_one_mask_per_image_equal_to_the_heads_argmax(photos, tmp_path, make_image, backend):
    save_rgb(make_image(40, 36), photos / "big.png")  # larger than the tile: denoised in tiles, segmented whole
    dst = tmp_path / "out"
    head = TinySegmenter().eval()
    summary = denoise_folder(
        photos, dst, backend, RunConfig(batch=1, tile=32, overlap=8), predictor=Predictor(head, "segment")
    )
    assert summary.ok == 5 and summary.masks == 5 and summary.predictions is None
    assert not (dst / PREDICTIONS).exists()
    for name, row in rows_of(dst).items():
        mask_path = dst / Path(name).with_suffix(".mask.png")
        assert row["mask"] == mask_path.relative_to(dst).as_posix()
        with Image.open(mask_path) as im:
            assert im.mode == "P"
            mask = np.asarray(im)
        denoised = load_rgb(dst / row["output"])
        assert mask.shape == denoised.shape[:2] == (row["height"], row["width"])
        assert mask.max() < head.num_classes and len(np.unique(mask)) > 1
        with torch.inference_mode():
            expect = head(as_tensor(denoised)).argmax(1)[0].numpy()
        assert np.array_equal(mask, expect), name


def test_segment_masks_carry_the_heads_own_palette(photos, tmp_path, backend):
    from fastdenoise.models.heads import load_head
    from fastdenoise.models.heads.espnetv2 import CAMVID_PALETTE

    assert Predictor(load_head("espnetv2-camvid", pretrained=False), "segment").palette == CAMVID_PALETTE
    head = TinySegmenter().eval()
    head.palette = tuple(tuple(int(v) for v in c) for c in np.random.default_rng(3).integers(0, 256, (5, 3)))
    dst = tmp_path / "out"
    denoise_folder(photos, dst, backend, RunConfig(batch=1), predictor=Predictor(head, "segment"))
    for row in rows_of(dst).values():
        with Image.open(dst / row["mask"]) as im:
            colours = np.asarray(im.convert("RGB")).reshape(-1, 3)
            labels = np.asarray(im).reshape(-1)
        assert np.array_equal(colours, np.asarray(head.palette)[labels])  # every pixel drawn in its class's colour


def test_a_deleted_mask_makes_its_image_redone(photos, tmp_path, backend):
    dst = tmp_path / "out"
    predictor = Predictor(TinySegmenter(), "segment")
    denoise_folder(photos, dst, backend, RunConfig(), predictor=predictor)
    before = (dst / "a.mask.png").read_bytes()
    (dst / "sub" / "c.mask.png").unlink()
    again = denoise_folder(photos, dst, backend, RunConfig(), predictor=predictor)
    assert (again.ok, again.skipped, again.masks) == (1, 3, 4)
    rows = rows_of(dst)
    assert rows["sub/c.png"]["status"] == "ok" and (dst / "sub" / "c.mask.png").is_file()
    assert rows["a.png"]["status"] == "skipped" and rows["a.png"]["mask"] == "a.mask.png"
    assert (dst / "a.mask.png").read_bytes() == before


def test_an_input_named_like_a_mask_is_left_alone(photos, tmp_path, make_image, backend):
    save_rgb(make_image(24, 32), photos / "a.mask.jpg")  # its PNG output would be a.png's mask
    dst = tmp_path / "out"
    summary = denoise_folder(photos, dst, backend, RunConfig(), predictor=Predictor(TinySegmenter(), "segment"))
    row = rows_of(dst)["a.mask.jpg"]
    assert row["status"] == "ignored" and "mask" in row["error"] and summary.masks == 4


def test_a_corrupt_input_gets_an_error_row_and_the_rest_predictions(photos, tmp_path, backend):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dst = tmp_path / "out"
    summary = denoise_folder(photos, dst, backend, RunConfig(), predictor=Predictor(TinyClassifier(), "classify", 2))
    rows = rows_of(dst)
    assert rows["broken.png"]["status"] == "error" and "top" not in rows["broken.png"]
    assert (summary.ok, summary.failed) == (4, 1)
    assert sorted({r["input"] for r in predictions(dst)}) == ["a.png", "b.jpg", "sub/c.png", "sub/d.png"]


def test_sharded_ranks_keep_their_predictions_and_rank0_gathers_them(photos, tmp_path, backend, monkeypatch):
    # both ranks in this one process, one after the other: no process group, rank 0 merges last
    monkeypatch.setattr(distributed, "all_complete", lambda shard, complete: complete)
    monkeypatch.setattr(distributed, "gather", lambda summary, shard: [summary])  # each rank sees its own alone
    dst = tmp_path / "out"
    predictor = Predictor(TinyClassifier(), "classify", 2)
    one = denoise_folder(photos, dst, backend, RunConfig(), shard=Shard(1, 2), predictor=predictor)
    assert one.ok == 2 and one.predictions is None and not (dst / PREDICTIONS).exists()
    zero = denoise_folder(photos, dst, backend, RunConfig(), shard=Shard(0, 2), predictor=predictor)
    assert zero.ok == 2 and len(predictions(dst)) == 4 * 2


def test_head_task_must_match():
    with pytest.raises(ValueError, match="segment head; --task classify needs a classify head"):
        Predictor(TinySegmenter(), "classify", name="tiny")


runner = CliRunner()


def test_cli_classify_with_lite0_writes_imagenet_labels(photos, tmp_path, weights):
    from fastdenoise.models.heads.efficientnet_lite import imagenet_classes

    out = tmp_path / "out"
    args = [
        "run",
        str(photos),
        str(out),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--task",
        "classify",
        "--top-k",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"predictions: {out / PREDICTIONS} (top-2 of efficientnet-lite0)" in result.output
    table = predictions(out)
    names = imagenet_classes()[1]
    assert len(table) == 4 * 2 and all(r["label"] == names[int(r["class"])] for r in table)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 denoised, 4 skipped" in again.output


def test_cli_segment_reports_the_masks(photos, tmp_path, weights, monkeypatch):
    monkeypatch.setattr(
        "fastdenoise.models.heads.load_head", lambda name, weights=None: TinySegmenter()
    )  # no weights needed
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", str(photos), str(out), "--weights", str(weights), "--precision", "fp32", "--task", "segment"]
    )
    assert result.exit_code == 0, result.output
    assert "masks: 4 (espnetv2-camvid)" in result.output
    assert len(list(out.rglob("*.mask.png"))) == 4


def test_cli_task_defaults_to_the_bundled_task_aware_model_from_sigma_10(photos, tmp_path, make_image, monkeypatch):
    from helpers import SMALL

    from fastdenoise.models.checkpoint import save_weights
    from fastdenoise.models.denoiser import Denoiser

    zoo = tmp_path / "zoo"
    for name in ("blind", "task-aware"):
        save_weights(Denoiser(SMALL), zoo / f"{name}.safetensors")
    monkeypatch.setattr("fastdenoise.models.zoo.bundled_weights", lambda name="blind.safetensors": zoo / name)
    monkeypatch.setattr("fastdenoise.models.heads.load_head", lambda name, weights=None: TinySegmenter())
    ran = lambda *extra: runner.invoke(  # noqa: E731
        app, ["run", str(photos), str(tmp_path / "-".join(extra or ("default",))), "--precision", "fp32", *extra]
    )
    from fastdenoise.noise import add_noise, to_uint8

    save_rgb(to_uint8(add_noise(make_image(64, 80), 30, 0, 0)), photos / "noisy.png")
    segment = ran("--task", "segment")  # each image's level estimated: task-aware from 10, blind below
    assert segment.exit_code == 0, segment.output
    assert "weights: per image (the task-aware model from an estimated sigma of 10, blind below)" in segment.output
    routes = {name: row["weights"] for name, row in rows_of(tmp_path / "--task-segment").items()}
    assert routes == {
        "a.png": "blind",
        "b.jpg": "blind",
        "sub/c.png": "blind",
        "sub/d.png": "blind",
        "noisy.png": "task-aware",
    }, routes
    given = ran("--task", "segment", "--sigma", "25")
    assert given.exit_code == 0 and "weights: task-aware (bundled)" in given.output
    low = ran("--task", "segment", "--sigma", "5")
    assert low.exit_code == 0 and "weights: blind (bundled)" in low.output
    from fastdenoise.models.zoo import task_model

    assert task_model("classify", zoo) == task_model("segment", zoo) == "task-aware"  # one model for both tasks
    assert task_model("denoise", zoo) is None
    named = ran("--task", "segment", "--model", "blind")  # a named model (or --weights) still wins
    assert named.exit_code == 0 and "weights: blind (bundled)" in named.output
    from fastdenoise.models import zoo as zoo_module

    untasked = tuple(replace(m, tasks=()) for m in zoo_module.MODELS)  # no recommended model: the denoising default
    monkeypatch.setattr(zoo_module, "MODELS", untasked)
    plain = ran("--task", "segment", "--sigma", "25")
    assert plain.exit_code == 0 and "weights: blind (bundled)" in plain.output


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--task", "segment", "--head", "efficientnet-lite0"],
            "is a classify head; --task segment needs a segment head",
        ),
        (["--task", "classify", "--head", "no-such-head"], "unknown head 'no-such-head'"),
        (["--head", "efficientnet-lite0"], "are for --task"),
        (["--task", "segment", "--top-k", "3"], "--top-k is for --task classify"),
    ],
)
def test_cli_head_errors_are_one_line_before_any_work(extra, message, photos, tmp_path, weights):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(photos), str(out), "--weights", str(weights), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_table2_on_the_users_path_predicts_what_run_task_classify_does(tmp_path, make_image, weights):
    """`tables table2 --noise-at photo`: noise on the whole photo, denoised whole, resized and cropped for the head;
    the same noisy photos stored as PNGs through `run --task classify` give the same top-5 for every image."""
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.evaluation.tables import Table2Config, table2, task_arms
    from fastdenoise.models.checkpoint import load_denoiser
    from fastdenoise.noise import add_noise, to_uint8

    data, noisy = tmp_path / "photos", tmp_path / "noisy"
    sizes = [(30, 44), (52, 36), (33, 33), (41, 60)]
    names = [f"p{i}.png" for i in range(len(sizes))]
    for i, (name, size) in enumerate(zip(names, sizes)):
        save_rgb(make_image(*size), data / name)
        save_rgb(to_uint8(add_noise(load_rgb(data / name), 30, 3, i)), noisy / name)  # row i: noise [seed, i]
    (data / "labels.csv").write_text("file,index\n" + "".join(f"{n},{i % 7}\n" for i, n in enumerate(names)))
    head = PixelClassifier().eval()
    cfg = Table2Config(str(data), sigmas=(30.0,), seeds=(3,), device="cpu", noise_at="photo", draws=100)
    result = table2(cfg, task_arms(separate=weights, joint=None, cross_task=None, device="cpu"), head=head)
    table = {r["image"]: r["pred"] for r in result.rows if r["arm"] == "separate"}
    assert len(table) == 4 and "noise on the whole photo" in result.title

    backend = make_backend(load_denoiser(weights), BackendConfig(device="cpu", precision="fp32"))
    denoise_folder(
        noisy,
        tmp_path / "out",
        backend,
        RunConfig(batch=1),
        predictor=Predictor(head, "classify", top_k=5, name="tiny"),
    )
    ran = {name: [t[0] for t in row["top"]] for name, row in rows_of(tmp_path / "out").items()}
    assert ran == table
    crop = Table2Config(str(data), sigmas=(30.0,), seeds=(3,), device="cpu", draws=100)  # the paper's protocol
    noisy_only = task_arms(separate=None, joint=None, cross_task=None, device="cpu")
    on_crops = {r["image"]: r["pred"] for r in table2(crop, noisy_only, head=head).rows if r["arm"] == "noisy"}
    on_photos = {r["image"]: r["pred"] for r in result.rows if r["arm"] == "noisy"}
    assert sum(on_crops[n] != on_photos[n] for n in names) >= 2  # the noise met another image
