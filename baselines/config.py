"""Transformer baseline configuration: one preset per RetNet preset, same width, depth and vocabulary.

Parameter budget per layer is 12 d^2, the same as a RetNet layer (retention 8 d^2 with d_v = 2d, FFN d -> 2d -> d
= 4 d^2), so the two architectures are matched at equal (d, n_layers, vocab). Embeddings are untied (input table +
output head: 2 V d).

Key/value heads (`n_kv_heads`, default None = n_heads: full multi-head attention, the paper's baseline). With
grouped-query attention (GQA, 1 < n_kv_heads < n_heads) or multi-query attention (MQA, n_kv_heads = 1) the K and V
projections shrink to kv_dim = n_kv_heads * head_dim columns each, and the FFN grows to keep 12 d^2 per layer:

    q d^2 + k, v 2 d kv_dim + o d^2 + FFN 2 d f = 12 d^2   ->   f = 5 d - kv_dim

rounded to the nearest multiple of FFN_MULTIPLE = 128 (at least 128). MHA (kv_dim = d) gives f = 4 d, today's FFN.
d and kv_dim are multiples of head_dim, so with head_dim 128 (every paper preset) the rule is exact: 12 d^2 per layer
for MHA, GQA and MQA alike (6.7B GQA-8: f = 19456, MQA: f = 20352). `ffn_dim` may be given explicitly instead.
Query heads must be a multiple of key/value heads (each K/V head serves n_heads / n_kv_heads query heads, in
order: query head h reads K/V head h // group, the convention of SDPA `enable_gqa`, FlashAttention and HF Llama).
At 2.7B (20 query heads) 8 K/V heads do not divide; 5 (groups of 4, as 6.7B GQA-8) or 4 / 10 do.

Derived fields are resolved in __post_init__ (as RetNetConfig does): `dataclasses.replace(cfg, n_kv_heads=...)`
keeps the old ffn_dim; use `from_name` or pass ffn_dim=None to re-derive it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from retnet.config import VOCAB_SIZE  # shared vocabulary (CONTRACTS.md)

FFN_MULTIPLE = 128  # matched FFN widths are rounded to this (tensor-core friendly; exact for head_dim 128)


def matched_ffn_dim(d_model: int, kv_dim: int) -> int:
    """FFN width keeping 12 d^2 matrix parameters per layer with K/V projections of kv_dim columns each."""
    return max(FFN_MULTIPLE, round((5 * d_model - kv_dim) / FFN_MULTIPLE) * FFN_MULTIPLE)


@dataclass
class TransformerConfig:
    name: str = "custom"
    d_model: int = 2048
    n_layers: int = 24
    head_dim: int = 128
    n_kv_heads: int | None = None  # key/value heads; None -> n_heads (MHA); 1 = MQA
    ffn_dim: int | None = None  # FFN hidden width (GELU); None -> matched_ffn_dim (4 d for MHA)
    vocab_size: int = VOCAB_SIZE
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    # not a model property: kept so runners can ask every config the same question (None = no fixed limit,
    # rotary tables are built for whatever length a cache or forward needs)
    max_seq_len: int | None = field(default=None)

    def __post_init__(self) -> None:
        if self.d_model % self.head_dim:
            raise ValueError(f"d_model={self.d_model} is not a multiple of head_dim={self.head_dim}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if not 0 < self.n_kv_heads <= self.n_heads or self.n_heads % self.n_kv_heads:
            divisors = [k for k in range(1, self.n_heads + 1) if self.n_heads % k == 0]
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads} "
                             f"(d_model {self.d_model} / head_dim {self.head_dim}); choose one of {divisors}")
        if self.ffn_dim is None:
            self.ffn_dim = matched_ffn_dim(self.d_model, self.kv_dim)
        if self.ffn_dim <= 0:
            raise ValueError(f"ffn_dim={self.ffn_dim} must be positive")

    @property
    def n_heads(self) -> int:
        """Query heads."""
        return self.d_model // self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the K (and of the V) projection: n_kv_heads * head_dim (= d_model for MHA)."""
        return self.n_kv_heads * self.head_dim

    @property
    def kv_groups(self) -> int:
        """Query heads per key/value head (1 for MHA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def attention_kind(self) -> str:
        """'MHA', 'GQA-<n_kv_heads>' or 'MQA': how a result row names the baseline's attention."""
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else f"GQA-{self.n_kv_heads}"

    @classmethod
    def from_name(cls, name: str, **overrides) -> "TransformerConfig":
        """A named preset (see PRESETS); `overrides` replace single fields (e.g. vocab_size for tests,
        n_kv_heads=8 for the parameter-matched GQA-8 variant: ffn_dim is derived unless also given)."""
        if name not in PRESETS:
            raise ValueError(f"unknown Transformer preset {name!r}; known: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        bad = set(overrides) - known
        if bad:
            raise ValueError(f"unknown TransformerConfig field(s) {sorted(bad)}; known: {sorted(known)}")
        return cls(**{**PRESETS[name], "name": name, **overrides})


# d and n_layers follow the RetNet paper's Table (1.3B: 2048 x 24, 2.7B: 2560 x 32, 6.7B: 4096 x 32, 13B: 5120 x 40)
# and the RetNet package's tiny/small presets (tested equal); head dim 128 as in common Transformer LMs of these
# sizes (16/20/32/40 heads). Presets are MHA; GQA / MQA variants are from_name(name, n_kv_heads=k).
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layers=2, head_dim=32),
    "small": dict(d_model=256, n_layers=4, head_dim=64),
    "1.3b": dict(d_model=2048, n_layers=24, head_dim=128),
    "2.7b": dict(d_model=2560, n_layers=32, head_dim=128),
    "6.7b": dict(d_model=4096, n_layers=32, head_dim=128),
    "13b": dict(d_model=5120, n_layers=40, head_dim=128),
}
