"""Closed-form costs of a RetNet config (no tensors allocated); the tests check them against built models."""

from __future__ import annotations

import torch

from retnet.config import RetNetConfig


def _norm_params(cfg: RetNetConfig) -> int:
    return 2 * cfg.d_model if cfg.norm == "layernorm" else cfg.d_model  # LayerNorm: weight + bias


def layer_param_count(cfg: RetNetConfig) -> int:
    """Parameters of one block: 12 d^2 (+ norms) for the paper sizes."""
    d, dv, f, bias = cfg.d_model, cfg.value_dim, cfg.ffn_dim, int(cfg.bias)
    retention = d * (2 * d + 2 * dv) + bias * (2 * d + 2 * dv) + dv * d + bias * d  # qkvg, out_proj
    ffn_in = f * (2 if cfg.ffn == "glu" else 1)
    ffn = d * ffn_in + bias * ffn_in + f * d + bias * d
    return retention + ffn + 2 * _norm_params(cfg)


def embedding_param_count(cfg: RetNetConfig) -> int:
    return cfg.vocab_size * cfg.d_model


def param_count(cfg: RetNetConfig) -> int:
    """Exact parameter count of `RetNet(cfg)` (== sum(p.numel() for p in model.parameters()))."""
    embed = embedding_param_count(cfg)
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model
    norms = _norm_params(cfg) * (1 + int(cfg.embed_norm))
    return embed + head + norms + cfg.n_layers * layer_param_count(cfg)


def weight_bytes(cfg: RetNetConfig, dtype: torch.dtype = torch.bfloat16) -> int:
    return param_count(cfg) * dtype.itemsize


def state_bytes(cfg: RetNetConfig, batch_size: int, state_dtype: torch.dtype = torch.float32) -> int:
    """Bytes of `init_state(batch_size)`: kv (L,B,H,dk,dv), k_sum and its scratch (L,B,H,dk), pos (int64)."""
    per_head = cfg.qk_head_dim * cfg.v_head_dim + 2 * cfg.qk_head_dim
    return cfg.n_layers * batch_size * cfg.n_heads * per_head * state_dtype.itemsize + torch.int64.itemsize


def decode_bytes_per_step(
    cfg: RetNetConfig, batch_size: int, weight_dtype: torch.dtype = torch.bfloat16, state_dtype: torch.dtype = torch.float32
) -> int:
    """Minimum bytes one decode step moves: every weight read once, except that the embedding table contributes
    only the B rows looked up; the kv state read once and written once; k_sum read, written to its scratch and
    copied back. Activations are ignored (O(B*d) per layer)."""
    weights = param_count(cfg) - embedding_param_count(cfg) + (embedding_param_count(cfg) if cfg.tie_embeddings else 0)
    weights_bytes = (weights + batch_size * cfg.d_model) * weight_dtype.itemsize
    heads = cfg.n_layers * batch_size * cfg.n_heads
    kv_bytes = heads * cfg.qk_head_dim * cfg.v_head_dim * state_dtype.itemsize
    k_sum_bytes = heads * cfg.qk_head_dim * state_dtype.itemsize
    return weights_bytes + 2 * kv_bytes + 4 * k_sum_bytes


def flops_per_token(cfg: RetNetConfig, seq_len: int, mode: str = "recurrent", chunk_size: int = 512) -> float:
    """Forward FLOPs per token (multiply-add = 2), as the implementation computes them.

    Matmuls with weights: 2 * (params - embedding table) (the LM head included). Retention per head and token:
    recurrent: decay dk*dv + k^T v accumulate 2*dk*dv + q S 2*dk*dv + normaliser 4*dk;
    parallel: dense (masked) T x T scores: 2*dk*T + T (mask) + 2*dv*T;
    chunkwise: the same inside a chunk (C for T), plus 2*dk*dv (chunk state contribution) + 2*dk*dv (cross
    term) per token and dk*dv per chunk for decaying the state. Elementwise ops (norms, gates) are ignored.
    """
    dk, dv = cfg.qk_head_dim, cfg.v_head_dim
    weights = 2.0 * (param_count(cfg) - embedding_param_count(cfg) + (embedding_param_count(cfg) if cfg.tie_embeddings else 0))
    if mode == "recurrent":
        per_head = 5.0 * dk * dv + 4.0 * dk
    elif mode == "parallel":
        per_head = (2.0 * dk + 1.0 + 2.0 * dv) * seq_len
    elif mode == "chunkwise":
        c = min(chunk_size, seq_len)
        per_head = (2.0 * dk + 1.0 + 2.0 * dv) * c + 4.0 * dk * dv + dk * dv / c
    else:
        raise ValueError(f"mode={mode!r}; expected recurrent, parallel or chunkwise")
    return weights + cfg.n_layers * cfg.n_heads * per_head
