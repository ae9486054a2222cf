"""Quantized (FP8) KV cache for the Transformer baselines: availability (issue #18). A suite asks for the variant with
`kv_dtypes = ["float8_e4m3fn"]` in [decode]; the static decoder's builder asks `fp8_kv_cache_available` and, while it
answers False, the variant's points are `skipped` rows carrying the reason (row column state_dtype = the cache's dtype).

Finding (sources read for torch 2.11 / cuDNN 9 / FlashAttention-4 on an H200, sm90):
  * torch SDPA: the cuDNN backend takes fp16/bf16 only (sdp_utils.cpp check_dtypes_low_precision), the
    memory-efficient backend fp16/bf16/fp32, math any float but one dtype for q, k, v; the flash backend takes
    float8_e4m3fn only with the FA3 implementation activated, for q, k and v alike and with no attn_mask, so not
    for a static-cache decode. cuDNN 9's own FP8 SDPA (graph API / cudnn-frontend) is not reachable through torch.
  * flash-attn (FA2): fp16/bf16 only.
  * flash-attn-4 (flash_attn.cute): its FP8 forward (E4M3/E5M2 Q/K/V, forward only) is SM100 only
    (Dao-AILab/flash-attention PR #2109); bf16 queries against an FP8 KV cache on SM90 were an open pull request
    in vLLM's fork (vllm-project/flash-attention #147) and an open feature request in flashinfer (#3327). An
    installed build may be newer: `fp8_kv_cache_available` probes it with a tiny real call on CUDA and reports
    what it saw, but still answers False, because no retnet-bench variant (FP8 cache writes with scales, an
    accuracy check against bf16 over a decode) is wired: a True here must mean a measured, checked variant.
Upcasting an FP8 cache to bf16 before each attention call saves capacity but moves more bytes per step than a
bf16 cache; it is not the variant the issue asks for and is not offered.
"""
from __future__ import annotations

import torch

from .kernels import FLASH_PACKAGES, SDPA_BACKENDS, KernelUnavailableError, _flash_attn_4, _first, check_kernel

_SDPA_WHY = ("torch SDPA takes one dtype for q, k and v (cuDNN: fp16/bf16; efficient: fp16/bf16/fp32); its flash "
             "backend accepts float8_e4m3fn only with FA3 activated, for q/k/v alike and with no attn_mask, so not for "
             "a static-cache decode")


def fp8_kv_cache_available(device: torch.device | str, kernel: str = "flash-attn-4") -> tuple[bool, str]:
    """Can retnet-bench decode with an FP8 (e4m3) K/V cache through `kernel` on `device`? Always (False, why) at
    present (see the module docstring); on CUDA with flash-attn-4 the reason includes what a tiny probe call of
    bf16 queries against float8_e4m3fn K/V did on this GPU, for the lead's `skipped` row and notes."""
    check_kernel(kernel)
    device = torch.device(device)
    if device.type != "cuda":
        return False, f"FP8 KV cache: needs a CUDA GPU (device {device})"
    if kernel in SDPA_BACKENDS or kernel == "sdpa":
        return False, f"FP8 KV cache with {kernel}: {_SDPA_WHY}"
    if kernel == "flash-attn":
        return False, "FP8 KV cache with flash-attn: FlashAttention-2 takes fp16/bf16 only"
    assert kernel in FLASH_PACKAGES
    try:
        _flash_attn_4()
    except KernelUnavailableError as e:
        return False, f"FP8 KV cache with flash-attn-4: {e}"
    major, minor = torch.cuda.get_device_capability(device)
    probe = _probe_fa4_fp8_decode(device)
    return False, (f"FP8 KV cache with flash-attn-4 on sm{major}{minor}: {probe}; no FP8 variant is wired in "
                   "retnet-bench (FA4's FP8 forward is SM100-only upstream, PR #2109)")


def _probe_fa4_fp8_decode(device: torch.device) -> str:
    """One decode call: bf16 q (2, 1, 4, 128) against float8_e4m3fn K/V (2, 64, 2, 128), 40 valid keys."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(2, 1, 4, 128, generator=gen).to(device, torch.bfloat16)
    k, v = (torch.randn(2, 64, 2, 128, generator=gen).to(device, torch.bfloat16) for _ in range(2))
    k8, v8 = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
    seqused = torch.full((2,), 40, dtype=torch.int32, device=device)
    try:
        out = _first(_flash_attn_4()[1](q, k8, v8, seqused_k=seqused, causal=False))
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        return f"probe rejected bf16 q with float8_e4m3fn K/V ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
    ref = _first(_flash_attn_4()[1](q, k8.to(torch.bfloat16), v8.to(torch.bfloat16), seqused_k=seqused, causal=False))
    err = (out.float() - ref.float()).abs().max().item()
    return f"probe ran (max |out - bf16 attention over the same FP8 values| = {err:.3g}, unmeasured speed)"
