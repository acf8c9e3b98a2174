"""load_head: every name builds a frozen-friendly head with task, num_classes and class_names; clear errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fastdenoise.models.heads import HeadName, load_head
from fastdenoise.training.joint import freeze

# VGG-16 (138M parameters) has its own tests; Lite1/2 differ from Lite0 only in scaling, tested on their own.
SMALL = [h for h in HeadName if h not in (HeadName.VGG16, HeadName.EFFICIENTNET_LITE1, HeadName.EFFICIENTNET_LITE2)]


@pytest.mark.parametrize("name", SMALL, ids=[h.value for h in SMALL])
def test_every_head_is_frozen_friendly_and_describes_itself(name):
    head = freeze(load_head(name.value, pretrained=False))
    assert head.task in ("classify", "segment") and not head.training
    assert head.class_names is None or len(head.class_names) == head.num_classes
    x = torch.rand(2, 3, 32, 48, requires_grad=True)
    out = head(x)
    expected = (2, head.num_classes) if head.task == "classify" else (2, head.num_classes, 32, 48)
    assert out.shape == expected
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the input (the denoiser's output) ...
    assert all(p.grad is None for p in head.parameters())  # ... and nothing else


def test_lite_variants_by_name():
    assert [load_head(f"efficientnet-lite{v}", pretrained=False).variant for v in (0, 1, 2)] == [0, 1, 2]


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="efficientnet-lite0, .*torchvision:<model>"):
        load_head("resnet9000")


def test_espnetv2_without_weights_or_data_dir_says_what_to_pass(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTDENOISE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no shared data folder here or above (datasets.data_root)
    with pytest.raises(ValueError, match="FASTDENOISE_DATA"):
        load_head("espnetv2-voc")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_torchvision_heads_say_what_to_install():
    with pytest.raises(ImportError, match="pip install torchvision"):
        load_head("torchvision:resnet18", pretrained=False)
