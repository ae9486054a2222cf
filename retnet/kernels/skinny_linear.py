"""y = x W^T for a decode step's few rows (M <= 16): a Triton kernel that streams each weight once.

Both decoders' steps (RetNet's recurrent step, the `static` Transformer's) project through `project(x, linear,
gemm)` with gemm "torch" (F.linear: cuBLAS on a GPU) or "triton" (this kernel); "auto" resolves to "triton" on a GPU
with Triton and 16-bit weights. The kernel has no backward: `project` takes F.linear wherever autograd would need
one, so a step under grad (or training) can never lose its gradients here.

A decode step's projections are weight-streaming GEMMs: at batch 1-16 the bytes are the weight's, and the time is
how fast the kernel reads it. cuBLAS picks split-K kernels for these shapes that reach ~3.0 TB/s (71% of the
H200's copy bandwidth) on the 67 MB 8192 -> 4096 and 4096 -> 8192 weights of the 6.7B models
(`scripts/profile_retnet_step.py`). Here one program owns BLOCK_N output features and walks K, so every weight
byte is read once with no split-K reduction pass; the rows of x (M x K, a few hundred KB) stay in L2.

F.linear is the reference (the tests compare both against fp64). The launch config is autotuned per (M bucket, N,
K, dtype) on the first call, i.e. in the model's warm-up steps, before any CUDA graph capture.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from retnet.kernels import triton_available

MAX_ROWS = 16  # tl.dot's smallest M tile: rows beyond it go to F.linear
DECODE_GEMMS = ("torch", "triton")


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def kernel_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the kernel can run for weights of `dtype` on `device`: Triton, 16-bit weights, and a GPU (or the
    Triton interpreter, for the CPU tests)."""
    return (triton_available() and dtype in (torch.bfloat16, torch.float16)
            and (device.type == "cuda" or _interpreted()))


def check_decode_gemm(name: str) -> str:
    if name not in ("auto", *DECODE_GEMMS):
        raise ValueError(f"decode_gemm={name!r}; expected 'auto' or one of {DECODE_GEMMS}")
    return name


def resolve_decode_gemm(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """"auto" -> "triton" on a GPU where the kernel runs, else "torch"; "triton" where it cannot run is an error
    (a row must never say "triton" for a step that ran F.linear)."""
    if check_decode_gemm(requested) == "auto":
        return "triton" if device.type == "cuda" and kernel_runs(device, dtype) else "torch"
    if requested == "triton" and not kernel_runs(device, dtype):
        raise ValueError(f"decode_gemm='triton' needs a CUDA GPU with Triton and bf16/fp16 weights "
                         f"(here: {device.type}, {str(dtype).removeprefix('torch.')})")
    return requested


def skinny_linear_applies(x: Tensor, weight: Tensor) -> bool:
    """The kernel's domain: a CUDA (or interpreted) 2-D x with at most MAX_ROWS rows, a contiguous (N, K) weight
    of the same 16-bit dtype, and K a multiple of 64 (no K mask in the loop)."""
    return (kernel_runs(x.device, x.dtype) and x.dim() == 2 and 0 < x.shape[0] <= MAX_ROWS and x.stride(-1) == 1
            and weight.is_contiguous() and x.dtype == weight.dtype  # kernel_runs: a 16-bit dtype
            and x.shape[1] == weight.shape[1] and weight.shape[1] % 64 == 0)


if triton_available():
    import triton
    import triton.language as tl

    def _configs() -> list:
        if _interpreted():  # one config and no benchmarking under the interpreter
            return [triton.Config({"BLOCK_N": 16, "BLOCK_K": 64}, num_warps=4, num_stages=1)]
        return [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                for bn in (16, 32, 64) for bk in (64, 128, 256, 512) for w in (4, 8) for s in (3, 5)
                if (bn + 16) * bk * 2 * s <= 160 * 1024]  # the weight and x tiles in flight fit in shared memory

    def _prune(configs: list, named_args: dict, **kwargs) -> list:
        # the loop has no K mask: only blocks that divide K (64 always does: the kernel's domain)
        k = {**named_args, **kwargs}["K"]
        return [c for c in configs if k % c.kwargs["BLOCK_K"] == 0]

    @triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K"], prune_configs_by={"early_config_prune": _prune})
    @triton.jit
    def _skinny_linear_kernel(
        x_ptr, w_ptr, out_ptr, M, N, stride_xm, stride_om, M_BUCKET,
        K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr,
    ):
        # M_BUCKET is unused in the body: it is an autotuning key (1, 2-8 and 9-16 rows tune apart); K is a
        # compile-time constant, so the loop's trip count is known (a model has a handful of K values)
        pid_n = tl.program_id(0)
        rows = tl.arange(0, 16)  # (16,) rows of x; those >= M are masked to zero
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) output features of this program
        col_ok = cols < N
        ks = tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + rows[:, None] * stride_xm + ks[None, :]  # (16, BLOCK_K)
        w_ptrs = w_ptr + cols[:, None] * K + ks[None, :]  # (BLOCK_N, BLOCK_K), K contiguous
        acc = tl.zeros((16, BLOCK_N), dtype=tl.float32)
        for _ in range(0, K, BLOCK_K):
            x = tl.load(x_ptrs, mask=rows[:, None] < M, other=0.0)
            # streamed: no other program reads these weight bytes this step
            w = tl.load(w_ptrs, mask=col_ok[:, None], other=0.0, eviction_policy="evict_first")
            if UPCAST:  # Triton 3.6's interpreter gets bf16 tl.dot wrong; fp32 products of bf16 values are exact
                x, w = x.to(tl.float32), w.to(tl.float32)
            acc = tl.dot(x, tl.trans(w), acc)  # (16, BLOCK_N)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        out_ptrs = out_ptr + rows[:, None] * stride_om + cols[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(rows[:, None] < M) & col_ok[None, :])


def _m_bucket(m: int) -> int:
    return 1 if m == 1 else (8 if m <= 8 else 16)


def skinny_linear_triton(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (M, K) with M <= 16, weight (N, K) -> (M, N) in x's dtype, fp32 accumulation. Bias is added in torch."""
    if not skinny_linear_applies(x, weight):
        raise ValueError(f"skinny_linear_triton: x {tuple(x.shape)} {x.dtype}, weight {tuple(weight.shape)} "
                         f"{weight.dtype} outside the kernel's domain (see skinny_linear_applies)")
    M, K = x.shape
    N = weight.shape[0]
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)  # (M, N)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    _skinny_linear_kernel[grid](x, weight, out, M, N, x.stride(0), out.stride(0), _m_bucket(M), K=K,
                                 UPCAST=_interpreted())
    return out if bias is None else out + bias


def project(x: Tensor, linear: torch.nn.Linear, gemm: str) -> Tensor:
    """A decode step's projection: `linear(x)` for gemm "torch", `skinny_linear` for "triton" (F.linear outside the
    kernel's domain: more than MAX_ROWS rows, a K that is not a multiple of 64, or where autograd needs a backward)."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or linear.weight.requires_grad)
    return skinny_linear(x, linear.weight, linear.bias) if gemm == "triton" and not needs_grad else linear(x)


def skinny_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The Triton kernel where it applies (any leading dims flattened into M), F.linear elsewhere."""
    flat = x.reshape(-1, x.shape[-1])
    if not skinny_linear_applies(flat, weight):
        return F.linear(x, weight, bias)
    return skinny_linear_triton(flat, weight, bias).view(*x.shape[:-1], weight.shape[0])
