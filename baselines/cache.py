"""KV caches for the Transformer baselines.

StaticKVCache: preallocated K/V for every layer, written in place; the fill level `pos` is a device tensor, so a
decode step has static shapes and no host sync (one CUDA graph replays it at any position).
CatKVCache: the paper-like cache (torchscale incremental decoding): per-layer K/V grown by torch.cat each step,
keys stored un-rotated.
Both hold the model's n_kv_heads key/value heads (Hkv = H for MHA, fewer for GQA / MQA).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Capacity is rounded up to this many slots: SDPA's memory-efficient kernel copies (pads) any mask whose last
# dim is not a multiple of 16, every layer of every step. The extra slots are masked out.
CAPACITY_MULTIPLE = 16


@dataclass
class StaticKVCache:
    k: torch.Tensor  # (L, B, Hkv, S, D) for SDPA kernels, (L, B, S, Hkv, D) for flash-attn packages ("bshd")
    v: torch.Tensor
    pos: torch.Tensor  # (1,) int64 on the cache's device: tokens cached = slot the next token is written to
    slots: torch.Tensor  # (S,) int64 arange(capacity), compared with pos to build the mask on device
    cos: torch.Tensor  # (S, D) rotary tables for positions [0, S), in the cache's dtype
    sin_signed: torch.Tensor  # (S, D) rotary.signed_sin(sin)
    max_len: int  # requested capacity (S >= max_len after rounding)
    layout: str  # "bhsd" | "bshd"

    @property
    def capacity(self) -> int:
        return self.slots.shape[0]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[i], self.v[i]

    def reset(self) -> None:
        self.pos.zero_()

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


@dataclass
class CatKVCache:
    k: list[torch.Tensor]  # per layer (B*Hkv, S, D), un-rotated keys (the rotation is re-applied every step)
    v: list[torch.Tensor]  # per layer (B*Hkv, S, D)
    batch_size: int

    @property
    def seq_len(self) -> int:
        return self.k[0].shape[1]

    def rewind_(self, n: int) -> None:
        """Cut this cache back to its first n positions in place, as contiguous tensors (each layer's grown
        tensor is freed as soon as its copy exists), so the next step's cat reads it as in real decoding."""
        if not 0 < n <= self.seq_len:
            raise ValueError(f"cannot rewind a {self.seq_len}-token cache to {n}")
        for i in range(len(self.k)):
            self.k[i] = self.k[i][:, :n].contiguous()
            self.v[i] = self.v[i][:, :n].contiguous()

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.k) + sum(t.nbytes for t in self.v)
