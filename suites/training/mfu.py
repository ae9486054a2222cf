"""Model FLOPs utilisation: training FLOPs per token (one function per family), peak FLOP/s per GPU kind.

Convention (PaLM, Chowdhery et al. 2022, App. B; the one torchtitan reports): a training token costs 3x its
forward FLOPs (forward + backward w.r.t. activations + w.r.t. weights), a multiply-add is 2 FLOPs, only matrix
products count (norms, activations, softmax, decays are left out), and recomputation by activation checkpointing
is *not* counted (model FLOPs, not hardware FLOPs).

  matmul weights:  6 N per token, N = every nn.Linear weight incl. the output head; the input embedding is a
                   lookup (0 FLOPs).
  attention:       12 L H Q T = 12 L d T per token (QK^T and AV, 2 T H Q each, x3). PaLM counts the full T x T
                   score matrix; a causal kernel skips about half of it, so MFU by this convention can exceed
                   what the kernel actually executes. Same for every attention kernel and for GQA (query heads).
  retention:       chunkwise form with chunk C per head (dk = d/H, dv = value_dim/H), forward per token:
                   intra-chunk QK^T 2 C dk + (QK^T)V 2 C dv, cross-chunk q S 2 dk dv, chunk state K^T V 2 dk dv;
                   x3 x H x L. C is the tile the running kernel uses (fla: 64, torch: settings.chunk_size).
"""
from __future__ import annotations

import retnet

from ...baselines.config import TransformerConfig

# Dense (no sparsity) bf16 tensor-core peak per GPU, from NVIDIA's datasheets. First matching substring of
# torch.cuda.get_device_name() wins, so the more specific names come first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H200", 989e12),  # H200 SXM and GH200: same tensor cores as H100 SXM
    ("H100", 989e12),  # H100 SXM / HBM3
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("B200", 2250e12),  # datasheet 4.5 PFLOP/s bf16 is with 2:4 sparsity
)


def peak_flops(gpu_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of one GPU of this name, or None when the kind is not in the table (or on a CPU)."""
    if not gpu_name:
        return None
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in gpu_name.lower():
            return flops
    return None


def _linear_weights_per_layer_retnet(cfg: retnet.RetNetConfig) -> int:
    d, dv, f = cfg.d_model, cfg.value_dim, cfg.ffn_dim
    qkvg = d * (2 * d + 2 * dv)  # q, k (d each), v, g (value_dim each)
    out = dv * d
    ffn = d * f * (2 if cfg.ffn == "glu" else 1) + f * d
    return qkvg + out + ffn


def retnet_train_flops_per_token(cfg: retnet.RetNetConfig, chunk_size: int, seq_len: int) -> float:
    """Training FLOPs per token of a RetNet trained with the chunkwise form (module doc for the convention)."""
    L, H = cfg.n_layers, cfg.n_heads
    dk, dv = cfg.qk_head_dim, cfg.v_head_dim
    c = min(chunk_size, seq_len)  # a sequence shorter than the chunk is one chunk
    n_matmul = L * _linear_weights_per_layer_retnet(cfg) + cfg.d_model * cfg.vocab_size  # + head
    retention_fwd = H * (2 * c * dk + 2 * c * dv + 2 * dk * dv + 2 * dk * dv)  # per token per layer
    return 6.0 * n_matmul + 3.0 * L * retention_fwd


def transformer_train_flops_per_token(cfg: TransformerConfig, seq_len: int) -> float:
    """Training FLOPs per token of the baseline Transformer: PaLM's 6 N + 12 L H Q T."""
    d, L = cfg.d_model, cfg.n_layers
    kv_dim = getattr(cfg, "kv_dim", d)  # GQA shrinks K and V (n_kv_heads * head_dim); MHA: d
    ffn_dim = cfg.ffn_dim if getattr(cfg, "ffn_dim", None) else cfg.ffn_mult * d  # older configs had ffn_mult
    per_layer = d * (d + 2 * kv_dim) + d * d + 2 * d * ffn_dim  # wqkv, wo, fc1, fc2
    n_matmul = L * per_layer + d * cfg.vocab_size  # + head
    return 6.0 * n_matmul + 12.0 * L * cfg.n_heads * cfg.head_dim * seq_len


def mfu(tokens_per_s: float | None, flops_per_token: float | None, gpu_name: str | None, world_size: int) -> float | None:
    """Achieved model FLOP/s over the summed peak of `world_size` GPUs (a fraction, 0..1); None where unknown."""
    peak = peak_flops(gpu_name)
    if peak is None or not tokens_per_s or not flops_per_token:
        return None
    return tokens_per_s * flops_per_token / (peak * world_size)
