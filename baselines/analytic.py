"""Analytic sizes for the Transformer baselines (no torch model needed; torch only for dtype sizes).

Conventions (stated here so every row means the same thing):
* param_count: exactly what `Transformer(cfg)` builds: per layer 12 d^2 matrices + 2 LayerNorms (4d), the
  final LayerNorm (2d), the input embedding (V d) and the untied head (V d).
* decode_bytes_per_step: the bytes one decode step must move at minimum: every weight read once EXCEPT the
  input embedding table, of which only B rows are read; the whole valid KV prefix (seq_len tokens) read; the
  new token's K and V written. Activations are ignored (O(B d) per layer). A static cache whose capacity
  exceeds seq_len may read more (masked slots), which then shows as lower achieved bandwidth, not hidden.
* flops_per_token: forward FLOPs of one decode token at context seq_len: 2 per matrix parameter touched
  (layers + head) plus attention scores and weighted sum, 2 * 2 * d per cached position per layer.
"""
from __future__ import annotations

import torch

from .config import TransformerConfig


def _elsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def param_count(cfg: TransformerConfig) -> int:
    d, L, V = cfg.d_model, cfg.n_layers, cfg.vocab_size
    per_layer = 4 * d * d + 2 * cfg.ffn_dim * d + 4 * d  # wqkv + wo, fc1 + fc2, two LayerNorms
    return L * per_layer + 2 * d + 2 * V * d


def weight_bytes(cfg: TransformerConfig, dtype: torch.dtype) -> int:
    return param_count(cfg) * _elsize(dtype)


def kv_cache_bytes(cfg: TransformerConfig, batch: int, seq_len: int, dtype: torch.dtype) -> int:
    """K and V for seq_len tokens, all layers: 2 * L * B * T * d elements."""
    return 2 * cfg.n_layers * batch * seq_len * cfg.d_model * _elsize(dtype)


def decode_bytes_per_step(cfg: TransformerConfig, batch: int, seq_len: int, dtype: torch.dtype) -> int:
    el = _elsize(dtype)
    weights_read = (param_count(cfg) - cfg.vocab_size * cfg.d_model + batch * cfg.d_model) * el
    kv_read = kv_cache_bytes(cfg, batch, seq_len, dtype)
    kv_written = kv_cache_bytes(cfg, batch, 1, dtype)
    return weights_read + kv_read + kv_written


def flops_per_token(cfg: TransformerConfig, seq_len: int) -> int:
    d, L = cfg.d_model, cfg.n_layers
    matmul_params = L * (4 * d * d + 2 * cfg.ffn_dim * d) + cfg.vocab_size * d
    return 2 * matmul_params + 4 * L * seq_len * d
