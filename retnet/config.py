"""RetNet configuration: one dataclass, named presets (paper sizes + small CPU ones), variant switches."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

# Shared with the Transformer baselines (they import it from here). A multiple of 64; with untied input and
# output embeddings it puts the paper presets at 1.34B / 2.68B / 6.70B parameters (12*d^2 per layer + 2*V*d),
# which is what arXiv 2307.08621 Table 2 reports.
VOCAB_SIZE = 32000

_CHOICES = {
    "decay": ("paper", "torchscale"),
    "norm": ("layernorm", "rmsnorm"),
    "head_norm": ("layernorm", "rmsnorm"),
    "ffn": ("gelu", "glu"),
    "ffn_activation": ("gelu", "swish"),
    "step_kernel": ("auto", "torch", "triton"),
    "chunk_kernel": ("auto", "torch", "fla", "fla-graphs"),
    "decode_gemm": ("auto", "torch", "triton"),
}

# Longest sequence the position maths supports exactly. The rotation tables are computed in float64 and cast
# (retnet.retention.position_tables): the float64 angle pos * theta_i carries an error of at most ~pos * 2^-52
# rad, which stays <= 2^-28 (1/16 of fp32's spacing near 1) up to pos = 2^24, so the fp32 cos/sin tables are
# the correctly rounded values to within one fp32 ulp (measured: <= 0.5 * 2^-24 absolute up to 2^27, 1.8 * 2^-24
# at 2^30). The decay row sums c_n = (1 - gamma^(n+1)) / (1 - gamma) saturate and have no limit; the recurrent
# state has no length at all. 2^24 = 16.8M tokens, far beyond any prompt the suites run.
EXACT_POSITION_LIMIT = 2**24


@dataclass
class RetNetConfig:
    """Hyper-parameters of a RetNet decoder.

    Defaults follow the paper (arXiv 2307.08621): qk head dim d/heads, value dim 2d, FFN 2d with GELU, so a
    layer has 12*d^2 weights like a Transformer layer; decay gamma = 1 - exp(linspace(log 1/32, log 1/512, H)).
    The torchscale 0.3.0 variant is `decay="torchscale", norm="rmsnorm", head_norm="rmsnorm", ffn="glu"`
    (see `retnet.interop.from_torchscale`).
    """

    name: str = "custom"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 2
    vocab_size: int = VOCAB_SIZE
    value_dim: int | None = None  # total value width over all heads; None -> 2 * d_model
    ffn_dim: int | None = None  # None -> 2 * d_model
    decay: str = "paper"  # per-head decay schedule: "paper" | "torchscale" (gamma = 1 - 2^(-5 - h))
    norm: str = "layernorm"  # pre-norm of each block and the final norm: "layernorm" | "rmsnorm"
    head_norm: str = "layernorm"  # per-head (group) norm of the retention output, no affine
    ffn: str = "gelu"  # "gelu": fc2(act(fc1 x)); "glu": fc2(act(fc1 x) * gate x) (torchscale)
    ffn_activation: str = "gelu"  # activation inside the FFN: "gelu" (exact erf) | "swish"
    bias: bool = False  # biases in the linear layers (LayerNorm always has weight and bias)
    eps: float = 1e-6
    embed_scale: float = 1.0  # token embeddings are multiplied by this (torchscale: sqrt(d) unless disabled)
    embed_norm: bool = False  # norm right after the embedding (torchscale `layernorm_embedding`)
    tie_embeddings: bool = False
    rotary_base: float = 10000.0  # theta_shift angle: 1 / base ** linspace(0, 1, dk // 2), as torchscale
    max_seq_len: int = EXACT_POSITION_LIMIT  # only used to validate inputs
    init_std: float = 0.02
    state_dtype: torch.dtype = torch.float32
    step_kernel: str = "auto"  # "auto" -> "triton" on CUDA when triton imports, else "torch"
    # parallel side (training, chunkwise forward, prefill): "auto" -> "fla" on CUDA with bf16/fp16 weights when
    # fla-core imports, else "torch"; "fla-graphs": fla replayed from CUDA graphs in training (retnet.kernels.chunk)
    chunk_kernel: str = "auto"
    # the decode step's projections: "auto" -> "triton" (retnet.kernels.skinny_linear) on CUDA with bf16/fp16
    # weights when triton imports, else "torch" (F.linear: cuBLAS on a GPU)
    decode_gemm: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. where a config came from)

    def __post_init__(self) -> None:
        if self.value_dim is None:
            self.value_dim = 2 * self.d_model
        if self.ffn_dim is None:
            self.ffn_dim = 2 * self.d_model
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}; expected one of {allowed}")
        if self.d_model % self.n_heads or self.value_dim % self.n_heads:
            raise ValueError(f"d_model={self.d_model} and value_dim={self.value_dim} must divide n_heads")
        if self.qk_head_dim % 2:
            raise ValueError(f"qk head dim {self.qk_head_dim} must be even (pairs are rotated)")

    @property
    def qk_head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def v_head_dim(self) -> int:
        return self.value_dim // self.n_heads

    @property
    def head_dims(self) -> tuple[int, int]:
        """(dk, dv) of one retention head."""
        return self.qk_head_dim, self.v_head_dim

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> RetNetConfig:
        """A named preset with optional field overrides: `RetNetConfig.from_name("6.7b", n_layers=2)`."""
        if name not in PRESETS:
            raise ValueError(f"unknown RetNet preset {name!r}; known presets: {sorted(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown RetNetConfig fields {sorted(unknown)}")
        return cls(**{"name": name, **PRESETS[name], **overrides})


# arXiv 2307.08621 Table 2 / Table 7 sizes (13B: d=5120, 40 layers, 20 heads -> dk=256, dv=512, as the others);
# tiny/small are for CPU tests and the smoke suite (their short limits only guard CPU runs against typos).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layers=2, d_model=64, n_heads=2, max_seq_len=4096),
    "small": dict(n_layers=4, d_model=256, n_heads=4, max_seq_len=8192),
    "1.3b": dict(n_layers=24, d_model=2048, n_heads=8),
    "2.7b": dict(n_layers=32, d_model=2560, n_heads=10),
    "6.7b": dict(n_layers=32, d_model=4096, n_heads=16),
    "13b": dict(n_layers=40, d_model=5120, n_heads=20),
}
