"""One recurrent retention step for all heads of one layer: torch reference and a fused Triton kernel.

Per (batch b, head h), with gamma = exp(log_decay[h]):

    qr, kr = theta_shift(q), theta_shift(k) * k_scale          rotated query / scaled key (dk,)
    S     <- gamma * S + kr^T v                                  state (dk, dv), updated in place
    z_out  = gamma * z + kr                                      key sum (dk,), written to a separate buffer
    o      = (qr S) / max(|qr . z_out|, row_norm[h])             (dv,)

The torch reference reads/writes S about five times (mul_, baddbmm_, matmul). The Triton kernel runs one program
per (b, h, block of dv columns): it reads its S block once, writes the new block once and returns o from the new
block, i.e. two passes over the state, which is what bounds a decode step at large batch. z is written to
`k_sum_out` rather than in place because every dv-block program of a head reads the old z.

`state_pass_triton` is the same kernel without the key sum: it returns the unnormalised read-out qr S and leaves
z, the denominator, the head norm and the gate to one small kernel after it (`retnet.kernels.fused_step`), which
can update z in place (it runs after every program of the pass) so no scratch buffer or copy-back is needed.

A bf16/fp16 state is read, updated in fp32 and rounded once per step; the read-out uses the rounded values.

The launch config (BLOCK_V, num_warps) is autotuned on the device on the first call per (B*H, dk, dv, dtypes), i.e.
in the model's warm-up steps, before a CUDA graph is captured; benchmarking restores the in-place state.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import Tensor

from retnet.kernels import triton_available
from retnet.retention import theta_shift

STEP_KERNELS = ("torch", "triton")


def _output_dtype(state_dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(state_dtype, torch.float32)


def _state_pass_torch(
    q: Tensor, k: Tensor, v: Tensor, kv: Tensor, cos: Tensor, sin: Tensor, log_decay: Tensor, k_scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """kv updated in place; returns (q S (B, H, dv), qr, kr (B, H, dk), gamma (H, 1)), all in fp32 (or fp64)."""
    B, H, dk = q.shape
    dv = v.shape[-1]
    dt = _output_dtype(kv.dtype)
    qr = theta_shift(q.to(dt), cos.to(dt), sin.to(dt))  # (B, H, dk)
    kr = theta_shift(k.to(dt), cos.to(dt), sin.to(dt)) * k_scale
    gamma = log_decay.to(dt).exp()[:, None]  # (H, 1)
    if kv.dtype == dt:  # in place, no state-sized temporary
        kv.mul_(gamma[..., None])
        kv.view(B * H, dk, dv).baddbmm_(kr.reshape(B * H, dk, 1), v.reshape(B * H, 1, dv).to(dt))
    else:  # a bf16/fp16 state is updated in fp32 and rounded once, as the Triton kernel does (rounding gamma
        # itself to bf16 would turn 1 - 1/512 into 1.0, i.e. no decay at all)
        kv.copy_(kv.to(dt) * gamma[..., None] + kr.unsqueeze(-1) * v.to(dt).unsqueeze(-2))
    numer = (qr.unsqueeze(-2) @ kv.to(dt)).squeeze(-2)  # (B, H, dv), read out of the state as stored
    return numer, qr, kr, gamma


def state_pass_torch(
    q: Tensor, k: Tensor, v: Tensor, kv: Tensor, cos: Tensor, sin: Tensor, log_decay: Tensor, k_scale: float
) -> Tensor:
    """Reference of `state_pass_triton`: kv updated in place, returns the unnormalised read-out q S (B, H, dv)."""
    return _state_pass_torch(q, k, v, kv, cos, sin, log_decay, k_scale)[0]


def recurrent_step_torch(
    q: Tensor, k: Tensor, v: Tensor, kv: Tensor, k_sum: Tensor, k_sum_out: Tensor,
    cos: Tensor, sin: Tensor, log_decay: Tensor, row_norm: Tensor, k_scale: float,
) -> Tensor:
    """Reference step. q, k (B, H, dk) not yet rotated, v (B, H, dv), any float dtype and strides;
    kv (B, H, dk, dv) contiguous state, updated in place; k_sum (B, H, dk) read; k_sum_out (B, H, dk) written
    (may be k_sum itself); cos, sin (dk/2,); log_decay, row_norm (H,). Returns o (B, H, dv) in fp32 (or fp64)."""
    numer, qr, kr, gamma = _state_pass_torch(q, k, v, kv, cos, sin, log_decay, k_scale)
    dt = numer.dtype
    z = k_sum.to(dt) * gamma + kr  # (B, H, dk)
    k_sum_out.copy_(z)
    denom = (qr * z).sum(-1, keepdim=True).abs().maximum(row_norm.to(dt)[:, None])  # (B, H, 1)
    return numer / denom


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def rotated_qk(q_row, k_row, cos_ptr, sin_ptr, pair, pair_ok, k_scale):
        """theta_shift of one head's q and k (rows 2i, 2i+1 rotated by angle i), k scaled: fp32 (qr_even, qr_odd,
        kr_even, kr_odd), each (BLOCK_P,). Shared by the state pass and the fused step's epilogue."""
        cos = tl.load(cos_ptr + pair, mask=pair_ok, other=0.0)
        sin = tl.load(sin_ptr + pair, mask=pair_ok, other=0.0)
        q_even = tl.load(q_row + 2 * pair, mask=pair_ok, other=0.0).to(tl.float32)
        q_odd = tl.load(q_row + 2 * pair + 1, mask=pair_ok, other=0.0).to(tl.float32)
        k_even = tl.load(k_row + 2 * pair, mask=pair_ok, other=0.0).to(tl.float32)
        k_odd = tl.load(k_row + 2 * pair + 1, mask=pair_ok, other=0.0).to(tl.float32)
        qr_even = q_even * cos - q_odd * sin
        qr_odd = q_odd * cos + q_even * sin
        kr_even = (k_even * cos - k_odd * sin) * k_scale
        kr_odd = (k_odd * cos + k_even * sin) * k_scale
        return qr_even, qr_odd, kr_even, kr_odd

    @triton.jit
    def _recurrent_step_jit(
        q_ptr, k_ptr, v_ptr, kv_ptr, k_sum_ptr, k_sum_out_ptr, o_ptr,
        cos_ptr, sin_ptr, log_decay_ptr, row_norm_ptr,
        k_scale, H, BH,
        stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
        HALF_DK: tl.constexpr, DV: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_V: tl.constexpr,
        NORMALISE: tl.constexpr,
    ):
        # BH = B * H is unused in the body: it is an autotuning key (the number of heads sets the program count)
        # NORMALISE=False: o gets the unnormalised read-out q S and k_sum is not touched (the epilogue kernel of
        # retnet.kernels.fused_step divides, updates the key sum in place and applies the head norm and gate)
        pid_bh = tl.program_id(0)  # b * H + h
        pid_v = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        pair = tl.arange(0, BLOCK_P)  # rotated pair i covers rows 2i, 2i+1
        pair_ok = pair < HALF_DK
        cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < DV

        qr_even, qr_odd, kr_even, kr_odd = rotated_qk(
            q_ptr + b * stride_qb + h * stride_qh, k_ptr + b * stride_kb + h * stride_kh, cos_ptr, sin_ptr, pair,
            pair_ok, k_scale)
        v = tl.load(v_ptr + b * stride_vb + h * stride_vh + cols, mask=col_ok, other=0.0).to(tl.float32)
        gamma = tl.exp(tl.load(log_decay_ptr + h).to(tl.float32))

        # the one read and the one write of this state block (streamed: nothing re-reads it this step)
        state_ty = kv_ptr.dtype.element_ty
        block_ok = pair_ok[:, None] & col_ok[None, :]
        even_ptrs = kv_ptr + pid_bh * (2 * HALF_DK * DV) + (2 * pair)[:, None] * DV + cols[None, :]
        odd_ptrs = even_ptrs + DV
        s_even = tl.load(even_ptrs, mask=block_ok, other=0.0, eviction_policy="evict_first").to(tl.float32)
        s_odd = tl.load(odd_ptrs, mask=block_ok, other=0.0, eviction_policy="evict_first").to(tl.float32)
        # updated in fp32, rounded once to the state dtype; the read-out uses the state as stored (a no-op for fp32)
        s_even = (s_even * gamma + kr_even[:, None] * v[None, :]).to(state_ty)
        s_odd = (s_odd * gamma + kr_odd[:, None] * v[None, :]).to(state_ty)
        tl.store(even_ptrs, s_even, mask=block_ok)
        tl.store(odd_ptrs, s_odd, mask=block_ok)
        numer = tl.sum(qr_even[:, None] * s_even.to(tl.float32), axis=0) + tl.sum(
            qr_odd[:, None] * s_odd.to(tl.float32), axis=0)  # (BLOCK_V,)

        if NORMALISE:
            z_row = pid_bh * (2 * HALF_DK)
            z_even = tl.load(k_sum_ptr + z_row + 2 * pair, mask=pair_ok, other=0.0).to(tl.float32) * gamma + kr_even
            z_odd = tl.load(k_sum_ptr + z_row + 2 * pair + 1, mask=pair_ok, other=0.0).to(tl.float32) * gamma + kr_odd
            u = tl.sum(qr_even * z_even, axis=0) + tl.sum(qr_odd * z_odd, axis=0)
            denom = tl.maximum(tl.abs(u), tl.load(row_norm_ptr + h).to(tl.float32))
            tl.store(o_ptr + pid_bh * DV + cols, numer / denom, mask=col_ok)

            first = pair_ok & (pid_v == 0)  # one program per head writes the new key sum
            out_ty = k_sum_out_ptr.dtype.element_ty
            tl.store(k_sum_out_ptr + z_row + 2 * pair, z_even.to(out_ty), mask=first)
            tl.store(k_sum_out_ptr + z_row + 2 * pair + 1, z_odd.to(out_ty), mask=first)
        else:
            tl.store(o_ptr + pid_bh * DV + cols, numer, mask=col_ok)


# ---- launch config: autotuned on the device on the first call per shape (warm-up, before any CUDA graph capture)
STATE_PASS_TUNING_KEY = ["BH", "HALF_DK", "DV"]  # the autotuner adds every tensor argument's dtype (the state's too)
_MAX_STATE_ELEMS_PER_THREAD = 128  # two (BLOCK_P, BLOCK_V) fp32 tiles per program; more than this spills registers


def _state_pass_configs() -> list:
    """BLOCK_V x num_warps candidates. num_stages is 1 throughout: the kernel has no loop to software-pipeline, so
    other values compile to the same code and would only multiply the tuning time. Under TRITON_INTERPRET=1 one
    config (narrow blocks: several dv blocks and a masked tail even at the tests' small dv) and no benchmarking."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({"BLOCK_V": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_V": bv}, num_warps=w, num_stages=1)
            for bv in (16, 32, 64, 128, 256) for w in (2, 4, 8)]


def _prune_state_pass_configs(configs: list, named_args: dict, **kwargs: Any) -> list:
    """Drop blocks wider than dv's power of two and tiles that would spill (> 128 state elements per thread); keeps
    at least the smallest tile so a launch always has a config."""
    dv_pow2 = triton.next_power_of_2(kwargs["DV"])
    tile_rows = 2 * kwargs["BLOCK_P"]  # even + odd rows
    fits = [c for c in configs if c.kwargs["BLOCK_V"] <= max(dv_pow2, 16)
            and tile_rows * c.kwargs["BLOCK_V"] <= _MAX_STATE_ELEMS_PER_THREAD * 32 * c.num_warps]
    if fits:
        return fits
    return [min(configs, key=lambda c: (c.kwargs["BLOCK_V"], -c.num_warps))]


def autotune_state_pass(configs: list, do_bench: Callable | None = None):
    """The autotuner of `_recurrent_step_jit`. The kernel updates kv IN PLACE, so every benchmarked launch restores
    it (restore_value: clone before, copy back after; the timings include that copy, a constant shared by all
    configs). o and k_sum_out need no restore: they are written from inputs that the kernel does not modify
    (k_sum_out must not alias k_sum). do_bench: a custom benchmark (the interpreter test uses one)."""
    return triton.autotune(
        configs=configs, key=STATE_PASS_TUNING_KEY, restore_value=["kv_ptr"],
        prune_configs_by={"early_config_prune": _prune_state_pass_configs}, do_bench=do_bench,
    )(_recurrent_step_jit)


if triton_available():
    _recurrent_step_kernel = autotune_state_pass(_state_pass_configs())


def state_pass_tuned_configs() -> dict:
    """Autotuning results so far: {tuning key (BH, HALF_DK, DV, dtypes...): chosen triton.Config} (for profiling)."""
    return dict(_recurrent_step_kernel.cache) if triton_available() else {}


def _launch_state_pass(
    q: Tensor, k: Tensor, v: Tensor, kv: Tensor, k_sum: Tensor | None, k_sum_out: Tensor | None,
    cos: Tensor, sin: Tensor, log_decay: Tensor, row_norm: Tensor | None, k_scale: float, kernel: Any = None,
) -> Tensor:
    """Checks and launches `_recurrent_step_kernel` (or `kernel`, another `autotune_state_pass` wrapper, for tests);
    k_sum None -> unnormalised read-out, key sum untouched."""
    if not triton_available():
        raise RuntimeError("step_kernel='triton' needs the triton package")
    B, H, dk = q.shape
    dv = v.shape[-1]
    if not (q.stride(-1) == k.stride(-1) == v.stride(-1) == 1):
        raise ValueError("q, k, v need a unit last stride")
    if not kv.is_contiguous():
        raise ValueError("kv must be contiguous")
    normalise = k_sum is not None
    if normalise:
        if not (k_sum.is_contiguous() and k_sum_out.is_contiguous()):
            raise ValueError("k_sum and k_sum_out must be contiguous")
        if k_sum_out.data_ptr() == k_sum.data_ptr():
            raise ValueError("k_sum_out must be a different buffer from k_sum")
    o = torch.empty(B, H, dv, device=q.device, dtype=_output_dtype(kv.dtype))  # (B, H, dv)
    half_dk = dk // 2
    grid = lambda meta: (B * H, triton.cdiv(dv, meta["BLOCK_V"]))  # noqa: E731  (BLOCK_V is the tuned one)
    f32 = dict(dtype=torch.float32)
    log_decay = log_decay.to(**f32).contiguous()
    (kernel or _recurrent_step_kernel)[grid](
        q, k, v, kv, k_sum if normalise else kv, k_sum_out if normalise else kv, o,
        cos.to(**f32).contiguous(), sin.to(**f32).contiguous(),
        log_decay, row_norm.to(**f32).contiguous() if normalise else log_decay,
        float(k_scale), H, B * H,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        HALF_DK=half_dk, DV=dv, BLOCK_P=triton.next_power_of_2(half_dk), NORMALISE=normalise,
    )
    return o


def recurrent_step_triton(
    q: Tensor, k: Tensor, v: Tensor, kv: Tensor, k_sum: Tensor, k_sum_out: Tensor,
    cos: Tensor, sin: Tensor, log_decay: Tensor, row_norm: Tensor, k_scale: float,
) -> Tensor:
    """Fused step, same contract as `recurrent_step_torch` except that k_sum_out must not alias k_sum.
    q, k, v need a unit last stride (slices of a fused projection are fine); fp32 tables (made contiguous here)."""
    return _launch_state_pass(q, k, v, kv, k_sum, k_sum_out, cos, sin, log_decay, row_norm, k_scale)


def state_pass_triton(q: Tensor, k: Tensor, v: Tensor, kv: Tensor, cos: Tensor, sin: Tensor, log_decay: Tensor,
                      k_scale: float) -> Tensor:
    """The state pass alone: S <- gamma S + kr^T v in place (one read, one write of kv), returns q S (B, H, dv) in
    fp32 without the denominator; the key sum and row norm are left to `retnet.kernels.fused_step`."""
    return _launch_state_pass(q, k, v, kv, None, None, cos, sin, log_decay, None, k_scale)


def recurrent_step(kernel: str, *args, **kwargs) -> Tensor:
    """Dispatch by name ("torch" | "triton"); arguments as `recurrent_step_torch`. (The model's "triton-statepass"
    step kernel is this "triton" state pass with the rest of the layer in torch.)"""
    if kernel == "torch":
        return recurrent_step_torch(*args, **kwargs)
    if kernel == "triton":
        return recurrent_step_triton(*args, **kwargs)
    raise ValueError(f"unknown step kernel {kernel!r}; expected one of {STEP_KERNELS}")
