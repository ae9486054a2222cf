"""Analytic sizes for the Transformer baselines (no torch model needed; torch only for dtype sizes).

Conventions (stated here so every row means the same thing):
* param_count: exactly what `Transformer(cfg)` builds: per layer the fused QKV projection d (d + 2 kv_dim), the
  output projection d^2, the FFN 2 d f, 2 LayerNorms (4d); the final LayerNorm (2d), the input embedding (V d) and
  the untied head (V d). MHA: kv_dim = d, f = 4d, 12 d^2 per layer; GQA / MQA: f = 5d - kv_dim, still 12 d^2.
* kv_cache_bytes: K and V of n_kv_heads heads: 2 * L * B * T * kv_dim elements (kv_dim = d for MHA).
* decode_bytes_per_step: the bytes one decode step must move at minimum: every weight read once EXCEPT the
  input embedding table, of which only B rows are read; the whole valid KV prefix (seq_len tokens, n_kv_heads
  heads) read; the new token's K and V written. Activations are ignored (O(B d) per layer). A static cache whose
  capacity exceeds seq_len may read more (masked slots), and a GQA kernel that expands K/V with repeat_interleave
  moves more (a copy of H heads); both then show as lower achieved bandwidth, not hidden.
* flops_per_token: forward FLOPs of one decode token at context seq_len: 2 per matrix parameter touched
  (layers + head) plus attention scores and weighted sum over the QUERY heads, 2 * 2 * H * head_dim = 4 d per
  cached position per layer (GQA shares K/V between query heads, not the arithmetic).
"""
from __future__ import annotations

import torch

from .config import TransformerConfig


def _elsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _matmul_params_per_layer(cfg: TransformerConfig) -> int:
    d = cfg.d_model
    return d * (d + 2 * cfg.kv_dim) + d * d + 2 * cfg.ffn_dim * d  # wqkv, wo, fc1 + fc2


def param_count(cfg: TransformerConfig) -> int:
    d, L, V = cfg.d_model, cfg.n_layers, cfg.vocab_size
    per_layer = _matmul_params_per_layer(cfg) + 4 * d  # + two LayerNorms
    return L * per_layer + 2 * d + 2 * V * d


def weight_bytes(cfg: TransformerConfig, dtype: torch.dtype) -> int:
    return param_count(cfg) * _elsize(dtype)


def kv_cache_bytes(cfg: TransformerConfig, batch: int, seq_len: int, dtype: torch.dtype) -> int:
    """K and V for seq_len tokens, all layers: 2 * L * B * T * kv_dim elements."""
    return 2 * cfg.n_layers * batch * seq_len * cfg.kv_dim * _elsize(dtype)


def decode_bytes_per_step(cfg: TransformerConfig, batch: int, seq_len: int, dtype: torch.dtype) -> int:
    el = _elsize(dtype)
    weights_read = (param_count(cfg) - cfg.vocab_size * cfg.d_model + batch * cfg.d_model) * el
    kv_read = kv_cache_bytes(cfg, batch, seq_len, dtype)
    kv_written = kv_cache_bytes(cfg, batch, 1, dtype)
    return weights_read + kv_read + kv_written


def flops_per_token(cfg: TransformerConfig, seq_len: int) -> int:
    d, L = cfg.d_model, cfg.n_layers
    matmul_params = L * _matmul_params_per_layer(cfg) + cfg.vocab_size * d
    return 2 * matmul_params + 4 * L * seq_len * cfg.n_heads * cfg.head_dim
