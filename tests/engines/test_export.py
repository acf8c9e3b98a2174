"""ONNX export: dynamic batch/height/width, padding and crop in the graph, fp16/bf16 variants, heads and cascades."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from fastdenoise.engines.export import (
    INPUT,
    OUTPUT,
    PROBE_SHAPES,
    Cascade,
    ExportError,
    export_cascade,
    export_denoiser,
    export_onnx,
    onnx_metadata,
    onnx_session,
    verify_onnx,
)
from fastdenoise.models.denoiser import Denoiser, fold_bn

ODD_SHAPES = [(2, 3, 37, 53), (1, 3, 32, 48), (3, 3, 17, 9), (1, 3, 1, 6), (2, 3, 70, 41)]


class StandInHead(nn.Module):
    """A small classifier shaped like the real heads: [0, 1] RGB (N, 3, H, W) -> logits (N, 10), any H x W."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU6()
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x - self.mean)
        return self.classifier(features.mean(dim=(2, 3)))


@functools.cache
def session(path: Path):
    return onnx_session(path)


def run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    (y,) = session(path).run([OUTPUT], {INPUT: x.numpy()})
    return torch.from_numpy(y)


def dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_denoiser_onnx_is_checker_clean_with_dynamic_batch_height_width(denoiser_onnx: Path) -> None:
    proto = onnx.load(str(denoiser_onnx))
    onnx.checker.check_model(proto, full_check=True)
    assert dims(proto.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(proto.graph.output[0]) == ["batch", 3, "height", "width"]
    ops = {node.op_type for node in proto.graph.node}
    assert "BatchNormalization" not in ops  # folded before export
    assert {"Pad", "Slice"} <= ops  # replicate padding to a multiple of 4, then the crop
    assert onnx_metadata(denoiser_onnx)["kind"] == "denoiser"


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_denoiser_onnx_matches_eager_on_odd_sizes(denoiser: Denoiser, denoiser_onnx: Path, shape: tuple) -> None:
    x = torch.rand(shape)
    with torch.no_grad():
        expected = denoiser(x)
    got = run_onnx(denoiser_onnx, x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_example_that_would_drop_the_padding_branch_is_refused(denoiser: Denoiser, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="multiples of 4"):
        export_denoiser(denoiser, tmp_path / "d.onnx", example=torch.rand(2, 3, 32, 48))
    with pytest.raises(ExportError, match="batch must be >= 2"):
        export_denoiser(denoiser, tmp_path / "d.onnx", example=torch.rand(1, 3, 37, 53))


def test_verify_onnx_catches_a_graph_without_the_padding_branch(
    denoiser: Denoiser, denoiser_onnx: Path, tmp_path: Path
) -> None:
    """What an export with a multiple-of-4 example gives: the graph without its Pad node. verify_onnx must refuse it."""
    proto = onnx.load(str(denoiser_onnx))
    pad = next(node for node in proto.graph.node if node.op_type == "Pad")
    for node in proto.graph.node:
        node.input[:] = [pad.input[0] if name == pad.output[0] else name for name in node.input]
    proto.graph.node.remove(pad)
    path = tmp_path / "unpadded.onnx"
    onnx.save(proto, str(path))
    folded = fold_bn(denoiser)
    with pytest.raises(ExportError, match="does not generalise"):
        verify_onnx(path, folded, PROBE_SHAPES, 1e-4)
    assert verify_onnx(path, folded, ((2, 3, 20, 28),), 1e-4) < 1e-4  # multiples of 4 still pass


def test_fp16_export_has_casts_at_the_edges_and_half_weights(denoiser: Denoiser, tmp_path: Path) -> None:
    path = export_denoiser(denoiser, tmp_path / "d16.onnx", dtype=torch.float16)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    casts = {n.input[0]: n for n in proto.graph.node if n.op_type == "Cast"}
    assert casts[INPUT].attribute[0].i == onnx.TensorProto.FLOAT16
    last = next(n for n in proto.graph.node if OUTPUT in n.output)
    assert last.op_type == "Cast" and last.attribute[0].i == onnx.TensorProto.FLOAT
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    types = {init.data_type for init in proto.graph.initializer if init.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}
    assert onnx_metadata(path)["precision"] == "fp16"
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        expected = denoiser(x)
    assert (run_onnx(path, x) - expected).abs().max() < 2e-2


def test_bf16_export_is_checker_clean_at_opset_22(denoiser: Denoiser, tmp_path: Path) -> None:
    """onnxruntime has no bfloat16 convolutions, so this variant is checked structurally only."""
    path = export_denoiser(denoiser, tmp_path / "dbf16.onnx", dtype=torch.bfloat16)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 22
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    assert {i.data_type for i in proto.graph.initializer if i.name in conv_weights} == {onnx.TensorProto.BFLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(proto.graph.input[0]) == ["batch", 3, "height", "width"]


def test_torchscript_exporter_also_keeps_padding_and_crop_dynamic(denoiser: Denoiser, tmp_path: Path) -> None:
    """The fallback exporter (for heads torch.export cannot trace symbolically) must generalise just as well."""
    path = export_denoiser(denoiser, tmp_path / "ts.onnx", exporter="torchscript")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert dims(proto.graph.input[0]) == dims(proto.graph.output[0]) == ["batch", 3, "height", "width"]
    for shape in [(2, 3, 37, 53), (1, 3, 32, 48), (3, 3, 17, 9)]:
        x = torch.rand(shape)
        with torch.no_grad():
            expected = denoiser(x)
        torch.testing.assert_close(run_onnx(path, x), expected, atol=2e-5, rtol=1e-4)
    with pytest.raises(ExportError, match="opset 20"):
        export_denoiser(denoiser, tmp_path / "ts16.onnx", dtype=torch.bfloat16, exporter="torchscript")


@pytest.mark.slow  # the cascade test below exports a head too; this one checks it alone (pytest -m slow)
def test_head_alone_exports_with_dynamic_shapes(tmp_path: Path) -> None:
    head = StandInHead().eval()
    path = export_onnx(head, tmp_path / "head.onnx", kind="head")
    for shape in [(2, 3, 37, 53), (5, 3, 64, 31)]:
        x = torch.rand(shape)
        with torch.no_grad():
            expected = head(x)
        got = run_onnx(path, x)
        assert got.shape == (shape[0], 10)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_cascade_denoiser_to_head_is_one_graph_matching_eager(denoiser: Denoiser, tmp_path: Path) -> None:
    head = StandInHead().eval()
    path = export_cascade(denoiser, head, tmp_path / "cascade.onnx")
    proto = onnx.load(str(path))
    assert len(proto.graph.input) == 1 and len(proto.graph.output) == 1
    assert onnx_metadata(path)["kind"] == "cascade"
    cascade = Cascade(fold_bn(denoiser), head).eval()
    for shape in [(2, 3, 37, 53), (3, 3, 29, 18)]:
        x = torch.rand(shape)
        with torch.no_grad():
            expected = head(denoiser(x))
            assert torch.allclose(cascade(x), expected, atol=1e-4)
        got = run_onnx(path, x)
        assert got.shape == (shape[0], 10)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=2e-4, rtol=1e-4)


def test_engines_import_neither_trainer_nor_cli_nor_heavy_optional_packages() -> None:
    code = (
        "import sys, fastdenoise.engines.export, fastdenoise.engines.build, fastdenoise.engines.runtime\n"
        "bad = [m for m in ('fastdenoise.training.fit', 'fastdenoise.cli', 'tensorrt', 'onnxruntime', 'onnx') "
        "if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_bound_noise_map_denoiser_exports_with_its_level_and_matches_eager(tmp_path: Path) -> None:
    from helpers import SMALL, randomize_bn

    from fastdenoise.engines.export import weights_sha256
    from fastdenoise.models.denoiser import bind_sigma, with_noise_map

    model = with_noise_map(randomize_bn(Denoiser(SMALL))).eval()
    torch.nn.init.normal_(model.conv0[0].weight[:, 3:], std=0.5)  # the level matters, as after training
    low, high = fold_bn(bind_sigma(model, 15.0)), fold_bn(bind_sigma(model, 50.0))
    assert weights_sha256(low) != weights_sha256(high)  # caches keyed by the digest keep the two apart
    path = export_denoiser(high, tmp_path / "high.onnx")
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        expected, other = high(x), low(x)
    got = run_onnx(path, x)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(got, other, atol=1e-3)
