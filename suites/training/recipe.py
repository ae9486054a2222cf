"""What model a training point builds: a picklable recipe (it crosses the process boundary of the launcher) and
the one function that turns it into a module whose blocks FSDP and activation checkpointing can wrap.

    recipe = ModelRecipe("retnet", "1.3b", kernel="auto")  # kernel: RetNet chunk kernel (auto|torch|fla|fla-graphs)
    recipe = ModelRecipe("transformer", "1.3b", kernel="sdpa-flash")  # kernel: attention kernel by name
    model = build_model(recipe, device, torch.float32)               # fp32 master weights; model.layers = blocks
    logits = model_forward(model, recipe, ids, chunk_size=512)       # (B, T) -> (B, T, V)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import retnet
from retnet.kernels.chunk import ChunkKernelUnavailable, auto_chunk_kernel, chunk_kernel_available

from ...baselines.config import TransformerConfig
from ...baselines.kernels import sdpa_context
from ...baselines.rotary import rotary_tables
from ...baselines.transformer import Transformer

FAMILIES = ("retnet", "transformer")


@dataclass(frozen=True)
class ModelRecipe:
    """family "retnet" | "transformer"; preset a name of the family's PRESETS; kernel: the RetNet chunkwise kernel
    ("auto" | "torch" | "fla") or the Transformer attention kernel ("sdpa", "sdpa-flash", ...); overrides: config
    fields (e.g. {"vocab_size": 256} for CPU tests, {"n_kv_heads": 8} for GQA)."""

    family: str
    preset: str
    kernel: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}; expected one of {FAMILIES}")

    def config(self) -> retnet.RetNetConfig | TransformerConfig:
        if self.family == "retnet":
            return retnet.RetNetConfig.from_name(self.preset, **self.overrides)
        return TransformerConfig.from_name(self.preset, **self.overrides)

    def check_engine_settings(self, checkpointing: str, compile: str) -> None:
        """ChunkKernelUnavailable (a `skipped` point) where this recipe cannot train with these engine settings: the
        fla-graphs kernel replays its graphs in the order a plain step runs the layers (retnet.kernels.chunk_graphs),
        which a checkpointed block's second forward breaks and torch.compile would trace through."""
        if self.family == "retnet" and self.kernel == "fla-graphs" and (checkpointing != "none" or compile != "none"):
            raise ChunkKernelUnavailable(
                f"chunk kernel 'fla-graphs' needs checkpointing 'none' and compile 'none' (got {checkpointing!r}, "
                f"{compile!r}): its CUDA graphs replay in a plain step's layer order; use kernel 'fla'")

    def resolved_kernel(self, device: torch.device, compute_dtype: torch.dtype) -> str:
        """The kernel that will actually run (a result row records this, never "auto").

        RetNet "auto" is resolved here from the *compute* dtype, not left to the model: under FSDP2 the model's
        own auto rule (which reads the embedding weight's dtype) would see the fp32 master weights in one wrapping
        and the bf16 unsharded ones in another."""
        if self.family == "transformer":
            return self.kernel
        head_dims = self.config().head_dims
        if self.kernel != "auto":
            ok, why = chunk_kernel_available(self.kernel, device, head_dims)
            if not ok and self.kernel != "torch" and torch.device(device).type == "cuda":
                raise ChunkKernelUnavailable(why)  # before any rank starts: the point is skipped, with the reason
            return self.kernel
        return auto_chunk_kernel(device, compute_dtype, head_dims)


class TransformerBlockForward(nn.Module):
    """One baseline Transformer block as a module with a forward. The baseline's trunk calls `attn` and `ffn` of
    its blocks directly, so a block's own forward hooks never fire; FSDP2 (unshard before forward) and
    checkpoint_wrapper both need the block to be *called*. Same ops in the same order as `Transformer._trunk`
    (tested bit-equal)."""

    def __init__(self, block: nn.Module, kernel: str) -> None:
        super().__init__()
        self.block, self.kernel = block, kernel

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # the SDPA backend is pinned per block, not around the layer loop: activation checkpointing recomputes
        # the block during backward, outside any context the loop held, and must use the same kernel
        with sdpa_context(self.kernel):
            y, _, _, _ = self.block.attn(self.block.ln1(x), cos, sin)
        x = x + y  # (B, T, d)
        return x + self.block.ffn(x)


class TransformerForTraining(nn.Module):
    """The baseline Transformer's training forward over TransformerBlockForward blocks (its parameters, not copies)."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.cfg, self.kernel = model.cfg, model.kernel
        self.tok_emb = model.tok_emb
        self.layers = nn.ModuleList(TransformerBlockForward(b, model.kernel) for b in model.layers)
        self.norm, self.lm_head = model.norm, model.lm_head

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        cos, sin = rotary_tables(input_ids.shape[1], self.cfg.head_dim, self.cfg.rope_theta, input_ids.device)
        x = self.tok_emb(input_ids)  # (B, T, d)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))  # (B, T, V)


def build_model(recipe: ModelRecipe, device: torch.device | str, dtype: torch.dtype = torch.float32,
                compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """The recipe's model on `device` with parameters in `dtype` (fp32: the master weights FSDP shards), initialised
    from the current RNG state (seed it identically on every rank: each rank then holds the same full model and
    keeps its shard, which is what makes N ranks train exactly like one process). `model.layers` are the blocks.
    For RetNet the chunk kernel is fixed to `recipe.resolved_kernel(device, compute_dtype)`."""
    device = torch.device(device)
    cfg = recipe.config()
    with torch.device(device):
        if recipe.family == "retnet":
            model: nn.Module = retnet.RetNet(cfg)
            model.chunk_kernel = recipe.resolved_kernel(device, compute_dtype)
        else:
            model = TransformerForTraining(Transformer(cfg, kernel=recipe.kernel))
    return model.to(dtype)


def model_forward(model: nn.Module, recipe: ModelRecipe, input_ids: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(B, T) ids -> (B, T, V) logits with the training form: RetNet chunkwise (the paper's training form), the
    Transformer's full causal forward."""
    if recipe.family == "retnet":
        return model(input_ids, mode="chunkwise", chunk_size=chunk_size)
    return model(input_ids)


def matmul_params(model: nn.Module) -> int:
    """Weights of every nn.Linear (the parameters that cost 6 FLOPs per token in training); embeddings excluded."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
