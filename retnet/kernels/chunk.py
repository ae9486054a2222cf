"""Chunkwise retention kernels by name, for the parallel side (training, prefill, the op-level suite).

One signature for every kernel, in fla's `[B, T, H, d]` layout (what the projections give, so no transposes):

    o, final_state = chunk_retention(q, k, v, log_gamma, kernel=..., scale=1.0, initial_state=S0,
                                     output_final_state=True)
    o_n   = sum_{m <= n} gamma^(n-m) scale (q_n . k_m) v_m  +  gamma^(n+1) scale q_n S0     (B, T, H, dv)
    S_T   = gamma^T S0 + sum_m gamma^(T-1-m) k_m^T v_m                                     (B, H, dk, dv) fp32

This is the UNNORMALISED retention (no RetNet row-sum normaliser o_n / max(|u_n|, sqrt(c_n))). That normaliser
is a positive per-row scale and the per-head norm that follows retention in the model is invariant to it (up to
its eps), so the model feeds the head norm directly (see `retnet.model`); `key_sum` gives the decayed key sum
the decode step's normaliser needs after a fused prefill. Note the state holds k as given, unscaled: `scale`
multiplies q . k only (fla's convention); the model passes k already scaled by dk^-0.5 and scale=1.

Kernels:
  torch  the naive twin: `retnet.retention.chunkwise_retention` unnormalised, maths in fp32 (fp64 for fp64
         inputs), chunk `chunk_size`. The CPU path and the reference in the tests.
  fla    fla-core 0.6.0's `chunk_simple_gla` with the per-head log decay `g_gamma` (Triton, CUDA only). Not fla's
         `chunk_retention`, which hard-codes torchscale's decay 1 - 2^(-5-h). It tiles by its own 64-token chunk
         (its kernels are tuned for that; `chunk_size` is ignored), keeps its per-chunk states in the input
         dtype and returns the final state in fp32. Refused (ChunkKernelUnavailable) for a call a backward can
         follow where its backward is known to be wrong: see `fla_head_dim_problem`.
  fla-graphs  the same kernels; in the model's training step replayed from CUDA graphs, one pair per layer
         (`retnet.kernels.chunk_graphs`: fla's host cost per call gone). A call on its own here runs as `fla`: the
         graphs need the model's layer order.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from typing import Callable

import torch
from torch import Tensor

from retnet.retention import chunkwise_retention

CHUNK_KERNELS = ("torch", "fla", "fla-graphs")
FLA_KERNELS = ("fla", "fla-graphs")  # the kernels that run fla's chunk kernels (fla-graphs: replayed from graphs)
FLA_CHUNK = 64  # the tile fla's chunk kernels use by default (and are tuned for)
FLA_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_FLA_INSTALL = "pip install fla-core==0.6.0"
# fla's backward is wrong on Hopper with Triton 3.4.0 to 3.7.0 at small head dims. Measured on H200s with Triton 3.6.0
# (results/reference/h200/2026-11-29-probes-s12 and -s13), fla against the torch kernel, bf16, (dk, dv), every pair
# of configs of the two backward kernels forced in turn (tests/test_fla_head_dims.py, which replays the record):
#   dk < 64: `chunk_bwd_kernel_dqkwg` (dq, dk) is wrong under its 4-warp configs and right under its 2-warp ones:
#     dq RMS error 0.59-1.23 at (16, 32), (16, 64), (16, 128), (32, 64), (32, 128), and dk 3.2-11.8 where dv <= 64.
#   dv < 64: `chunk_bwd_kernel_dv` (dv) is wrong under its own 4-warp configs and right under its 2-warp ones, at
#     (64, 32) and (128, 32): dv RMS error 1.18-1.32 (no upstream report found).
#   The wrong values change with what ran before (the memory left behind), and (16, 128) once faulted (an
#   illegal memory access): reads of memory the kernel should not read, as a miscompile would give. The dq/dk part
#   may be the Triton bug of fla-org/flash-linear-attention#640 (fixed in Triton 3.7.1; fla 0.6.0 works around it only
#   in its gated path, not the g_gamma path retention uses); that was not shown.
#   fla's autotuner picks by speed, one config per machine, hence a shape right on one machine and wrong on the next.
#   dk, dv >= 64: right under every config pair that can launch at (64, 64), (64, 128), (128, 256) (errors ~3e-3).
#     (256, 512), the paper's heads, was right with the autotuner's pick (4 warps for both kernels) in every session;
#     not forced per config.
# So head dims below 64 (fla tiles them by their next power of 2: tiles of 16 and 32) are refused there for any call a
# backward can follow. The forward (o) was right at every shape, so a forward-only call with an explicit fla runs;
# `auto` asks about the backward (it cannot know) and takes torch. Other GPUs and Tritons were not measured: only
# Triton 3.6.0 was; the range below is assumed from #640's (affected from 3.4.0, fixed in 3.7.1), and the GPU test
# checks every shape as allowed on a Triton outside it (so a newer Triton that is still wrong fails that test).
FLA_HOPPER_MIN_HEAD_DIM = 64
TRITON_HOPPER_BUG = ((3, 4, 0), (3, 7, 1))  # [first affected, first fixed): assumed from #640, measured at 3.6.0


class ChunkKernelUnavailable(RuntimeError):
    """The named chunk kernel cannot run these inputs on this device and install; the message says why."""


@functools.cache
def _fla_chunk_simple_gla() -> tuple[Callable | None, str]:
    """(fla.ops.simple_gla.chunk_simple_gla, "") or (None, why it cannot be imported)."""
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as exc:  # missing, or broken against this torch/triton: either way unavailable
        return None, f"fla-core is not importable ({type(exc).__name__}: {exc}); {_FLA_INSTALL}"
    return chunk_simple_gla, ""


def fla_version() -> str | None:
    try:
        return importlib.metadata.version("fla-core")
    except importlib.metadata.PackageNotFoundError:
        return None


def _triton_version() -> tuple[int, ...] | None:
    try:
        import triton
    except Exception:  # noqa: BLE001 - not installed or broken: no Triton kernel runs at all
        return None
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", triton.__version__)  # "3.6.0", "3.7.1+git1a2b3c"
    return tuple(int(x or 0) for x in m.groups()) if m else None


def fla_head_dim_problem(head_dims: tuple[int, int], device: torch.device | str) -> str:
    """Why fla's chunk kernel must not run a call a backward can follow at head dims (dk, dv) on `device` ("" when
    it may): on a Hopper GPU with a Triton of the affected range, dk or dv below FLA_HOPPER_MIN_HEAD_DIM (see above)."""
    device = torch.device(device)
    dk, dv = head_dims
    if device.type != "cuda" or min(dk, dv) >= FLA_HOPPER_MIN_HEAD_DIM:
        return ""
    version = _triton_version()
    first, fixed = TRITON_HOPPER_BUG
    if version is None or not first <= version < fixed or torch.cuda.get_device_capability(device)[0] != 9:
        return ""
    wrong = ", ".join(w for w, d in (("dq, dk", dk), ("dv", dv)) if d < FLA_HOPPER_MIN_HEAD_DIM)
    why = "; dq, dk: likely the Triton miscompile of fla-org/flash-linear-attention#640" if dk < FLA_HOPPER_MIN_HEAD_DIM \
        else ""
    return (f"fla's chunk backward gives wrong {wrong} at head dims (dk, dv) = ({dk}, {dv}), below "
            f"{FLA_HOPPER_MIN_HEAD_DIM}, on Hopper with Triton {'.'.join(map(str, version))} (measured on the H200 "
            f"with Triton 3.6.0{why}): use the torch kernel")


def chunk_kernel_available(
    name: str, device: torch.device | str, head_dims: tuple[int, int] | None = None
) -> tuple[bool, str]:
    """Whether kernel `name` can run on `device`, and why not ("" when it can). With head dims (dk, dv), whether it
    can also run a backward there (what training needs; `auto` asks this)."""
    if name not in CHUNK_KERNELS:
        raise ValueError(f"chunk kernel {name!r}; expected one of {CHUNK_KERNELS}")
    if name == "torch":
        return True, ""
    if torch.device(device).type != "cuda":
        return False, "fla's chunk kernels are Triton GPU kernels (need a CUDA device)"
    fn, reason = _fla_chunk_simple_gla()
    if fn is not None and head_dims is not None:
        reason = fla_head_dim_problem(head_dims, device)
    return fn is not None and not reason, reason


def auto_chunk_kernel(device: torch.device | str, dtype: torch.dtype, head_dims: tuple[int, int] | None) -> str:
    """What `auto` means: fla for half-precision weights or compute on a GPU where it can also run the backward at
    these head dims (the model's, the training engine's and a suite's default choice alike), else torch."""
    half = dtype in (torch.bfloat16, torch.float16)
    return "fla" if half and chunk_kernel_available("fla", device, head_dims)[0] else "torch"


def chunk_retention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_gamma: Tensor,
    *,
    kernel: str,
    scale: float = 1.0,
    chunk_size: int = 512,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Unnormalised chunkwise retention with kernel `kernel` (see the module doc).

    q, k (B, T, H, dk); v (B, T, H, dv); log_gamma (H,) log of the per-head decay (any float dtype);
    initial_state (B, H, dk, dv) or None (zeros). Returns o (B, T, H, dv) in q's dtype and, when
    output_final_state, the state after the last token (B, H, dk, dv) in fp32 (fp64 for the torch kernel on fp64
    inputs), else None. Differentiable in q, k, v and initial_state for both kernels.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k (B, T, H, dk) and v (B, T, H, dv); got {q.shape}, {k.shape}, {v.shape}")
    if kernel == "torch":
        return _chunk_torch(q, k, v, log_gamma, scale, chunk_size, initial_state, output_final_state)
    if kernel in FLA_KERNELS:
        return _chunk_fla(q, k, v, log_gamma, scale, initial_state, output_final_state)
    raise ValueError(f"chunk kernel {kernel!r}; expected one of {CHUNK_KERNELS}")


def _chunk_torch(
    q: Tensor, k: Tensor, v: Tensor, log_gamma: Tensor, scale: float, chunk_size: int,
    initial_state: Tensor | None, output_final_state: bool,
) -> tuple[Tensor, Tensor | None]:
    maths = torch.promote_types(q.dtype, torch.float32)
    qh, kh, vh = (t.transpose(1, 2).to(maths) for t in (q, k, v))  # (B, H, T, d)
    if scale != 1.0:
        qh = qh * scale
    kv0 = initial_state.to(maths) if initial_state is not None else None
    o, kv, _ = chunkwise_retention(qh, kh, vh, log_gamma, None, kv=kv0, chunk_size=chunk_size)  # o (B, H, T, dv)
    return o.transpose(1, 2).to(q.dtype), (kv if output_final_state else None)


def _chunk_fla(
    q: Tensor, k: Tensor, v: Tensor, log_gamma: Tensor, scale: float,
    initial_state: Tensor | None, output_final_state: bool,
) -> tuple[Tensor, Tensor | None]:
    backward = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, initial_state) if t is not None)
    ok, reason = chunk_kernel_available("fla", q.device, (q.shape[-1], v.shape[-1]) if backward else None)
    if not ok:
        raise ChunkKernelUnavailable(f"chunk kernel 'fla' unavailable: {reason}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in FLA_DTYPES:
        raise ValueError(f"fla needs q, k, v of one dtype in {FLA_DTYPES}; got {q.dtype}, {k.dtype}, {v.dtype}")
    chunk_simple_gla, _ = _fla_chunk_simple_gla()
    # fla multiplies g_gamma by 1/ln 2 in its own dtype and loads it per head: fp32 is what its kernels expect
    g_gamma = log_gamma.to(device=q.device, dtype=torch.float32).contiguous()
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    o, final_state = chunk_simple_gla(
        q, k, v, g_gamma=g_gamma, scale=scale, initial_state=h0, output_final_state=output_final_state
    )
    return o, final_state


def key_sum(k: Tensor, log_gamma: Tensor, initial: Tensor | None = None) -> Tensor:
    """Decayed key sum after the last of T tokens: z_T = gamma^T z_0 + sum_m gamma^(T-1-m) k_m.

    k (B, T, H, dk) (as the state holds it, i.e. already scaled), log_gamma (H,), initial z_0 (B, H, dk) or None.
    Returns (B, H, dk) in fp32 (fp64 for fp64 k). The decode step's normaliser needs it after a fused prefill,
    which does not compute row sums; one weighted reduction over T, cheap next to the retention itself.
    """
    maths = torch.promote_types(k.dtype, torch.float32)
    T = k.shape[1]
    lam = log_gamma.to(device=k.device, dtype=torch.float64)
    ages = torch.arange(T - 1, -1, -1, device=k.device, dtype=torch.float64)  # T-1-m
    weights = torch.exp(ages[None, :] * lam[:, None]).to(maths)  # (H, T); underflows to 0 for old tokens, harmless
    z = torch.einsum("bthk,ht->bhk", k.to(maths), weights)  # (B, H, dk)
    if initial is not None:
        z = z + initial.to(maths) * torch.exp(T * lam).to(maths)[None, :, None]
    return z
