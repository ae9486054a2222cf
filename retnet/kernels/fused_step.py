"""The retention part of one decode step, fused around the state pass: two launches per layer instead of ~6.

    numer  = state_pass(q, k, v, S)                 S <- gamma S + kr^T v in place, numer = qr S       (B, H, dv)
    gated  = epilogue(numer, q, k, g, z)            z <- gamma z + kr in place,
                                                    o = numer / max(|qr . z|, row_norm[h]),
                                                    gated = silu(g) * head_norm(o)                    (B, H*dv)

The epilogue runs one program per (b, h): it sees the whole dv row, so the per-head norm needs no cross-program
reduction, and it runs after every program of the state pass has read the old z, so it can update z in place
(the state pass alone would need a scratch buffer and a copy back, because each of its dv-block programs reads
the old z). It replaces, per layer: layer_norm(o), .to(bf16), silu(g), the multiply, and the k_sum copy-back.

Rounding follows `MultiScaleRetention._gate_and_project`: the normed o is rounded to g's dtype, silu(g) is
rounded to g's dtype, their product is rounded once more.

`retention_step_torch` is the naive twin of the whole thing (recurrent_step_torch + torch norm and gate).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from retnet.kernels import triton_available
from retnet.kernels.recurrent_step import recurrent_step_torch, state_pass_triton

HEAD_NORMS = ("layernorm", "rmsnorm")
# model-level step kernels: "torch" (reference), "triton" (this module + fused add/norm), "triton-statepass" (the
# pre-issue-#16 path: the Triton state pass, the rest of the layer in torch; kept for A/B profiling)
MODEL_STEP_KERNELS = ("torch", "triton", "triton-statepass")


def head_norm_gate_torch(o: Tensor, g: Tensor, head_norm: str, eps: float) -> Tensor:
    """o (B, H, dv) fp32 retention output, g (B, H*dv) gate pre-activation -> silu(g) * norm(o) (B, H*dv), g.dtype."""
    norm = F.layer_norm if head_norm == "layernorm" else F.rms_norm
    o = norm(o, (o.shape[-1],), eps=eps).to(g.dtype).flatten(-2)  # (B, H*dv)
    return F.silu(g) * o


def retention_step_torch(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, kv: Tensor, k_sum: Tensor,
    cos: Tensor, sin: Tensor, log_decay: Tensor, row_norm: Tensor, k_scale: float, head_norm: str, eps: float,
) -> Tensor:
    """Reference. q, k (B, H, dk), v (B, H, dv), g (B, H*dv); kv (B, H, dk, dv) and k_sum (B, H, dk) updated in
    place; tables as `recurrent_step_torch`. Returns the gated retention output (B, H*dv) in g's dtype."""
    o = recurrent_step_torch(q, k, v, kv, k_sum, k_sum, cos, sin, log_decay, row_norm, k_scale)  # (B, H, dv)
    return head_norm_gate_torch(o, g, head_norm, eps)


if triton_available():
    import triton
    import triton.language as tl

    from retnet.kernels.recurrent_step import rotated_qk

    @triton.jit
    def _epilogue_kernel(
        numer_ptr, q_ptr, k_ptr, g_ptr, k_sum_ptr, out_ptr,
        cos_ptr, sin_ptr, log_decay_ptr, row_norm_ptr,
        k_scale, eps, H,
        stride_qb, stride_qh, stride_kb, stride_kh, stride_gb, stride_ob,
        HALF_DK: tl.constexpr, DV: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_DV: tl.constexpr,
        RMS: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)  # b * H + h
        b = pid_bh // H
        h = pid_bh % H
        pair = tl.arange(0, BLOCK_P)
        pair_ok = pair < HALF_DK
        qr_even, qr_odd, kr_even, kr_odd = rotated_qk(
            q_ptr + b * stride_qb + h * stride_qh, k_ptr + b * stride_kb + h * stride_kh, cos_ptr, sin_ptr, pair,
            pair_ok, k_scale)
        gamma = tl.exp(tl.load(log_decay_ptr + h).to(tl.float32))

        # key sum: read, decay, add, write back in place (the denominator uses the unrounded fp32 value)
        z_row = k_sum_ptr + pid_bh * (2 * HALF_DK)
        z_even = tl.load(z_row + 2 * pair, mask=pair_ok, other=0.0).to(tl.float32) * gamma + kr_even
        z_odd = tl.load(z_row + 2 * pair + 1, mask=pair_ok, other=0.0).to(tl.float32) * gamma + kr_odd
        z_ty = k_sum_ptr.dtype.element_ty
        tl.store(z_row + 2 * pair, z_even.to(z_ty), mask=pair_ok)
        tl.store(z_row + 2 * pair + 1, z_odd.to(z_ty), mask=pair_ok)
        u = tl.sum(qr_even * z_even, axis=0) + tl.sum(qr_odd * z_odd, axis=0)
        denom = tl.maximum(tl.abs(u), tl.load(row_norm_ptr + h).to(tl.float32))

        cols = tl.arange(0, BLOCK_DV)
        col_ok = cols < DV
        o = tl.load(numer_ptr + pid_bh * DV + cols, mask=col_ok, other=0.0) / denom  # (BLOCK_DV,) fp32
        if RMS:
            centred = o
        else:
            centred = tl.where(col_ok, o - tl.sum(o, axis=0) / DV, 0.0)
        normed = centred / tl.sqrt(tl.sum(centred * centred, axis=0) / DV + eps)
        out_ty = out_ptr.dtype.element_ty
        g = tl.load(g_ptr + b * stride_gb + h * DV + cols, mask=col_ok, other=0.0).to(tl.float32)
        silu = (g / (1.0 + tl.exp(-g))).to(out_ty).to(tl.float32)
        gated = silu * normed.to(out_ty).to(tl.float32)
        tl.store(out_ptr + b * stride_ob + h * DV + cols, gated.to(out_ty), mask=col_ok)


def retention_epilogue_triton(
    numer: Tensor, q: Tensor, k: Tensor, g: Tensor, k_sum: Tensor,
    cos: Tensor, sin: Tensor, log_decay: Tensor, row_norm: Tensor, k_scale: float, head_norm: str, eps: float,
) -> Tensor:
    """numer (B, H, dv) fp32 contiguous from `state_pass_triton`; k_sum (B, H, dk) contiguous, updated in place;
    q, k, g with a unit last stride. Returns silu(g) * head_norm(numer / denom) (B, H*dv) in g's dtype."""
    if not triton_available():
        raise RuntimeError("retention_epilogue_triton needs the triton package")
    if head_norm not in HEAD_NORMS:
        raise ValueError(f"head_norm={head_norm!r}; expected one of {HEAD_NORMS}")
    B, H, dk = q.shape
    dv = numer.shape[-1]
    if not (numer.is_contiguous() and k_sum.is_contiguous()):
        raise ValueError("numer and k_sum must be contiguous")
    if not (q.stride(-1) == k.stride(-1) == g.stride(-1) == 1):
        raise ValueError("q, k, g need a unit last stride")
    out = torch.empty(B, H * dv, device=g.device, dtype=g.dtype)  # (B, H*dv)
    block_dv = triton.next_power_of_2(dv)
    f32 = dict(dtype=torch.float32)
    _epilogue_kernel[(B * H,)](
        numer, q, k, g, k_sum, out,
        cos.to(**f32).contiguous(), sin.to(**f32).contiguous(),
        log_decay.to(**f32).contiguous(), row_norm.to(**f32).contiguous(),
        float(k_scale), float(eps), H,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), g.stride(0), out.stride(0),
        HALF_DK=dk // 2, DV=dv, BLOCK_P=triton.next_power_of_2(dk // 2), BLOCK_DV=block_dv,
        RMS=head_norm == "rmsnorm", num_warps=4 if block_dv <= 1024 else 8,
    )
    return out


def retention_step_triton(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, kv: Tensor, k_sum: Tensor,
    cos: Tensor, sin: Tensor, log_decay: Tensor, row_norm: Tensor, k_scale: float, head_norm: str, eps: float,
) -> Tensor:
    """Fused twin of `retention_step_torch` (same contract): the state pass, then the epilogue. Two launches."""
    numer = state_pass_triton(q, k, v, kv, cos, sin, log_decay, k_scale)  # (B, H, dv) fp32
    return retention_epilogue_triton(numer, q, k, g, k_sum, cos, sin, log_decay, row_norm, k_scale, head_norm, eps)


def retention_step(kernel: str, *args, **kwargs) -> Tensor:
    """Dispatch by name ("torch" | "triton"); arguments as `retention_step_torch`."""
    if kernel == "torch":
        return retention_step_torch(*args, **kwargs)
    if kernel == "triton":
        return retention_step_triton(*args, **kwargs)
    raise ValueError(f"unknown retention step kernel {kernel!r}; expected 'torch' or 'triton'")
