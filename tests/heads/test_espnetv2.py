"""ESPNetv2: the EdgeNets weights load strictly, Cityscapes->CamVid segments CamVid, VOC finds a dog; any input size."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fastdenoise.models.heads import load_head
from fastdenoise.models.heads.espnetv2 import (
    CAMVID_VOID,
    CITYSCAPES_CLASSES,
    CITYSCAPES_TO_CAMVID,
    PYRAMID_SCALES,
    VOC_CLASSES,
    ESPNetv2,
    MergeClasses,
    matrix_avg_pool,
    pyramid_size,
)
from fastdenoise.training.joint import confusion, mean_iou


def weights(data_dir: Path, name: str) -> Path:
    path = data_dir / "weights" / "espnetv2" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


@pytest.mark.data
def test_model_has_exactly_the_released_keys_and_shapes(data_dir):
    listing = weights(data_dir, "state_dict_keys.txt").read_text().splitlines()
    released = {}
    for line in listing:
        key, shape = line.split("\t")[:2]
        released[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    ours = {k: tuple(v.shape) for k, v in ESPNetv2(21).state_dict().items()}
    assert ours == released


@pytest.mark.data
def test_both_weight_files_load_strictly(data_dir):
    voc = load_head("espnetv2-voc", weights(data_dir, "espnetv2_s_2.0_pascal_384x384.pth"))
    city = load_head("espnetv2-cityscapes", weights(data_dir, "espnetv2_s_2.0_city_1024x512.pth"))
    assert (voc.num_classes, voc.class_names) == (21, VOC_CLASSES) and voc.task == "segment" and not voc.training
    assert (city.num_classes, city.class_names) == (20, CITYSCAPES_CLASSES)


@pytest.mark.data
def test_cityscapes_model_segments_camvid_through_the_class_mapping(data_dir):
    head = load_head("espnetv2-camvid", weights(data_dir, "espnetv2_s_2.0_city_1024x512.pth"))
    assert head.num_classes == 11
    names = sorted(p.name for p in (data_dir / "camvid" / "val").iterdir())[25::50]  # 2 frames, 100 apart
    counts = torch.zeros(11, 11, dtype=torch.long)
    for name in names:
        image = np.array(Image.open(data_dir / "camvid" / "val" / name).convert("RGB"))
        mask = torch.from_numpy(np.array(Image.open(data_dir / "camvid" / "valannot" / name)))
        with torch.no_grad():
            logits = head(to_tensor(image))
        assert logits.shape == (1, 11, 360, 480)
        counts += confusion(logits.argmax(1)[0], mask, 11, CAMVID_VOID)
    miou, iou = mean_iou(counts)
    pixel_accuracy = counts.diag().sum() / counts.sum()
    assert miou > 0.35 and pixel_accuracy > 0.8  # 0.49 and 0.86 here; 0.55 mIoU on 25 val images
    assert iou[0] > 0.8 and iou[3] > 0.8  # sky and road


@pytest.mark.data
def test_voc_model_finds_the_dog_in_a_photo(data_dir):
    head = load_head("espnetv2-voc", weights(data_dir, "espnetv2_s_2.0_pascal_384x384.pth"))
    path = data_dir / "imagenet-samples" / "n02088364_beagle.JPEG"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    image = np.array(Image.open(path).convert("RGB").resize((384, 384)))
    with torch.no_grad():
        pred = head(to_tensor(image)).argmax(1)[0]
    dog = VOC_CLASSES.index("dog")
    assert (pred == dog).float().mean() > 0.4
    assert torch.bincount(pred[96:288, 96:288].flatten(), minlength=21).argmax() == dog  # the centre is dog
    assert (pred[:8] == 0).float().mean() > 0.5 or (pred[-8:] == 0).float().mean() > 0.5  # some border is background


@pytest.mark.parametrize("size", [(70, 90), (33, 47)])
def test_any_input_size_gives_logits_at_that_size(size):
    head = ESPNetv2(20).eval()
    with torch.no_grad():
        assert head(torch.rand(1, 3, *size)).shape == (1, 20, *size)


def test_merged_classes_sum_the_probabilities_of_their_members():
    class Fixed(torch.nn.Module):
        num_classes = 20

        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.randn(2, 20, 5, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits

    fixed = Fixed()
    merged = MergeClasses(fixed, CITYSCAPES_TO_CAMVID, tuple(f"c{i}" for i in range(11)))
    probs = fixed.logits.softmax(1)
    kept = torch.stack(
        [probs[:, [i for i, c in enumerate(CITYSCAPES_TO_CAMVID) if c == k]].sum(1) for k in range(11)], 1
    )
    assert torch.allclose(merged(torch.rand(1)).softmax(1), kept / kept.sum(1, keepdim=True), atol=1e-6)
    with pytest.raises(ValueError, match="entries"):
        MergeClasses(fixed, (0, 1), ("a", "b"))


def test_pyramid_sizes_equal_the_released_float_formula():
    """Integer arithmetic (exact and symbolic in an export) against EdgeNets' max(5, ceil(n * scale)) in floats."""
    for num, den in PYRAMID_SCALES:
        for n in range(1, 4000):
            assert pyramid_size(n, (num, den)) == max(5, math.ceil(n * (num / den))), (num, den, n)


@pytest.mark.parametrize(
    ("size_in", "size_out"),
    [((7, 9), (5, 5)), ((30, 45), (20, 13)), ((3, 4), (5, 5)), ((61, 60), (6, 7)), ((1, 6), (5, 3))],
)
def test_matrix_pooling_equals_adaptive_average_pooling_up_and_down(size_in, size_out):
    x = torch.randn(2, 3, *size_in)
    torch.testing.assert_close(matrix_avg_pool(x, size_out), F.adaptive_avg_pool2d(x, size_out), atol=1e-6, rtol=1e-5)
