"""fastdenoise.files, .devices and .datasets: the one atomic write, digest, dtype map, data-folder rule and parsers."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

from fastdenoise.datasets import data_root, load_mask, read_labels, require_data_root
from fastdenoise.devices import DTYPES, dtype_of, resolve_amp
from fastdenoise.files import atomic_file, atomic_write, sha256_file


def test_atomic_write_replaces_whole_and_leaves_nothing_on_failure(tmp_path, rng):
    path = tmp_path / "sub" / "out.bin"
    first, second = rng.bytes(3000), rng.bytes(5000)
    atomic_write(path, lambda handle: handle.write(first))
    assert path.read_bytes() == first and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    def torn(handle):
        handle.write(second[:100])
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, torn)
    assert path.read_bytes() == first and sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]


def test_atomic_file_takes_a_name_too_long_for_the_temporary_suffix(tmp_path):
    path = tmp_path / ("n" * 246 + ".txt")
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write("résumé")
    assert path.read_text(encoding="utf-8") == "résumé" and os.listdir(tmp_path) == [path.name]


def test_single_writer_temporary_name_replaces_a_leftover_and_never_follows_a_link(tmp_path, rng):
    path, elsewhere = tmp_path / "out.png", tmp_path / "elsewhere.txt"
    (tmp_path / ".out.png.part").write_bytes(b"torn by a kill")
    data = rng.bytes(64)
    atomic_write(path, lambda handle: handle.write(data), unique=False)
    assert path.read_bytes() == data and sorted(os.listdir(tmp_path)) == ["out.png"]
    elsewhere.write_text("keep")
    os.symlink(elsewhere, tmp_path / ".out.png.part")  # planted at the temporary name
    atomic_write(path, lambda handle: handle.write(data[::-1]), unique=False)
    assert path.read_bytes() == data[::-1] and elsewhere.read_text() == "keep"


def test_sha256_file_matches_hashlib_across_blocks(tmp_path, rng):
    data = rng.bytes((1 << 20) + 17)  # one whole block and a partial one
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_precision_names_map_to_dtypes_and_bad_names_are_refused():
    cpu = torch.device("cpu")
    assert {name: dtype_of(name, cpu) for name in DTYPES} == DTYPES
    assert resolve_amp("off", cpu) is None and resolve_amp("fp16", cpu) == torch.float16
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        dtype_of("fp64", cpu)


def test_data_root_is_the_marked_folder_above_the_data(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTDENOISE_DATA", raising=False)
    data = tmp_path / "shared" / "data" / "kodak24"
    data.mkdir(parents=True)
    assert data_root(data) is None
    with pytest.raises(FileNotFoundError, match="set FASTDENOISE_DATA"):
        require_data_root(data)
    (tmp_path / "shared" / "data" / "SHA256SUMS").write_text("")
    assert data_root(data) == tmp_path / "shared" / "data"
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")  # a checkout beside shared/: ../shared/data
    assert data_root() == tmp_path / "shared" / "data"
    monkeypatch.setenv("FASTDENOISE_DATA", str(tmp_path / "elsewhere"))
    assert data_root(data) == tmp_path / "elsewhere"


def test_labels_csv_rows_and_errors(tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text("file,index\nb.png,7\na.png,3\n")
    assert read_labels(good) == [("b.png", 7), ("a.png", 3)]
    (tmp_path / "bad.csv").write_text("file,index\na.png,cat\n")
    with pytest.raises(ValueError, match="bad.csv: a row's index is not an integer"):
        read_labels(tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("a.png,3\n")
    with pytest.raises(ValueError, match="nohead.csv: expected a CSV with a header 'file,index'"):
        read_labels(tmp_path / "nohead.csv")


def test_mask_loads_as_class_map_of_the_image_shape(tmp_path, rng):
    from PIL import Image

    labels = rng.integers(0, 12, (9, 13), dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "m.png")
    assert np.array_equal(load_mask(tmp_path / "m.png", (9, 13)), labels)
    with pytest.raises(ValueError, match=r"m.png: mask \(9, 13\) is not a single-channel \(13, 9\) class map"):
        load_mask(tmp_path / "m.png", (13, 9))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
