import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from fastdenoise.pipeline.writers import PredictionWriter, label_palette, output_path, top_k, write_image, write_mask


def test_output_path_mirrors_the_input_tree(tmp_path):
    assert output_path(tmp_path, "a/b/photo.JPG", ".png") == tmp_path / "a" / "b" / "photo.png"


def test_write_image_is_atomic_and_returns_the_stat(tmp_path, make_image):
    image = make_image(13, 17)
    st = write_image(image, tmp_path / "x" / "y.png")
    assert st.st_size == (tmp_path / "x" / "y.png").stat().st_size
    assert np.array_equal(np.array(Image.open(tmp_path / "x" / "y.png")), image)
    with pytest.raises(ValueError):
        write_image(image.astype(np.float32), tmp_path / "x" / "bad.png")  # Pillow refuses float RGB
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y.png"]  # no final name, no temporary left


def test_top_k_orders_by_probability(rng):
    logits = rng.normal(size=(4, 10))
    classes, probs = top_k(logits, k=3)
    assert np.array_equal(classes[:, 0], logits.argmax(1))
    assert np.all(np.diff(probs, axis=1) <= 0) and np.all(probs > 0) and np.all(probs.sum(1) <= 1 + 1e-9)
    e = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(probs[:, 0], (e / e.sum(1, keepdims=True)).max(1))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_prediction_writer_streams_top_k_rows(tmp_path, rng, suffix):
    logits = rng.normal(size=(5, 7)) * 3
    names = [f"sub/img{i}.jpg" for i in range(5)]
    labels = [f"class_{c}" for c in range(7)]
    path = tmp_path / "out" / f"predictions{suffix}"
    with PredictionWriter(path, labels, k=2) as writer:
        writer.write(names[:3], logits[:3])
        writer.write(names[3:], logits[3:])
        assert not path.exists()  # only complete files carry the final name
    if suffix == ".csv":
        rows = list(csv.DictReader(path.open()))
        assert len(rows) == 10 and rows[0]["input"] == "sub/img0.jpg" and rows[0]["rank"] == "1"
        top1 = [int(r["class"]) for r in rows if r["rank"] == "1"]
        assert [r["label"] for r in rows if r["rank"] == "1"] == [labels[c] for c in top1]
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["input"] for r in rows] == names and all(len(r["top"]) == 2 for r in rows)
        top1 = [r["top"][0]["class"] for r in rows]
    assert top1 == list(logits.argmax(1))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_prediction_writer_takes_names_that_are_not_utf8(tmp_path, rng, suffix):
    name = os.fsdecode(b"sub/bad\xff.png")
    path = tmp_path / f"predictions{suffix}"
    with PredictionWriter(path) as writer:
        writer.write([name, "ok.png"], rng.normal(size=(2, 4)))
    if suffix == ".csv":
        rows = list(csv.DictReader(path.open(encoding="utf-8", errors="surrogateescape")))
        assert rows[0]["input"] == name and os.fsencode(rows[0]["input"]) == b"sub/bad\xff.png"
    else:
        rows = [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]  # valid UTF-8 JSON
        assert [r["input"] for r in rows] == [name, "ok.png"]


def test_prediction_writer_leaves_nothing_on_failure(tmp_path, rng):
    with pytest.raises(ValueError, match="1 input but 2 rows"):
        with PredictionWriter(tmp_path / "p.jsonl") as writer:
            writer.write(["a.png"], rng.normal(size=(2, 3)))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=".csv or .jsonl"):
        PredictionWriter(tmp_path / "p.txt")


def test_mask_is_a_palette_png_of_class_indices(tmp_path, rng):
    logits = rng.normal(size=(21, 9, 13))
    write_mask(logits, tmp_path / "seg" / "a.png")
    with Image.open(tmp_path / "seg" / "a.png") as im:
        assert im.mode == "P" and im.size == (13, 9)
        assert np.array_equal(np.array(im), logits.argmax(0))
        palette = np.array(im.getpalette()[: 21 * 3]).reshape(21, 3)
    assert np.array_equal(palette, label_palette(21)) and len({tuple(c) for c in palette}) == 21
    labels = rng.integers(0, 3, size=(4, 5))
    write_mask(labels, tmp_path / "b.png")
    assert np.array_equal(np.array(Image.open(tmp_path / "b.png")), labels)
    with pytest.raises(ValueError, match="0..255"):
        write_mask(np.full((2, 2), 300), tmp_path / "c.png")
