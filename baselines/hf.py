"""Hugging Face baselines: `LlamaForCausalLM` from a LlamaConfig matched to our TransformerConfig, random init.

`hf`: its default DynamicCache (what a user gets out of the box). `hf-static`: its StaticCache, with the decode
call compiled the way generate() does it (torch.compile, mode="reduce-overhead": CUDA graphs) on GPU, eager on
CPU (tests) or when compile=False.

Matching: same d, layers, query heads, key/value heads (`num_key_value_heads` = cfg.n_kv_heads: MHA, GQA or MQA),
head dim, vocabulary, rotary theta, untied embeddings. Llama's MLP is SwiGLU (three d x I matrices), so
I = 2f/3 for our GELU width f (8d/3 for MHA, f = 5d - kv_dim for GQA), rounded to a multiple of 64 (of 8 for
small d), keeps ~12 d^2 per layer; norms are RMSNorm (d params) instead of LayerNorm (2d). Parameter counts agree
within 2% (tested).

Written against transformers 5.x (forward(..., cache=...)); `past_key_values=` is used where a version still
names the argument that way.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from .config import TransformerConfig

CACHE_KINDS = ("dynamic", "static")


def _intermediate_size(cfg: TransformerConfig) -> int:
    """SwiGLU width with the parameters of our GELU FFN: 3 d I = 2 d f."""
    multiple = 64 if cfg.d_model >= 1024 else 8
    return max(multiple, round(2 * cfg.ffn_dim / 3 / multiple) * multiple)


def hf_config_from(cfg: TransformerConfig, attn_implementation: str = "sdpa"):
    """LlamaConfig with our width/depth/heads (query and key/value)/vocab and a SwiGLU width giving ~12 d^2
    parameters per layer."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=_intermediate_size(cfg),
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=1 << 20, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        attn_implementation=attn_implementation, use_cache=True,
    )


def build_hf_llama(cfg: TransformerConfig, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cuda",
                   attn_implementation: str = "sdpa"):
    """Random-init LlamaForCausalLM built directly on `device` in `dtype` (no float32 CPU copy of the weights:
    a 6.7B model initialises on the GPU in seconds). device="meta" gives a shape-only model."""
    from transformers import LlamaForCausalLM

    config = hf_config_from(cfg, attn_implementation)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in dtype, no float32 intermediate
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


@dataclass
class HFDecodeState:
    """What hf_prefill returns and hf_step advances: the transformers cache, its kind, the host-side length
    (known without a sync: prefill length + steps) and the callable that runs a decode forward."""
    cache: object
    kind: str
    length: int
    step_fn: Callable


def _cache_kwarg(hf) -> str:
    params = inspect.signature(hf.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _compiled_forward(hf) -> Callable:
    """The compiled decode call transformers' own generate() uses with a static cache (get_compiled_call with
    the default CompileConfig: torch.compile(mode="reduce-overhead", fullgraph=False), cached on the model)."""
    if hasattr(hf, "get_compiled_call"):
        return hf.get_compiled_call(None)
    fn = getattr(hf, "_retnet_bench_compiled_call", None)
    if fn is None:
        fn = hf._retnet_bench_compiled_call = torch.compile(hf.__call__, mode="reduce-overhead")
    return fn


def hf_prefill(hf, input_ids: torch.Tensor, cache: str = "dynamic", max_len: int | None = None,
               compile: bool | None = None) -> HFDecodeState:
    """Run the prompt (B, T) through `hf` once, filling a new cache; logits_to_keep=1 so no (B, T, V) logits.

    cache="dynamic": DynamicCache (grows by torch.cat). cache="static": StaticCache(max_cache_len=max_len),
    max_len >= T + decode steps required. compile (static only): compile the decode forward with torch.compile
    (default: when the ids are on CUDA); the prefill itself always runs eagerly, as transformers recommends."""
    from transformers import DynamicCache, StaticCache

    if cache not in CACHE_KINDS:
        raise ValueError(f"unknown HF cache kind {cache!r}; known: {', '.join(CACHE_KINDS)}")
    b, t = input_ids.shape
    if cache == "static":
        if max_len is None or max_len < t:
            raise ValueError(f"static HF cache needs max_len >= prompt length {t}, got {max_len}")
        past = StaticCache(config=hf.config, max_cache_len=max_len)
        compile = input_ids.is_cuda if compile is None else compile
    else:
        if compile:
            raise ValueError("torch.compile is only used with the static HF cache (dynamic shapes grow each step)")
        past = DynamicCache(config=hf.config)
        compile = False
    kwarg = _cache_kwarg(hf)
    hf(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{kwarg: past})
    return HFDecodeState(past, cache, t, _compiled_forward(hf) if compile else hf.forward)


def hf_rewind(state: HFDecodeState, position: int) -> None:
    """Make the cache hold exactly `position` tokens (position <= current length). A dynamic cache's tensors are
    copied to contiguous ones, as its own torch.cat leaves them (the next cat then costs what it does in generate)."""
    if not 0 < position <= state.length:
        raise ValueError(f"cannot rewind an HF cache of {state.length} tokens to {position}")
    if position == state.length:
        return
    for layer in state.cache.layers:
        if state.kind == "static":
            layer.cumulative_length.fill_(position)  # slots >= position are overwritten by the next update
        else:
            layer.keys = layer.keys[..., :position, :].contiguous()  # (B, H, S, D)
            layer.values = layer.values[..., :position, :].contiguous()
    state.length = position


def hf_step(hf, next_ids: torch.Tensor, past: HFDecodeState, position: int | None = None) -> torch.Tensor:
    """One decode step: ids (B,) or (B, 1) -> logits (B, 1, V). position: first rewind the cache to that many
    tokens (the rewind's copy is then part of the call; the suites rewind between timed steps with `hf_rewind`
    instead); None = append after the last one."""
    if position is not None:
        hf_rewind(past, position)
    ids = next_ids.reshape(-1, 1)
    out = past.step_fn(input_ids=ids, use_cache=True, logits_to_keep=1, **{_cache_kwarg(hf): past.cache})
    past.length += 1
    return out.logits
