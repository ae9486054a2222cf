"""Attention kernels for the Transformer baselines, selectable by name, with a naive reference beside them.

Names (stable, used in result rows):
  sdpa            F.scaled_dot_product_attention, PyTorch picks the backend
  sdpa-flash      the same forced to SDPBackend.FLASH_ATTENTION (FlashAttention-2 built into PyTorch)
  sdpa-cudnn      ... SDPBackend.CUDNN_ATTENTION
  sdpa-efficient  ... SDPBackend.EFFICIENT_ATTENTION (xFormers memory-efficient kernel)
  sdpa-math       ... SDPBackend.MATH (plain matmul + softmax: the paper's "vanilla Transformer")
  flash-attn      package `flash_attn` (FlashAttention-2): flash_attn_func / flash_attn_with_kvcache
  flash-attn-4    package `flash-attn-4` (import flash_attn.cute): flash_attn_func / flash_attn_varlen_func

A forced backend that cannot run the inputs raises KernelUnavailableError; nothing falls back silently
(`sdpa_kernel([X])` disables every other SDPA backend, and the flash packages are called directly).

Which SDPA backends can do the static-cache decode step (q_len = 1 against a preallocated cache of capacity S
with a mask hiding the unused slots), from PyTorch's sdp_utils.cpp (2.5 - 2.11):
  * flash:     no. `can_use_flash_attention` runs `check_for_attn_mask` (any attn_mask rejects it) and
               `check_flash_causal_non_square_seqlens` (is_causal with q_len != k_len rejects it), so a
               partially filled static cache cannot be attended without slicing it to a host-known length,
               which a CUDA graph cannot replay. `sdpa-flash` decode therefore raises (prefill/training fine).
  * cuDNN:     yes. `can_use_cudnn_attention` checks only the mask's shape (`check_attn_mask_shape`), not its
               presence; needs fp16/bf16, head_dim <= 256 and a multiple of 8, and runs on sm80+ with cuDNN 9.
  * efficient: yes, any float/bool mask (its last dim is padded to a multiple of 16 by a copy otherwise, so
               static caches round their capacity up to a multiple of 16).
  * math:      yes, always (slow: materialises the scores).
  With no forced backend (`sdpa`) PyTorch chooses among those that accept the inputs. On the H200 the lead
  measured cuDNN fastest for decode; pick it by name (`sdpa-cudnn`) rather than rely on the priority order.
  flash-attn / flash-attn-4 decode take a device tensor of per-sequence lengths instead of a mask
  (`cache_seqlens` / `seqused_k`), so they are graph-safe as well.

Grouped-query attention (K/V with fewer heads than Q; query head h reads K/V head h // (H / Hkv)):
  * flash-attn, flash-attn-4: native, K/V passed as (B, T, Hkv, D) (FA2: "MQA/GQA by passing KV with fewer
    heads"; FA4: pack_gqa when H / Hkv > 1), training, prefill and decode alike.
  * SDPA backends: `enable_gqa=True` where the backend accepts it, probed once per (kernel, device, dtype, phase)
    by `gqa_support` with a tiny real call, as `kernel_available` does. From sdp_utils.cpp: flash takes GQA
    (check_batch_size_and_num_heads_dense<supports_gqa=true>; decode still impossible, no mask), cuDNN takes it
    (supports_gqa, requires_same_num_heads=false), math takes it (repeat_interleave inside the op), the
    memory-efficient backend rejected it until PyTorch PR #191085 (July 2026, after 2.11): in torch 2.11 expect
    `sdpa-efficient` to fall back. `sdpa` (no forced backend) passes enable_gqa and lets PyTorch choose, which
    may mean math. On CPU (2.13) the flash-cpu and math backends take it, efficient does not.
  * Fallback, labelled: where a forced backend rejects enable_gqa, K/V are expanded with repeat_interleave to H
    heads before the call (a full (B, H, S, D) copy per layer per step: the cache bandwidth saving is lost for
    the attention read); `gqa_support` returns (False, why) so the caller can say so in its row.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

KERNELS: tuple[str, ...] = (
    "sdpa", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math", "flash-attn", "flash-attn-4",
)
SDPA_BACKENDS: dict[str, SDPBackend] = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}
FLASH_PACKAGES = ("flash-attn", "flash-attn-4")
PHASES = ("train", "prefill", "decode")
# FlashAttention-4 decode: 1 = no split-KV (measured on the H200: slow at batch 1, fastest at batch 16). Split-KV is
# not an option on the H200: flash-attn-4 4.0.0b36 asserts "SplitKV not supported on SM 9.0" for num_splits != 1
# (scripts/probe_gqa_kernels.py, 2026-11-28), so its small-batch decode reads the cache with B x heads CTAs only.
FA4_DECODE_NUM_SPLITS = 1


class KernelUnavailableError(RuntimeError):
    """The named attention kernel cannot run these inputs on this device / dtype / install."""


def check_kernel(name: str) -> str:
    if name not in KERNELS:
        raise ValueError(f"unknown attention kernel {name!r}; known: {', '.join(KERNELS)}")
    return name


def uses_bshd_cache(kernel: str) -> bool:
    """Flash packages keep caches as (B, S, H, D); SDPA kernels as (B, H, S, D)."""
    return kernel in FLASH_PACKAGES


def sdpa_context(kernel: str) -> contextlib.AbstractContextManager:
    """Context that restricts SDPA to the named backend (no-op for `sdpa` and the flash packages).
    Entered once per model call, not per layer, to keep Python overhead off the eager decode path."""
    backend = SDPA_BACKENDS.get(kernel)
    return sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------- packages
@functools.cache
def _flash_attn_2():
    try:
        from flash_attn import flash_attn_func, flash_attn_with_kvcache
    except ImportError as e:
        raise KernelUnavailableError(f"flash-attn not installed (pip install 'retnet-bench[flash]'): {e}") from e
    return flash_attn_func, flash_attn_with_kvcache


@functools.cache
def _flash_attn_4():
    try:
        from flash_attn.cute import flash_attn_func, flash_attn_varlen_func
    except ImportError as e:
        raise KernelUnavailableError(f"flash-attn-4 not installed (pip install 'retnet-bench[flash4]'): {e}") from e
    return flash_attn_func, flash_attn_varlen_func


def _first(out):
    """flash-attn-4 returns (out, lse); flash-attn 2 returns out."""
    return out[0] if isinstance(out, tuple) else out


# ---------------------------------------------------------------------------------------------------- attention
def _sdpa(kernel: str, q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
    try:
        if enable_gqa:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    except RuntimeError as e:
        if kernel not in SDPA_BACKENDS:
            raise
        raise KernelUnavailableError(
            f"{kernel}: PyTorch's {SDPA_BACKENDS[kernel].name} backend cannot run q{tuple(q.shape)} "
            f"{q.dtype} on {q.device.type}{' with attn_mask' if attn_mask is not None else ''}: "
            f"{str(e).splitlines()[0].split('. ')[0]}") from e


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * groups, S, D), each K/V head repeated for its `groups` query heads."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _sdpa_gqa(kernel: str, phase: str, q, k, v, attn_mask=None, is_causal=False):
    """SDPA over q (B, H, Tq, D) and k/v (B, Hkv, S, D): plain call for MHA, enable_gqa where the backend takes
    it (gqa_support), else the repeat_interleave fallback."""
    groups = q.shape[1] // k.shape[1]
    if groups == 1:
        return _sdpa(kernel, q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    if gqa_support(kernel, q.device, q.dtype, phase, q.shape[-1])[0]:
        return _sdpa(kernel, q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True)
    return _sdpa(kernel, q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=attn_mask, is_causal=is_causal)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: str) -> torch.Tensor:
    """Causal self-attention over a whole sequence (training / prefill).

    q: (B, T, H, D), k, v: (B, T, Hkv, D) with H % Hkv == 0 -> (B, T, H, D). SDPA kernels must be called inside
    `sdpa_context(kernel)`.
    """
    if kernel == "flash-attn":
        return _flash_attn_2()[0](q, k, v, causal=True)
    if kernel == "flash-attn-4":
        return _first(_flash_attn_4()[0](q, k, v, causal=True))
    phase = "train" if torch.is_grad_enabled() and q.requires_grad else "prefill"
    out = _sdpa_gqa(kernel, phase, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    return out.transpose(1, 2)  # (B, H, T, D) -> (B, T, H, D)


def decode_attention_sdpa(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, mask: torch.Tensor,
                          kernel: str) -> torch.Tensor:
    """One query per sequence against a static cache. q: (B, H, 1, D); caches (B, Hkv, S, D), H % Hkv == 0;
    mask (1, 1, 1, S) additive (0 valid, -inf empty slot). Returns (B, H, 1, D)."""
    if kernel == "sdpa-flash":
        raise KernelUnavailableError(
            "sdpa-flash: PyTorch's FLASH_ATTENTION backend accepts no attn_mask, and a static cache needs one to "
            "hide its empty slots (use sdpa-cudnn, sdpa-efficient or flash-attn with cache_seqlens)")
    return _sdpa_gqa(kernel, "decode", q, k_cache, v_cache, attn_mask=mask)


def decode_attention_flash_attn(q, k_cache, v_cache, k_new, v_new, cache_seqlens) -> torch.Tensor:
    """FlashAttention-2 decode: writes k_new/v_new (B, 1, H, D) into the (B, S, H, D) caches at cache_seqlens
    (int32 (B,), tokens already cached) in place and attends over cache_seqlens + 1 keys. Returns (B, 1, H, D)."""
    return _flash_attn_2()[1](q, k_cache, v_cache, k=k_new, v=v_new, cache_seqlens=cache_seqlens, causal=True)


def decode_attention_flash_attn_4(q, k_cache, v_cache, seqused_k) -> torch.Tensor:
    """FlashAttention-4 decode (no append-KV support: the caller writes the new K/V first). q (B, 1, H, D),
    caches (B, S, H, D), seqused_k int32 (B,) valid keys per sequence. Returns (B, 1, H, D)."""
    return _first(_flash_attn_4()[1](q, k_cache, v_cache, seqused_k=seqused_k, causal=False,
                                     num_splits=FA4_DECODE_NUM_SPLITS))


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                        n_valid: int | None = None) -> torch.Tensor:
    """Naive float64 attention to check every kernel against. q (B, H, Tq, D), k/v (B, Hkv, S, D) (Hkv < H:
    grouped-query, K/V heads repeated); causal aligns the last query with key n_valid - 1 (n_valid defaults to
    S); keys >= n_valid are ignored."""
    groups = q.shape[1] // k.shape[1]
    qd, kd, vd = q.double(), repeat_kv(k.double(), groups), repeat_kv(v.double(), groups)
    tq, s = q.shape[-2], k.shape[-2]
    n_valid = s if n_valid is None else n_valid
    scores = qd @ kd.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Tq, S)
    key_pos = torch.arange(s, device=q.device)
    query_pos = torch.arange(n_valid - tq, n_valid, device=q.device)
    allowed = key_pos[None, :] < n_valid
    if causal:
        allowed = allowed & (key_pos[None, :] <= query_pos[:, None])
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ vd).to(q.dtype)


# ---------------------------------------------------------------------------------------------------- availability
def kernel_available(name: str, device: torch.device | str, dtype: torch.dtype, phase: str = "train",
                     head_dim: int = 128) -> tuple[bool, str]:
    """(True, "") if `name` can run `phase` ("train": causal fwd+bwd, "prefill": causal fwd, "decode": one query
    against a masked static cache) on this device/dtype, else (False, reason). SDPA backends are probed with a
    tiny real call (so the answer reflects this build of PyTorch and this GPU); the flash packages are checked
    by import, device and dtype. Unknown name or phase -> ValueError."""
    return _probe(name, _probe_device(name, device, phase), dtype, phase, head_dim)


def _probe_device(name: str, device: torch.device | str, phase: str) -> str:
    """Validate a probe's kernel and phase (ValueError) and name its device as the probe cache keys it: a bare
    "cuda" becomes the current GPU, so one GPU's answer is never reused for another."""
    check_kernel(name)
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


@functools.cache
def _probe(name: str, device: str, dtype: torch.dtype, phase: str, head_dim: int) -> tuple[bool, str]:
    dev = torch.device(device)
    if name in FLASH_PACKAGES:
        try:
            _flash_attn_2() if name == "flash-attn" else _flash_attn_4()
        except KernelUnavailableError as e:
            return False, str(e).replace(" (pip install 'retnet-bench[flash]')", "").replace(
                " (pip install 'retnet-bench[flash4]')", "")
        if dev.type != "cuda":
            return False, f"{name} runs on CUDA GPUs only (device {device})"
        if dtype not in (torch.float16, torch.bfloat16):
            return False, f"{name} needs float16/bfloat16, not {dtype}"
        major = torch.cuda.get_device_capability(dev)[0]
        if name == "flash-attn" and major < 8:
            return False, f"flash-attn needs sm80+, this GPU is sm{major}x"
        if name == "flash-attn-4" and major not in (9, 10, 11):
            return False, f"flash-attn-4 runs on Hopper/Blackwell (sm90/sm100), this GPU is sm{major}x"
        return True, ""
    if name == "sdpa-flash" and phase == "decode":
        return False, "sdpa-flash: PyTorch's flash backend takes no attn_mask, which a static-cache decode needs"
    gen = torch.Generator(device="cpu").manual_seed(0)
    s = 64
    try:
        q, k, v = (torch.randn(1, 2, s, head_dim, generator=gen).to(dev, dtype) for _ in range(3))
        with sdpa_context(name), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if phase == "decode":
                    mask = torch.zeros(1, 1, 1, s, device=dev, dtype=dtype)
                    mask[..., s // 2:] = float("-inf")
                    decode_attention_sdpa(q[:, :, :1], k, v, mask, name)
                else:
                    q.requires_grad_(phase == "train")
                    out = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), name)
                    if phase == "train":
                        out.float().sum().backward()
            except KernelUnavailableError as e:
                reasons = "; ".join(str(w.message).splitlines()[0] for w in caught)
                return False, f"{str(e).split(': No available kernel')[0]}{': ' + reasons if reasons else ''}"
    except RuntimeError as e:  # e.g. no such device
        return False, f"{name} on {device}: {str(e).splitlines()[0]}"
    return True, ""


def gqa_support(name: str, device: torch.device | str, dtype: torch.dtype, phase: str = "decode",
                head_dim: int = 128) -> tuple[bool, str]:
    """Whether kernel `name` runs grouped-query attention natively for `phase` here: (True, "") if it does (flash
    packages: K/V with fewer heads; SDPA: enable_gqa=True accepted by the forced backend, probed with a tiny real
    call, cached), else (False, why): the model then expands K/V with repeat_interleave (labelled fallback).
    Call it once before capturing a CUDA graph (Transformer.new_static_cache does): the probe allocates."""
    return _gqa_probe(name, _probe_device(name, device, phase), dtype, phase, head_dim)


@functools.cache
def _gqa_probe(name: str, device: str, dtype: torch.dtype, phase: str, head_dim: int) -> tuple[bool, str]:
    ok, why = _probe(name, device, dtype, phase, head_dim)
    if not ok:  # the kernel cannot run here at all: no GQA question to answer
        return False, why
    if name in FLASH_PACKAGES:
        return True, ""  # K/V heads may divide Q heads (FA2 and FA4 interfaces)
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"gqa_support({name!r}) must be probed before CUDA graph capture (it allocates)")
    gen = torch.Generator(device="cpu").manual_seed(0)
    s = 64
    try:
        q = torch.randn(1, 2, s, head_dim, generator=gen).to(dev, dtype)  # 2 query heads, 1 K/V head
        k, v = (torch.randn(1, 1, s, head_dim, generator=gen).to(dev, dtype) for _ in range(2))
        with sdpa_context(name), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if phase == "decode":
                    mask = torch.zeros(1, 1, 1, s, device=dev, dtype=dtype)
                    mask[..., s // 2:] = float("-inf")
                    _sdpa(name, q[:, :, :1], k, v, attn_mask=mask, enable_gqa=True)
                else:
                    q.requires_grad_(phase == "train")
                    out = _sdpa(name, q, k, v, is_causal=True, enable_gqa=True)
                    if phase == "train":
                        out.float().sum().backward()
            except KernelUnavailableError as e:
                reasons = "; ".join(str(w.message).splitlines()[0] for w in caught)
                return False, (f"{str(e).split(': No available kernel')[0]} with enable_gqa=True"
                               f"{': ' + reasons if reasons else ''}; K/V expanded by repeat_interleave instead")
    except RuntimeError as e:  # e.g. no such device
        return False, f"{name} on {device}: {str(e).splitlines()[0]}"
    return True, ""
