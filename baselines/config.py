"""Transformer baseline configuration: one preset per RetNet preset, same width, depth and vocabulary.

Parameter budget per layer is 12 d^2 (fused QKV 3 d^2 + output 1 d^2 + FFN d -> 4d -> d = 8 d^2), the same as a
RetNet layer (retention 8 d^2 with d_v = 2d, FFN d -> 2d -> d = 4 d^2), so the two architectures are matched at
equal (d, n_layers, vocab). Embeddings are untied (input table + output head: 2 V d).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from retnet.config import VOCAB_SIZE  # shared vocabulary (CONTRACTS.md)


@dataclass
class TransformerConfig:
    name: str = "custom"
    d_model: int = 2048
    n_layers: int = 24
    head_dim: int = 128
    vocab_size: int = VOCAB_SIZE
    ffn_mult: int = 4  # FFN hidden = ffn_mult * d_model, GELU
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

    @property
    def n_heads(self) -> int:
        return self.d_model // self.head_dim

    @property
    def ffn_dim(self) -> int:
        return self.ffn_mult * self.d_model

    @classmethod
    def from_name(cls, name: str, **overrides) -> "TransformerConfig":
        """A named preset (see PRESETS); `overrides` replace single fields (e.g. vocab_size for tests)."""
        if name not in PRESETS:
            raise ValueError(f"unknown Transformer preset {name!r}; known: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        bad = set(overrides) - known
        if bad:
            raise ValueError(f"unknown TransformerConfig field(s) {sorted(bad)}; known: {sorted(known)}")
        return cls(**{**PRESETS[name], "name": name, **overrides})


# d and n_layers follow the RetNet paper's Table (1.3B: 2048 x 24, 2.7B: 2560 x 32, 6.7B: 4096 x 32) and the
# RetNet package's tiny/small presets (tested equal); head dim 128 as in common Transformer LMs of these sizes (16/20/32 heads).
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layers=2, head_dim=32),
    "small": dict(d_model=256, n_layers=4, head_dim=64),
    "1.3b": dict(d_model=2048, n_layers=24, head_dim=128),
    "2.7b": dict(d_model=2560, n_layers=32, head_dim=128),
    "6.7b": dict(d_model=4096, n_layers=32, head_dim=128),
}
