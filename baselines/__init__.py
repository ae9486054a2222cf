"""Transformer baselines for retnet-bench: a param-matched decoder-only Transformer with three decoding flavours
(`static`, `paper-like`, and Hugging Face `hf` / `hf-static`), and named attention kernels."""
from . import analytic
from .cache import CatKVCache, StaticKVCache
from .config import PRESETS, VOCAB_SIZE, TransformerConfig
from .hf import HFDecodeState, build_hf_llama, hf_config_from, hf_prefill, hf_rewind, hf_step
from .kernels import KERNELS, KernelUnavailableError, kernel_available, reference_attention
from .transformer import Transformer

# stable names used in result rows (CONTRACTS.md)
DECODE_FLAVOURS: tuple[str, ...] = ("static", "paper-like", "hf", "hf-static")


def check_flavour(name: str) -> str:
    if name not in DECODE_FLAVOURS:
        raise ValueError(f"unknown decoding flavour {name!r}; known: {', '.join(DECODE_FLAVOURS)}")
    return name


__all__ = [
    "analytic", "CatKVCache", "StaticKVCache", "PRESETS", "VOCAB_SIZE", "TransformerConfig", "HFDecodeState",
    "build_hf_llama", "hf_config_from", "hf_prefill", "hf_rewind", "hf_step", "KERNELS", "KernelUnavailableError",
    "kernel_available", "reference_attention", "Transformer", "DECODE_FLAVOURS", "check_flavour",
]
