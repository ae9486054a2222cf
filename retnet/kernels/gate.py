"""RetNet's retention read-out: per-head norm (no affine) then swish gate, `silu(g) * norm(o)`, as a torch reference
and one fused Triton kernel (forward and backward) for training and prefill.

Why: PyTorch runs it as norm + silu + mul (3 launches forward, ~5 backward) over (B, T, value_dim) and autograd keeps
the norm's output and silu(g) beside o and g (g as a view, which keeps the whole fused projection output alive). The
fused op keeps only o and a contiguous copy of g, and recomputes the row statistics in the backward pass.

    norm_gate(o, g, eps, rms=False) -> (..., H * dv) in g's dtype
      o (..., H, dv) retention output (any float dtype); g (..., H * dv) gate pre-activation (a projection's slice)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from retnet.kernels import triton_available


def norm_gate_torch(o: Tensor, g: Tensor, eps: float, rms: bool = False) -> Tensor:
    """Reference (the model's original read-out): norm in o's dtype, cast to g's dtype, then silu(g) * o."""
    dv = o.shape[-1]
    o = (F.rms_norm if rms else F.layer_norm)(o, (dv,), eps=eps).to(g.dtype).flatten(-2)  # (..., H * dv)
    return F.silu(g) * o


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _row_stats(o_row, d, ok, eps, DV: tl.constexpr, RMS: tl.constexpr):
        x = tl.load(o_row + d, mask=ok, other=0.0).to(tl.float32)
        if RMS:
            xc = x
        else:
            xc = tl.where(ok, x - tl.sum(x, axis=0) / DV, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / DV + eps)
        return xc * rstd, rstd

    @triton.jit
    def _norm_gate_fwd(o_ptr, g_ptr, out_ptr, g_keep_ptr, sg_row, eps, H: tl.constexpr, DV: tl.constexpr,
                       RMS: tl.constexpr, KEEP_G: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)  # (token, head): o is contiguous (rows, H, DV), g rows have stride sg_row
        tok = pid // H
        h = pid % H
        d = tl.arange(0, BLOCK)
        ok = d < DV
        on, _ = _row_stats(o_ptr + pid * DV, d, ok, eps, DV, RMS)
        g_raw = tl.load(g_ptr + tok * sg_row + h * DV + d, mask=ok, other=0.0)
        if KEEP_G:  # a contiguous copy of g for backward, so the projection g is a slice of can be freed
            tl.store(g_keep_ptr + pid * DV + d, g_raw, mask=ok)
        g = g_raw.to(tl.float32)
        out = g * tl.sigmoid(g) * on
        tl.store(out_ptr + pid * DV + d, out.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _norm_gate_bwd(grad_ptr, o_ptr, g_ptr, do_ptr, dg_ptr, sg_row, eps, H: tl.constexpr, DV: tl.constexpr,
                       RMS: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        tok = pid // H
        h = pid % H
        d = tl.arange(0, BLOCK)
        ok = d < DV
        on, rstd = _row_stats(o_ptr + pid * DV, d, ok, eps, DV, RMS)
        g = tl.load(g_ptr + tok * sg_row + h * DV + d, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(grad_ptr + pid * DV + d, mask=ok, other=0.0).to(tl.float32)
        sig = tl.sigmoid(g)
        dg = dy * on * sig * (1.0 + g * (1.0 - sig))  # d silu(g) / dg = sig (1 + g (1 - sig))
        d_on = dy * g * sig
        proj = tl.sum(d_on * on, axis=0) / DV
        if RMS:
            do = rstd * (d_on - on * proj)
        else:
            do = rstd * (d_on - tl.sum(d_on, axis=0) / DV - on * proj)
        tl.store(do_ptr + pid * DV + d, do.to(do_ptr.dtype.element_ty), mask=ok)
        tl.store(dg_ptr + pid * DV + d, dg.to(dg_ptr.dtype.element_ty), mask=ok)


def _rows(o: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """o as contiguous (rows, H, dv); g as (rows, H * dv) with a unit inner stride (a view where it can be)."""
    H, dv = o.shape[-2:]
    o2 = o.reshape(-1, H, dv).contiguous()
    g2 = g.reshape(-1, H * dv)
    return o2, (g2 if g2.stride(-1) == 1 else g2.contiguous())


def _forward(o2: Tensor, g2: Tensor, eps: float, rms: bool, keep_g: bool) -> tuple[Tensor, Tensor]:
    """(silu(g) * norm(o) as (rows, H * dv), g for backward). g is usually a slice of the fused q|k|v|g projection:
    saving that view would keep the whole projection output (3x g's size) alive until backward, so with keep_g the
    kernel also writes a contiguous copy of g, which is what gets saved (inference needs none)."""
    rows, H, dv = o2.shape
    out = torch.empty(rows, H * dv, device=g2.device, dtype=g2.dtype)
    keep = g2 if (g2.is_contiguous() or not keep_g) else torch.empty_like(g2, memory_format=torch.contiguous_format)
    block = triton.next_power_of_2(dv)
    _norm_gate_fwd[(rows * H,)](o2, g2, out, keep, g2.stride(0), eps, H=H, DV=dv, RMS=rms, KEEP_G=keep is not g2,
                                BLOCK=block, num_warps=4 if block <= 1024 else 8)
    return out, keep


class _NormGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, g, eps, rms):
        o2, g2 = _rows(o, g)
        out, keep = _forward(o2, g2, eps, rms, keep_g=True)
        ctx.save_for_backward(o2, keep)  # the statistics are recomputed in backward: nothing else is kept
        ctx.eps, ctx.rms, ctx.o_shape, ctx.g_shape = eps, rms, o.shape, g.shape
        return out.view(g.shape)

    @staticmethod
    def backward(ctx, grad):
        o2, g2 = ctx.saved_tensors
        rows, H, dv = o2.shape
        grad = grad.reshape(rows, H * dv).contiguous()
        do = torch.empty_like(o2)
        dg = torch.empty(rows, H * dv, device=g2.device, dtype=g2.dtype)
        block = triton.next_power_of_2(dv)
        _norm_gate_bwd[(rows * H,)](grad, o2, g2, do, dg, g2.stride(0), ctx.eps, H=H, DV=dv, RMS=ctx.rms,
                                    BLOCK=block, num_warps=4 if block <= 1024 else 8)
        return do.view(ctx.o_shape), dg.view(ctx.g_shape), None, None


def fusable(o: Tensor, g: Tensor) -> bool:
    """True when the Triton kernel takes these inputs: o (..., H, dv), g (..., H * dv) on the same leading shape,
    no fp64 (fp64 stays on the reference, which keeps fp64 maths)."""
    return (triton_available() and o.dim() >= 2 and g.shape == (*o.shape[:-2], o.shape[-2] * o.shape[-1])
            and torch.float64 not in (o.dtype, g.dtype))


def norm_gate(o: Tensor, g: Tensor, eps: float, rms: bool = False, fused: bool | None = None) -> Tensor:
    """See the module docstring. fused=None: the Triton kernel on CUDA when `fusable`, else the reference;
    fused=True forces the kernel where it can run (the interpreter tests on CPU)."""
    if fused is None:
        fused = o.is_cuda
    if fused and fusable(o, g):
        if torch.is_grad_enabled() and (o.requires_grad or g.requires_grad):
            return _NormGate.apply(o, g, float(eps), bool(rms))
        return _forward(*_rows(o, g), float(eps), bool(rms), keep_g=False)[0].view(g.shape)  # prefill: no copy of g
    return norm_gate_torch(o, g, eps, rms)


__all__ = ["norm_gate", "norm_gate_torch", "fusable"]
