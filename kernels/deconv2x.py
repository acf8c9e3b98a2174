"""4x4 stride-2 transposed convolution (exact 2x upsampling) as four 2x2 sub-pixel convolutions, bias + ReLU fused.

Output pixel (2j + ry, 2i + rx) only ever sees kernel taps ky = 3 - ry - 2ty and input rows j + ry - 1 + ty for
ty in {0, 1} (same for x), so each of the four phases (ry, rx) is a dense 2x2 convolution: no zero-stuffed input.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from fastdenoise.kernels._triton import dot_settings, round_to_output, tl, triton, tune

# Layers: 128 -> 32 (K = 512) and 256 -> 64 (K = 1024); C_out is at most 64 here, wider tiles are pruned.
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
]

# TAPS[r][t]: the kernel row (or column) that phase r reads through sub-pixel tap t.
TAPS = ((3, 1), (2, 0))


@tune(CONFIGS, key=["C_in", "C_out", "M_BUCKET"])
@triton.jit
def deconv2x_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    M,
    H,
    W,
    C_in,
    C_out,
    K,
    M_BUCKET,
    stride_xn,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_on,
    stride_oh,
    stride_ow,
    stride_oc,
    RELU: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[n, 2j+ry, 2i+rx, :] = act(sum_k x[n, j+dy, i+dx, c] w[ry, rx, k, :] + b), k = (ty, tx, c), dy = ry-1+ty.

    x (N, H, W, C_in) and out (N, 2H, 2W, C_out): any strides (out is usually a channel slice of the concatenation
    buffer, so the concat is free). w (4, 4*C_in, C_out) contiguous, phase-major; b (C_out,) fp32.
    Grid axis 1 is the phase. Traffic per tile: read BLOCK_M*4*C_in activations (each input pixel is used by 4
    phases x 4 taps, mostly from L2), 4*C_in*BLOCK_N weights; write BLOCK_M*BLOCK_N, at every other output column.
    """
    pid = tl.program_id(0)
    phase = tl.program_id(1)
    ry = phase // 2
    rx = phase % 2
    num_pid_n = tl.cdiv(C_out, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixels (n, j, i) = output pixels of this phase
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < C_out
    i = offs_m % W
    j = (offs_m // W) % H
    n = (offs_m // (W * H)).to(tl.int64)
    x_rows = x_ptr + n * stride_xn + j.to(tl.int64) * stride_xh + i * stride_xw  # (BLOCK_M,) at (j, i)
    w_phase = w_ptr + phase * K * C_out

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        c = offs_k % C_in
        tap = offs_k // C_in
        dy = ry - 1 + tap // 2  # in {-1, 0} for ry = 0, {0, 1} for ry = 1
        dx = rx - 1 + tap % 2
        ih = j[:, None] + dy[None, :]
        iw = i[:, None] + dx[None, :]
        mask = mask_m[:, None] & mask_k[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_offs = (dy * stride_xh + dx * stride_xw + c * stride_xc)[None, :]
        x_tile = tl.load(x_rows[:, None] + x_offs, mask=mask, other=0.0)  # (BLOCK_M, BLOCK_K)
        w_tile = tl.load(
            w_phase + offs_k[:, None] * C_out + offs_n[None, :], mask=mask_k[:, None] & mask_n[None, :], other=0.0
        )  # (BLOCK_K, BLOCK_N)
        x_tile = x_tile.to(w_tile.dtype)
        if UPCAST:
            x_tile = x_tile.to(tl.float32)
            w_tile = w_tile.to(tl.float32)
        acc = tl.dot(x_tile, w_tile, acc, input_precision=DOT_PRECISION)

    acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    oh = (2 * j + ry).to(tl.int64)
    ow = 2 * i + rx
    out_rows = out_ptr + n * stride_on + oh * stride_oh + ow * stride_ow
    mask = mask_m[:, None] & mask_n[None, :]
    tl.store(out_rows[:, None] + offs_n[None, :] * stride_oc, round_to_output(acc, out_ptr), mask=mask)


def pack_weight(weight: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """nn.ConvTranspose2d weight (C_in, C_out, 4, 4) -> contiguous (4, 4*C_in, C_out): per phase (ry, rx),
    rows (ty, tx, c) holding weight[c, :, TAPS[ry][ty], TAPS[rx][tx]]."""
    if weight.shape[2:] != (4, 4):
        raise ValueError(f"expected a 4x4 transposed-conv weight, got {tuple(weight.shape)}")
    taps = torch.tensor(TAPS, device=weight.device)
    by_tap = weight.detach().permute(2, 3, 0, 1)  # (ky, kx, C_in, C_out)
    packed = by_tap[taps[:, None, :, None], taps[None, :, None, :]]  # (ry, rx, ty, tx, C_in, C_out)
    c_in, c_out = weight.shape[:2]
    return packed.reshape(4, 4 * c_in, c_out).to(dtype or weight.dtype).contiguous()


def deconv2x(x: Tensor, weight: Tensor, bias: Tensor, *, relu: bool = True, out: Tensor | None = None) -> Tensor:
    """act(conv_transpose2d(x, weight, stride=2, padding=1) + bias) on NHWC tensors; weight from `pack_weight`.

    x (N, H, W, C_in), any float dtype and strides; math in weight.dtype, fp32 accumulation.
    out: a (N, 2H, 2W, C_out) view to write (a channel slice of the concat buffer), else new, contiguous, weight.dtype.
    """
    if x.dim() != 4 or weight.dim() != 3 or weight.shape[0] != 4:
        raise ValueError(f"expected NHWC x and (4, 4*C_in, C_out) weight, got {tuple(x.shape)}, {tuple(weight.shape)}")
    batch, h, w, c_in = x.shape
    k, c_out = weight.shape[1:]
    if k != 4 * c_in:
        raise ValueError(f"x has {c_in} channels, weight expects {k // 4}")
    if not weight.is_contiguous() or not weight.is_floating_point():
        raise ValueError("weight must be a contiguous float tensor from pack_weight")
    if bias.shape != (c_out,) or bias.dtype != torch.float32:
        raise ValueError(f"bias must be float32 of shape ({c_out},), got {bias.dtype} {tuple(bias.shape)}")
    if out is None:
        out = torch.empty((batch, 2 * h, 2 * w, c_out), device=x.device, dtype=weight.dtype)
    elif tuple(out.shape) != (batch, 2 * h, 2 * w, c_out):
        raise ValueError(f"out must be ({batch}, {2 * h}, {2 * w}, {c_out}), got {tuple(out.shape)}")
    if any(t.device != x.device for t in (weight, bias, out)):
        raise ValueError("x, weight, bias and out must be on one device")
    if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        raise ValueError("out must not share memory with x")
    m = batch * h * w
    if m == 0:
        return out

    precision, upcast = dot_settings(weight.dtype)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(c_out, meta["BLOCK_N"]), 4)
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        deconv2x_kernel[grid](
            x,
            weight,
            bias,
            out,
            m,
            h,
            w,
            c_in,
            c_out,
            k,
            m.bit_length(),
            *x.stride(),
            *out.stride(),
            RELU=relu,
            DOT_PRECISION=precision,
            UPCAST=upcast,
        )
    return out


def reference(x: Tensor, weight: Tensor, bias: Tensor, *, relu: bool = True) -> Tensor:
    """What `deconv2x` computes, in plain fp32 PyTorch: NHWC x, nn.ConvTranspose2d weight (C_in, C_out, 4, 4).

    x is first rounded to weight.dtype, as the kernel does. Returns fp32 (N, 2H, 2W, C_out).
    """
    x_nchw = x.to(weight.dtype).float().permute(0, 3, 1, 2)
    y = F.conv_transpose2d(x_nchw, weight.float(), bias.float(), stride=2, padding=1).permute(0, 2, 3, 1)
    return F.relu(y) if relu else y
