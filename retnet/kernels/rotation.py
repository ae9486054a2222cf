"""Rotary rotation of queries/keys for training and prefill: a torch reference and one fused Triton kernel (forward
and backward), used by both models so that neither side of a comparison pays for an unfused rotation.

Why: in PyTorch the rotation is 5-9 elementwise launches per tensor (RetNet's interleaved form in fp32 also casts
q and k up and back), and autograd keeps their inputs for the backward pass. A rotation is linear, so its backward
is the inverse rotation of the incoming gradient: the fused op reads x once, writes the rotated x once, and saves
nothing but the shared cos/sin tables.

    rotate(x, cos, sin, interleaved=True, scale=1.0, out_dtype=None) -> x rotated (B, T, H, D), contiguous
      x (B, T, H, D) (any strides, last dim contiguous); cos, sin (T, D/2) tables (fp32 or fp64), angle i per pair
      interleaved=True: pairs (x[2i], x[2i+1]) (RetNet / torchscale `theta_shift`)
      interleaved=False: pairs (x[i], x[i + D/2]) (GPT-NeoX / Llama "rotate-half")
      scale multiplies the result (RetNet folds dk^-0.5 into the keys); maths in fp32 (fp64 for fp64 inputs on CPU).
"""
from __future__ import annotations

import torch
from torch import Tensor

from retnet.kernels import triton_available


def _pairs(x: Tensor, interleaved: bool) -> tuple[Tensor, Tensor]:
    if interleaved:
        p = x.unflatten(-1, (-1, 2))
        return p[..., 0], p[..., 1]
    return x.chunk(2, dim=-1)


def rotate_torch(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = True, scale: float = 1.0,
                 out_dtype: torch.dtype | None = None) -> Tensor:
    """Reference: the rotation in fp32 (fp64 when x or the tables are fp64), then scaled and cast to out_dtype
    (default x.dtype)."""
    dt = torch.promote_types(torch.promote_types(cos.dtype, x.dtype), torch.float32)
    a, b = _pairs(x.to(dt), interleaved)
    c, s = cos.to(dt)[:, None, :], sin.to(dt)[:, None, :]  # (T, 1, D/2): broadcast over batch and heads
    ra, rb = a * c - b * s, b * c + a * s
    out = torch.stack((ra, rb), dim=-1).flatten(-2) if interleaved else torch.cat((ra, rb), dim=-1)
    return (out * scale if scale != 1.0 else out).to(out_dtype or x.dtype)


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _rotate_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, T, sxb, sxt, sxh, sct, scale, sign,
                       H: tl.constexpr, HALF: tl.constexpr, INTERLEAVED: tl.constexpr, BLOCK: tl.constexpr):
        # one program per token (b, t): all heads' pairs; sign = -1 applies the inverse rotation (the backward)
        row = tl.program_id(0)
        b = row // T
        t = row % T
        p = tl.arange(0, BLOCK)  # pair index over heads: h * HALF + i
        ok = p < H * HALF
        h = p // HALF
        i = p % HALF
        if INTERLEAVED:
            ia, ib = 2 * i, 2 * i + 1
        else:
            ia, ib = i, i + HALF
        src = x_ptr + b * sxb + t * sxt + h * sxh
        xa = tl.load(src + ia, mask=ok, other=0.0).to(tl.float32)
        xb = tl.load(src + ib, mask=ok, other=0.0).to(tl.float32)
        c = tl.load(cos_ptr + t * sct + i, mask=ok, other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + t * sct + i, mask=ok, other=0.0).to(tl.float32) * sign
        dst = out_ptr + row * (H * 2 * HALF) + h * (2 * HALF)  # out is contiguous (B, T, H, D)
        ty = out_ptr.dtype.element_ty
        tl.store(dst + ia, ((xa * c - xb * s) * scale).to(ty), mask=ok)
        tl.store(dst + ib, ((xb * c + xa * s) * scale).to(ty), mask=ok)


def _launch(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, scale: float, sign: float,
            out_dtype: torch.dtype) -> Tensor:
    B, T, H, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty((B, T, H, D), device=x.device, dtype=out_dtype)
    half = D // 2
    block = triton.next_power_of_2(H * half)
    _rotate_kernel[(B * T,)](x, cos, sin, out, T, x.stride(0), x.stride(1), x.stride(2), cos.stride(0), scale, sign,
                             H=H, HALF=half, INTERLEAVED=interleaved, BLOCK=block, num_warps=4 if block <= 1024 else 8)
    return out


class _Rotate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin, interleaved, scale, out_dtype):
        ctx.save_for_backward(cos, sin)  # the tables only: the backward is the inverse rotation of the gradient
        ctx.interleaved, ctx.scale, ctx.x_dtype = interleaved, scale, x.dtype
        return _launch(x, cos, sin, interleaved, scale, 1.0, out_dtype)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _launch(grad, cos, sin, ctx.interleaved, ctx.scale, -1.0, ctx.x_dtype), None, None, None, None, None


def fusable(x: Tensor, cos: Tensor, sin: Tensor) -> bool:
    """True when the Triton kernel takes these inputs: (B, T, H, D) with D even, (T, D/2) tables of one stride,
    half or fp32 precision (fp64 stays on the reference, which computes in fp64)."""
    return (triton_available() and x.dim() == 4 and x.shape[-1] % 2 == 0 and x.dtype != torch.float64
            and cos.dim() == 2 and cos.shape == sin.shape == (x.shape[1], x.shape[-1] // 2)
            and cos.stride() == sin.stride() and cos.stride(-1) == 1 and cos.dtype in (torch.float32, torch.bfloat16))


def rotate(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = True, scale: float = 1.0,
           out_dtype: torch.dtype | None = None, fused: bool | None = None) -> Tensor:
    """See the module docstring. fused=None: the Triton kernel on CUDA when `fusable`, else the reference;
    fused=True forces the kernel where it can run (the interpreter tests on CPU)."""
    if fused is None:
        fused = x.is_cuda
    if fused and fusable(x, cos, sin):
        return _Rotate.apply(x, cos, sin, interleaved, float(scale), out_dtype or x.dtype)
    return rotate_torch(x, cos, sin, interleaved, scale, out_dtype)


__all__ = ["rotate", "rotate_torch", "fusable"]
