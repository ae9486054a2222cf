"""Transformer baselines for retnet-bench: a param-matched decoder-only Transformer (MHA, or GQA / MQA with
`n_kv_heads`) with three decoding flavours (`static`, `paper-like`, and Hugging Face `hf` / `hf-static`), and named
attention kernels."""
from . import analytic
from .cache import CatKVCache, StaticKVCache
from .config import FFN_MULTIPLE, PRESETS, VOCAB_SIZE, TransformerConfig, matched_ffn_dim
from .hf import HFDecodeState, build_hf_llama, hf_config_from, hf_prefill, hf_rewind, hf_step
from .kernels import KERNELS, KernelUnavailableError, gqa_support, kernel_available, reference_attention
from .quantized_kv import fp8_kv_cache_available
from .transformer import Transformer

# The decoding flavours' names (static, paper-like, hf, hf-static) are declared once, in the contestant specs
# (suites/contestants/).


__all__ = [
    "analytic", "CatKVCache", "StaticKVCache", "PRESETS", "VOCAB_SIZE", "TransformerConfig", "HFDecodeState",
    "build_hf_llama", "hf_config_from", "hf_prefill", "hf_rewind", "hf_step", "KERNELS", "KernelUnavailableError",
    "kernel_available", "reference_attention", "Transformer", "FFN_MULTIPLE",
    "matched_ffn_dim", "gqa_support", "fp8_kv_cache_available",
]
