"""Rotary position embedding (RoPE, "rotate-half" layout as in GPT-NeoX / Llama).

The RetNet paper's Transformer baseline used xPos (torchscale `XPOS`): a rotary embedding whose rotation is
multiplied by a per-dimension exponential scale (upscaled on queries, downscaled on keys) for length
extrapolation. We use plain rotary, the modern equivalent without xPos's decay scaling: same rotation, same
cost class (an elementwise op on q and k), no effect on decode memory traffic.
"""
from __future__ import annotations

import torch


def rotary_tables(n_positions: int, head_dim: int, theta: float, device: torch.device | str | None = None,
                  offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables for positions [offset, offset + n_positions): each (n_positions, head_dim), float32.
    Computed in float64 and rounded, so a position gets bit-identical values whatever the table length (float32
    cos/sin kernels may differ by an ulp between vectorised and tail elements)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim)
    t = torch.arange(offset, offset + n_positions, device=device, dtype=torch.float64)
    freqs = torch.outer(t, inv_freq)  # (n, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (n, D)
    return emb.cos().float(), emb.sin().float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., D) by tables broadcastable to x, computed in x's dtype (as HF Llama and torchscale's xPos
    do; no float32 copy of the (B, T, H, D) queries and keys during prefill or training)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated: rotate_half(x) * sin == x.roll(D/2, -1) * signed_sin(sin)."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def apply_rotary_rolled(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Same rotation as apply_rotary in 3 kernels (mul, roll, addcmul) instead of 5-6: the decode step runs it
    once per layer on q and k together, and at batch 1 a step is short enough for kernel count to matter.
    Tables must already be in x's dtype."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin_signed)
