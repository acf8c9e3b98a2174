import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastdenoise.images import load_rgb, save_rgb
from fastdenoise.noise import to_uint8
from fastdenoise.pipeline.loaders import PilLoader
from fastdenoise.pipeline.runner import RunConfig, denoise_folder
from fastdenoise.pipeline.summary import summary_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tree(tmp_path, make_image) -> Path:
    src = tmp_path / "in"
    sizes = {
        "a.png": (32, 48),
        "b.jpg": (32, 48),
        "sub/c.png": (17, 23),
        "sub/deeper/d.png": (32, 48),
        "big.png": (150, 90),
    }
    for name, (h, w) in sizes.items():
        save_rgb(make_image(h, w), src / name)
    Image.fromarray(make_image(20, 30)[..., 0]).save(src / "sub" / "grey.png")  # greyscale
    (src / "broken.png").write_bytes(b"not an image at all")
    (src / "notes.txt").write_text("ignored: not an image extension")
    return src


def manifest(dst: Path) -> list[dict]:
    return [json.loads(line) for line in (dst / "manifest.jsonl").read_text().splitlines()]


def test_folder_run_mirrors_tree_and_reports_every_input(tree, tmp_path, backend):
    dst = tmp_path / "out"
    summary = denoise_folder(tree, dst, backend, RunConfig(batch=2, tile=64, overlap=16))
    rows = {r["input"]: r for r in manifest(dst)}
    assert set(rows) == {
        "a.png",
        "b.jpg",
        "sub/c.png",
        "sub/deeper/d.png",
        "big.png",
        "sub/grey.png",
        "broken.png",
        "notes.txt",
    }
    assert rows["broken.png"]["status"] == "error" and "broken.png" in rows["broken.png"]["error"]
    assert rows["notes.txt"]["status"] == "ignored" and ".txt" in rows["notes.txt"]["error"]
    assert (summary.ok, summary.failed, summary.skipped, summary.ignored) == (6, 1, 0, 1)
    for name, row in rows.items():
        if row["status"] != "ok":
            continue
        out = dst / row["output"]
        assert out.suffix == ".png" and out.exists()
        assert load_rgb(out).shape == load_rgb(tree / name).shape
    assert (dst / "b.png").exists()  # format change keeps the mirrored name
    assert not list(dst.rglob("*.part"))


def test_batched_equals_one_by_one(tree, tmp_path, backend):
    denoise_folder(tree, tmp_path / "batched", backend, RunConfig(batch=4))
    denoise_folder(tree, tmp_path / "single", backend, RunConfig(batch=1))
    for name in ("a.png", "b.png", "sub/deeper/d.png"):
        a, b = load_rgb(tmp_path / "batched" / name), load_rgb(tmp_path / "single" / name)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_existing_outputs_are_skipped_unless_overwrite(tree, tmp_path, backend):
    dst = tmp_path / "out"
    denoise_folder(tree, dst, backend, RunConfig())
    stamp = (dst / "a.png").stat().st_mtime_ns
    again = denoise_folder(tree, dst, backend, RunConfig())
    assert again.skipped == 6 and again.ok == 0
    assert (dst / "a.png").stat().st_mtime_ns == stamp
    forced = denoise_folder(tree, dst, backend, RunConfig(overwrite=True))
    assert forced.ok == 6


def test_refuses_output_inside_input_and_missing_or_empty_input(tree, tmp_path, backend):
    with pytest.raises(ValueError, match="inside"):
        denoise_folder(tree, tree / "out", backend, RunConfig())
    with pytest.raises(ValueError, match="does not exist"):
        denoise_folder(tmp_path / "absent", tmp_path / "o", backend, RunConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        denoise_folder(tmp_path / "empty", tmp_path / "o", backend, RunConfig())


@pytest.fixture
def mixed(tmp_path, make_image) -> Path:
    src = tmp_path / "mixed"
    sizes = [(32, 48), (17, 23), (32, 48), (48, 32), (17, 23), (32, 48), (48, 32), (32, 48), (17, 23), (32, 48)]
    for i, (h, w) in enumerate(sizes):
        save_rgb(make_image(h, w), src / f"m{i}.png")
    return src


def test_mixed_sizes_batched_give_exactly_what_each_image_gets_alone(mixed, tmp_path, backend):
    summary = denoise_folder(mixed, tmp_path / "batched", backend, RunConfig(batch=3, loader="pil"))
    assert summary.ok == 10
    for path in sorted(mixed.iterdir()):
        image = load_rgb(path)
        alone = backend(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(load_rgb(tmp_path / "batched" / path.name), to_uint8(alone)), path.name


def test_summary_reports_each_stage(mixed, tmp_path, backend):
    summary = denoise_folder(mixed, tmp_path / "out", backend, RunConfig(batch=2))
    assert set(summary.stages) >= {"decode", "compute", "write", "idle"}
    assert summary.stages["compute"] > 0 and summary.stages["decode"] > 0 and summary.stages["write"] > 0
    assert summary.images_per_s > 0 and summary_dict(summary)["stages"] == dict(summary.stages)


def test_partial_batches_go_before_memory_fills(tmp_path, make_image, backend):
    """Every image a different size: buckets never fill, so the oldest goes out as a partial batch once more than
    4 * batch images wait; decoded images held stay bounded however long the folder is."""
    src = tmp_path / "sizes"
    for i in range(30):
        save_rgb(make_image(8 + i, 9), src / f"s{i:02d}.png")
    pulled = []
    loader = PilLoader(workers=1, depth=1)

    def counting(items):
        for d in loader(items):
            pulled.append(d.item)
            yield d

    seen_at_compute = []

    class Recording:
        device = backend.device

        def __call__(self, x):
            seen_at_compute.append(len(pulled))
            return backend(x)

    summary = denoise_folder(src, tmp_path / "out", Recording(), RunConfig(batch=2, loader="pil"), loader=counting)
    assert summary.ok == 30
    # pulled - computed = waiting in buckets (<= 4 * batch + 1) + the prefetch queue (2 * batch) + the loader's one
    assert max(seen - k for k, seen in enumerate(seen_at_compute)) <= (4 * 2 + 1) + 2 * 2 + 2


# ---- the batching policy, without images ----------------------------------------------------------------------------


def test_batches_group_equal_keys_and_send_each_full_batch_at_once():
    from collections import Counter

    from fastdenoise.pipeline.batching import batches

    keys = np.random.default_rng(3).choice(["a", "b", "c"], size=40).tolist()
    out = list(batches(enumerate(keys), key=lambda it: it[1], size=3, limit=100))
    assert sorted(i for g in out for i, _ in g) == list(range(40))  # every item once
    assert all(len({k for _, k in g}) == 1 for g in out)  # one key per batch
    counts = Counter(keys)
    rest = [n % 3 for n in counts.values() if n % 3]
    streamed, flushed = out[: len(out) - len(rest)], out[len(out) - len(rest) :]
    assert all(len(g) == 3 for g in streamed) and sorted(len(g) for g in flushed) == sorted(rest)
    for group in streamed:  # a full batch goes out as its third item arrives: its items are the key's next three
        key, first = group[0][1], group[0][0]
        assert [i for i, _ in group] == [i for i, k in enumerate(keys) if k == key and i >= first][:3]


def test_batches_flush_the_oldest_bucket_when_too_many_wait_and_send_none_keys_alone():
    from fastdenoise.pipeline.batching import batches

    stream = [(0, "a"), (1, "b"), (2, None), (3, "c"), (4, "b"), (5, "d"), (6, "a")]
    emitted, seen = [], []

    def watched():
        for item in stream:
            seen.append(item[0])
            yield item

    for group in batches(watched(), key=lambda it: it[1], size=4, limit=3):
        emitted.append(([i for i, _ in group], seen[-1]))
    # (group, last item read when it went out): None goes at once; 4 waiting > 3 -> the oldest bucket ("a") goes
    assert emitted == [([2], 2), ([0], 4), ([1, 4], 5), ([3], 6), ([5], 6), ([6], 6)]


def test_batches_of_one_size_keep_input_order_within_a_key():
    from fastdenoise.pipeline.batching import batches

    rng = np.random.default_rng(11)
    items = [(i, int(k)) for i, k in enumerate(rng.integers(0, 4, 50))]
    groups = list(batches(items, key=lambda it: it[1], size=5, limit=12))
    for group in groups:
        indices = [i for i, _ in group]
        assert indices == sorted(indices) and 1 <= len(group) <= 5
    assert sum(len(g) for g in groups) == 50
