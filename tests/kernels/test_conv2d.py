"""conv2d kernel against its plain-PyTorch reference: every layer shape class, odd sizes, batch 2, every dtype."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fastdenoise.kernels.conv2d import conv2d, pack_weight, reference

# (kernel, stride, C_in, C_out, residual, relu): the net's layer classes with small widths.
CASES = {
    "conv0_5x5": (5, 1, 3, 8, False, True),
    "down_3x3_s2": (3, 2, 8, 16, False, True),
    "bottleneck_3x3": (3, 1, 5, 6, False, True),
    "reduce_1x1": (1, 1, 16, 8, False, True),
    "expand_1x1_residual": (1, 1, 8, 40, True, True),
    "head_3x3_residual": (3, 1, 40, 3, True, False),
}


def random_conv(c_in: int, c_out: int, kernel: int, dtype: torch.dtype, device: torch.device):
    weight = (torch.randn(c_out, c_in, kernel, kernel) / (c_in * kernel * kernel) ** 0.5).to(device, dtype)
    return weight, torch.randn(c_out, device=device)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case: str, dtype, device, tolerance) -> None:
    kernel, stride, c_in, c_out, has_residual, relu = CASES[case]
    x = torch.randn(2, 13, 19, c_in, device=device).to(dtype)
    weight, bias = random_conv(c_in, c_out, kernel, dtype, device)
    h_out, w_out = (13 - 1) // stride + 1, (19 - 1) // stride + 1
    residual = torch.randn(2, h_out, w_out, c_out, device=device).to(dtype) if has_residual else None

    out = conv2d(x, pack_weight(weight), bias, stride=stride, relu=relu, residual=residual)

    residual_cpu = residual.cpu() if residual is not None else None
    expected = reference(x.cpu(), weight.cpu(), bias.cpu(), stride=stride, relu=relu, residual=residual_cpu)
    assert out.dtype == dtype and out.shape == (2, h_out, w_out, c_out) and out.is_contiguous()
    torch.testing.assert_close(out.float().cpu(), expected, **tolerance)


def test_reads_fp32_nchw_and_writes_its_channel_slice(dtype, device, tolerance) -> None:
    """conv0's call: the fp32 NCHW image seen as NHWC, output into channels 4..12 of a concatenation buffer."""
    image = torch.rand(2, 3, 11, 17, device=device)
    weight, bias = random_conv(3, 8, 5, dtype, device)
    buffer = torch.randn(2, 11, 17, 12, device=device).to(dtype)
    before = buffer.clone()

    out = conv2d(image.permute(0, 2, 3, 1), pack_weight(weight), bias, relu=True, out=buffer[..., 4:])

    expected = reference(image.permute(0, 2, 3, 1).cpu(), weight.cpu(), bias.cpu(), relu=True)
    assert out.data_ptr() == buffer[..., 4:].data_ptr()
    torch.testing.assert_close(buffer[..., 4:].float().cpu(), expected, **tolerance)
    assert torch.equal(buffer[..., :4], before[..., :4])


def test_crops_into_fp32_nchw_with_residual(dtype, device, tolerance) -> None:
    """The head's call: padded 12x20 NHWC input, fp32 NCHW residual and output cropped to 9x17."""
    x = torch.randn(2, 12, 20, 24, device=device).to(dtype)
    weight, bias = random_conv(24, 3, 3, dtype, device)
    image = torch.rand(2, 3, 9, 17, device=device)
    out = torch.full((2, 3, 9, 17), float("nan"), device=device)

    conv2d(x, pack_weight(weight), bias, residual=image.permute(0, 2, 3, 1), out=out.permute(0, 2, 3, 1))

    expected = reference(x.cpu(), weight.cpu(), bias.cpu(), residual=image.permute(0, 2, 3, 1).cpu())
    torch.testing.assert_close(out.permute(0, 2, 3, 1).cpu(), expected, **tolerance)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_output_rounds_to_nearest_even(out_dtype: torch.dtype, device) -> None:
    """An fp32 identity 1x1 conv into a half-precision `out` must give exactly torch's rounding of x (tolerances
    cannot tell round-to-nearest from truncation, which is what triton 3.9's interpreter does for bf16)."""
    x = torch.randn(2, 5, 7, 16, device=device) * 10
    out = torch.empty(2, 5, 7, 16, device=device, dtype=out_dtype)

    conv2d(x, pack_weight(torch.eye(16, device=device)[:, :, None, None]), torch.zeros(16, device=device), out=out)

    assert torch.equal(out, x.to(out_dtype))


def test_rejects_bad_arguments(device) -> None:
    x = torch.randn(1, 6, 7, 4, device=device)
    weight = pack_weight(torch.randn(8, 4, 3, 3, device=device))
    bias = torch.randn(8, device=device)
    with pytest.raises(ValueError, match="channels"):
        conv2d(x[..., :3], weight, bias)
    with pytest.raises(ValueError, match="odd"):
        conv2d(x, pack_weight(torch.randn(8, 4, 2, 2, device=device)), bias)
    with pytest.raises(ValueError, match="bias"):
        conv2d(x, weight, bias.half())
    with pytest.raises(ValueError, match="out must be"):
        conv2d(x, weight, bias, out=torch.empty(1, 7, 7, 8, device=device))
    with pytest.raises(ValueError, match="residual"):
        conv2d(x, weight, bias, residual=torch.empty(1, 6, 7, 4, device=device))
    with pytest.raises(ValueError, match="share memory"):
        buffer = torch.empty(1, 6, 7, 12, device=device)
        conv2d(buffer[..., :4], weight, bias, out=buffer[..., 4:])
