"""deconv2x (4x4 stride-2 transposed conv as 4 sub-pixel convs) against F.conv_transpose2d, every dtype."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fastdenoise.kernels.deconv2x import deconv2x, pack_weight, reference

# (C_in, C_out, H, W, relu): odd sizes, a 1x1 input (every tap but one is padding), C_out above one tile.
CASES = {"odd": (8, 4, 5, 7, True), "wide_k": (40, 8, 3, 4, True), "single_pixel": (5, 36, 1, 1, False)}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference_in_its_channel_slice(case: str, dtype, device, tolerance) -> None:
    c_in, c_out, h, w, relu = CASES[case]
    x = torch.randn(2, h, w, c_in, device=device).to(dtype)
    weight = (torch.randn(c_in, c_out, 4, 4) / (4 * c_in) ** 0.5).to(device, dtype)
    bias = torch.randn(c_out, device=device)
    buffer = torch.randn(2, 2 * h, 2 * w, c_out + 5, device=device).to(dtype)  # [deconv | 5 skip channels]
    before = buffer.clone()

    out = deconv2x(x, pack_weight(weight), bias, relu=relu, out=buffer[..., :c_out])

    expected = reference(x.cpu(), weight.cpu(), bias.cpu(), relu=relu)
    assert out.data_ptr() == buffer.data_ptr() and out.dtype == dtype
    torch.testing.assert_close(buffer[..., :c_out].float().cpu(), expected, **tolerance)
    assert torch.equal(buffer[..., c_out:], before[..., c_out:])


def test_allocates_contiguous_output(device) -> None:
    x = torch.randn(3, 4, 6, 8, device=device)
    weight, bias = torch.randn(8, 16, 4, 4, device=device) / 6, torch.randn(16, device=device)

    out = deconv2x(x, pack_weight(weight), bias)

    assert out.shape == (3, 8, 12, 16) and out.is_contiguous() and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), reference(x.cpu(), weight.cpu(), bias.cpu()), atol=1e-4, rtol=1e-4)


def test_rejects_bad_arguments(device) -> None:
    x = torch.randn(1, 3, 5, 8, device=device)
    bias = torch.randn(4, device=device)
    with pytest.raises(ValueError, match="4x4"):
        pack_weight(torch.randn(8, 4, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        deconv2x(x, pack_weight(torch.randn(6, 4, 4, 4, device=device)), bias)
    with pytest.raises(ValueError, match="out must be"):
        weight = pack_weight(torch.randn(8, 4, 4, 4, device=device))
        deconv2x(x, weight, bias, out=torch.empty(1, 6, 9, 4, device=device))
