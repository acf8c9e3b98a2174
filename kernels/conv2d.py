"""Implicit-GEMM NHWC convolution, bias + optional residual add + ReLU fused in one kernel (BN folded beforehand)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from fastdenoise.kernels._triton import dot_settings, round_to_output, tl, triton, tune

# GPU search space. BLOCK_N=16/32 serve the narrow layers (head: C_out=3, bottleneck reduce: 32); `tune` drops tiles
# wider than the layer. fp16/bf16 tiles of 128x128x64 in 3 stages use 96 KiB of shared memory.
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 16, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 16, "BLOCK_K": 64}, num_warps=4, num_stages=3),
]


# M_BUCKET (log2 of the pixel count) is only an autotune key: one tuning per layer and size class, not per image size.
@tune(CONFIGS, key=["C_in", "C_out", "KH", "STRIDE", "M_BUCKET"])
@triton.jit
def conv2d_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    r_ptr,
    out_ptr,
    M,
    H,
    W,
    C_in,
    H_out,
    W_out,
    C_out,
    K,
    M_BUCKET,
    stride_xn,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_rn,
    stride_rh,
    stride_rw,
    stride_rc,
    stride_on,
    stride_oh,
    stride_ow,
    stride_oc,
    KH: tl.constexpr,
    KW: tl.constexpr,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RELU: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[m, n] = act(sum_k x[m, k] w[k, n] + b[n] (+ r[m, n])) with m = (n, oh, ow) and k = (kh, kw, c).

    x (N, H, W, C_in), r and out (N, H_out, W_out, C_out): any strides, so channel slices of a concatenation buffer and
    NCHW tensors seen as NHWC both work. w (KH*KW*C_in, C_out) contiguous; b (C_out,) fp32.
    Traffic per BLOCK_M x BLOCK_N tile: read BLOCK_M*K activations (each input pixel is re-read by up to
    KH*KW/STRIDE^2 neighbouring rows, from L1/L2), K*BLOCK_N weights (L2-resident: at most 295 KiB in fp16),
    C_out biases; read BLOCK_M*BLOCK_N residuals if any; write BLOCK_M*BLOCK_N. No intermediate touches DRAM.
    """
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(C_out, BLOCK_N)
    pid_m = pid // num_pid_n  # the N tiles of one pixel block run next to each other and share its x reads in L2
    pid_n = pid % num_pid_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels, flattened (n, oh, ow)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
    mask_m = offs_m < M
    mask_n = offs_n < C_out
    ow = offs_m % W_out
    oh = (offs_m // W_out) % H_out
    n = (offs_m // (W_out * H_out)).to(tl.int64)  # int64: batch offsets of 4 MP x 128 channels pass 2^31
    ih0 = oh * STRIDE - PAD
    iw0 = ow * STRIDE - PAD
    x_rows = x_ptr + n * stride_xn + ih0.to(tl.int64) * stride_xh + iw0 * stride_xw  # (BLOCK_M,) at tap (0, 0)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # K is (kh, kw, c) flattened, the packed weight's row order: C_in=3 (conv0: K=75) fills the K lanes too.
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        c = offs_k % C_in
        tap = offs_k // C_in
        kh = tap // KW
        kw = tap % KW
        ih = ih0[:, None] + kh[None, :]
        iw = iw0[:, None] + kw[None, :]
        # zero padding = masked loads; the address is (pixel part) + (k part), only the bounds test is 2-D
        mask = mask_m[:, None] & mask_k[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_offs = (kh * stride_xh + kw * stride_xw + c * stride_xc)[None, :]
        x_tile = tl.load(x_rows[:, None] + x_offs, mask=mask, other=0.0)  # (BLOCK_M, BLOCK_K)
        w_tile = tl.load(
            w_ptr + offs_k[:, None] * C_out + offs_n[None, :], mask=mask_k[:, None] & mask_n[None, :], other=0.0
        )  # (BLOCK_K, BLOCK_N)
        x_tile = x_tile.to(w_tile.dtype)  # conv0 reads the fp32 input image directly
        if UPCAST:
            x_tile = x_tile.to(tl.float32)
            w_tile = w_tile.to(tl.float32)
        acc = tl.dot(x_tile, w_tile, acc, input_precision=DOT_PRECISION)

    # Epilogue in fp32 registers: bias, residual, ReLU, one rounding to the output dtype.
    acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if HAS_RESIDUAL:
        r_rows = r_ptr + n * stride_rn + oh.to(tl.int64) * stride_rh + ow * stride_rw
        acc += tl.load(r_rows[:, None] + offs_n[None, :] * stride_rc, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    out_rows = out_ptr + n * stride_on + oh.to(tl.int64) * stride_oh + ow * stride_ow
    tl.store(out_rows[:, None] + offs_n[None, :] * stride_oc, round_to_output(acc, out_ptr), mask=mask)


def pack_weight(weight: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """nn.Conv2d weight (C_out, C_in, KH, KW) -> contiguous (KH, KW, C_in, C_out), the GEMM's K x N operand."""
    return weight.detach().permute(2, 3, 1, 0).to(dtype or weight.dtype).contiguous()


def output_size(size: int, kernel: int, stride: int) -> int:
    """Output length of a 'same'-padded (kernel // 2) convolution."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def shares_memory(a: Tensor, b: Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    *,
    stride: int = 1,
    relu: bool = False,
    residual: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """act(conv(x, weight, padding=k//2) + bias (+ residual)) on NHWC tensors; weight from `pack_weight`.

    x (N, H, W, C_in) of any float dtype and strides; the math runs in weight.dtype with fp32 accumulation.
    out: a (N, H_out', W_out', C_out) view to write (e.g. a channel slice of a concat buffer; H_out' <= H_out crops),
    else a new contiguous tensor in weight.dtype. residual: same shape as out.
    """
    if x.dim() != 4 or weight.dim() != 4:
        shapes = f"{tuple(x.shape)}, {tuple(weight.shape)}"
        raise ValueError(f"expected NHWC x and (KH, KW, C_in, C_out) weight, got {shapes}")
    batch, h, w, c_in = x.shape
    kh, kw, c_w, c_out = weight.shape
    if c_w != c_in:
        raise ValueError(f"x has {c_in} channels, weight expects {c_w}")
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"kernel must be square with an odd size, got {kh}x{kw}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not weight.is_contiguous() or not weight.is_floating_point():
        raise ValueError("weight must be a contiguous float tensor from pack_weight")
    if bias.shape != (c_out,) or bias.dtype != torch.float32:
        raise ValueError(f"bias must be float32 of shape ({c_out},), got {bias.dtype} {tuple(bias.shape)}")
    h_out, w_out = output_size(h, kh, stride), output_size(w, kw, stride)
    if out is None:
        out = torch.empty((batch, h_out, w_out, c_out), device=x.device, dtype=weight.dtype)
    elif not (out.dim() == 4 and out.shape[0] == batch and out.shape[3] == c_out) or (
        out.shape[1] > h_out or out.shape[2] > w_out
    ):
        raise ValueError(f"out must be ({batch}, <={h_out}, <={w_out}, {c_out}), got {tuple(out.shape)}")
    if residual is not None and residual.shape != out.shape:
        raise ValueError(f"residual must have out's shape {tuple(out.shape)}, got {tuple(residual.shape)}")
    operands = [x, weight, bias, out] + ([residual] if residual is not None else [])
    if any(t.device != x.device for t in operands):
        raise ValueError("x, weight, bias, residual and out must be on one device")
    # Programs read neighbours that other programs overwrite, and autotuning runs the kernel repeatedly.
    if shares_memory(out, x) or (residual is not None and shares_memory(out, residual)):
        raise ValueError("out must not share memory with x or residual")
    m = batch * out.shape[1] * out.shape[2]
    if m == 0:
        return out

    r = residual if residual is not None else out  # never read when HAS_RESIDUAL is False
    precision, upcast = dot_settings(weight.dtype)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(c_out, meta["BLOCK_N"]),)
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        conv2d_kernel[grid](
            x,
            weight,
            bias,
            r,
            out,
            m,
            h,
            w,
            c_in,
            out.shape[1],
            out.shape[2],
            c_out,
            kh * kw * c_in,
            m.bit_length(),
            *x.stride(),
            *r.stride(),
            *out.stride(),
            KH=kh,
            KW=kw,
            STRIDE=stride,
            PAD=kh // 2,
            HAS_RESIDUAL=residual is not None,
            RELU=relu,
            DOT_PRECISION=precision,
            UPCAST=upcast,
        )
    return out


def reference(
    x: Tensor, weight: Tensor, bias: Tensor, *, stride: int = 1, relu: bool = False, residual: Tensor | None = None
) -> Tensor:
    """What `conv2d` computes, in plain fp32 PyTorch: NHWC x, nn.Conv2d-layout weight (C_out, C_in, KH, KW).

    x is first rounded to weight.dtype, as the kernel does. Returns fp32 (N, H_out, W_out, C_out); crop to compare
    with a cropped `out`.
    """
    x_nchw = x.to(weight.dtype).float().permute(0, 3, 1, 2)
    y = F.conv2d(x_nchw, weight.float(), bias.float(), stride=stride, padding=weight.shape[-1] // 2).permute(0, 2, 3, 1)
    if residual is not None:
        y = y[:, : residual.shape[1], : residual.shape[2]] + residual.float()
    return F.relu(y) if relu else y
