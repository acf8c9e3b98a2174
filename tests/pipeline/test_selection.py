"""The megapixels a run predicts from its inputs' headers (the probe budget of `--backend auto`)."""

from __future__ import annotations

import numpy as np
import pytest

from fastdenoise.images import Entry, save_rgb
from fastdenoise.pipeline.selection import list_inputs, predicted_megapixels


def test_predicted_megapixels_reads_headers_and_extrapolates_a_sample(tmp_path, make_image) -> None:
    rng = np.random.default_rng(7)
    sizes = [(int(rng.integers(20, 90)), int(rng.integers(20, 90))) for _ in range(12)]
    for i, (h, w) in enumerate(sizes):
        save_rgb(make_image(h, w), tmp_path / f"{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    entries = list(list_inputs(tmp_path))
    exact = sum(h * w for h, w in sizes) / 1e6

    assert predicted_megapixels(entries) == pytest.approx(exact)
    sampled = predicted_megapixels(entries, sample=4)  # every third image, times 12
    assert sampled == pytest.approx(sum(h * w for h, w in sizes[::3]) / 1e6 * 3)
    assert predicted_megapixels([Entry(tmp_path / "gone.png", "gone.png")]) == 0.0
    assert predicted_megapixels([]) == 0.0
