"""A real training step: forward, fp32 next-token loss, backward, AdamW step, with gradient accumulation and optional
per-block activation checkpointing; the settings of a training point; the synthetic data every rank agrees on.

Precision (set up by `fsdp.shard_model`, used for every world size including 1): parameters and optimizer state are
fp32 (master weights), FSDP2 casts the all-gathered parameters to bf16 for compute and reduce-scatters gradients in
fp32. The loss is computed from fp32 logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

from ..contract import TRAIN_VARIANT_CHOICES

COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class TrainSettings:
    """One training point's settings. Tokens per optimizer step = world_size / tp * grad_accum * micro_batch *
    seq_len.

    Paper (arXiv 2307.08621, Table 4 and Sec. 3.4) as far as it is stated: sequence length 8192 and RetNet's
    chunkwise form with chunk 512; eight A100-80GB GPUs. ASSUMED (not stated for Table 4): one sequence per GPU
    per micro-batch, no accumulation, no activation checkpointing; AdamW with betas (0.9, 0.98) and weight decay
    0.05 as in the paper's language-model training recipe as we read it (they do not change a step's cost).
    The learning rate is constant (a benchmark has no schedule); warmup_steps are *untimed* steps (allocator,
    Triton autotuning, NCCL communicators), not an LR warm-up.
    """

    micro_batch: int = 1  # sequences per rank per forward/backward
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 8192
    chunk_size: int = 512  # RetNet chunkwise form (the torch kernel; fla tiles by its own 64)
    steps: int = 10  # timed optimizer steps
    warmup_steps: int = 3  # untimed optimizer steps before them
    checkpointing: str = "none"  # "none" | "full" (every block recomputed in backward) | "every-N" (every N-th)
    compile: str = "none"  # "none" | "blocks" (torch.compile per block, after checkpointing, before FSDP2)
    tp: int = 1  # tensor-parallel degree: ranks that split each block's heads and FFN (the rest is data-parallel)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.05
    compute_dtype: str = "bfloat16"  # "bfloat16" (GPU) | "float32" (CPU tests: exact cross-rank comparisons)
    seed: int = 0
    collective_timeout_s: float = 600.0  # a collective that waits longer fails the rank instead of hanging
    nvml_sampling: bool = True  # each rank reads NVML between steps for its GPU's peak (`--no-nvml` turns it off)

    def __post_init__(self) -> None:
        for name in ("micro_batch", "grad_accum", "seq_len", "chunk_size", "steps", "tp"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name, choices in TRAIN_VARIANT_CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {choices}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype={self.compute_dtype!r}; expected one of {tuple(COMPUTE_DTYPES)}")

    @property
    def torch_compute_dtype(self) -> torch.dtype:
        return COMPUTE_DTYPES[self.compute_dtype]

    def data_parallel(self, world_size: int) -> int:
        """Data-parallel replicas: the ranks that see different sequences (tp ranks of one replica share them)."""
        if world_size % self.tp:
            raise ValueError(f"tensor parallelism tp={self.tp} does not divide the {world_size} ranks")
        return world_size // self.tp

    def sequences_per_step(self, world_size: int) -> int:
        return self.data_parallel(world_size) * self.grad_accum * self.micro_batch

    def tokens_per_step(self, world_size: int) -> int:
        return self.sequences_per_step(world_size) * self.seq_len


# ---------------------------------------------------------------------------------------------------- data
def _cycle_order(vocab_size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(vocab_size, generator=g)  # (V,)


def synthetic_batch(step: int, settings: TrainSettings, vocab_size: int, world_size: int, rank: int) -> torch.Tensor:
    """This rank's token ids for optimizer step `step`: (grad_accum, micro_batch, seq_len + 1), int64, on the CPU.

    Each step draws a *global* batch of world_size * grad_accum * micro_batch sequences from a seed that depends
    only on (seed, step); data-parallel replica r takes rows [r * n, (r + 1) * n) and splits them into micro-batches
    in order. So one process with grad_accum * world_size micro-batches sees exactly the same global batch as
    world_size ranks. Under tensor parallelism the ranks of one replica (rank // tp) take the same rows.
    The sequences walk a fixed random cycle through the vocabulary (the next token is a function of the current
    one): learnable, so a test can watch the loss fall, and as costly as random ids for the benchmark."""
    order = _cycle_order(vocab_size, settings.seed)
    g = torch.Generator().manual_seed(settings.seed * 1_000_003 + step + 1)
    n_global = settings.sequences_per_step(world_size)
    starts = torch.randint(vocab_size, (n_global,), generator=g)  # (G,)
    idx = (starts[:, None] + torch.arange(settings.seq_len + 1)[None, :]) % vocab_size  # (G, T + 1)
    n = settings.grad_accum * settings.micro_batch
    replica = rank // settings.tp  # ranks are laid out (dp, tp): the tp ranks of one replica are consecutive
    mine = order[idx[replica * n:(replica + 1) * n]]  # (n, T + 1)
    return mine.view(settings.grad_accum, settings.micro_batch, settings.seq_len + 1)


# ---------------------------------------------------------------------------------------------------- model set-up
def checkpointed_blocks(n_layers: int, mode: str) -> list[int]:
    """The blocks whose forward `mode` recomputes in backward: none, all ("full"), or every N-th ("every-N": blocks
    N-1, 2N-1, ..., torchtitan's count for its selective per-layer option)."""
    if mode == "none":
        return []
    every = 1 if mode == "full" else int(mode.removeprefix("every-"))
    return [i for i in range(n_layers) if (i + 1) % every == 0]


def apply_checkpointing(model: nn.Module, mode: str) -> None:
    """Wrap the blocks of `model.layers` that `mode` names (checkpointed_blocks) for activation recomputation (before
    fully_shard, as torchtitan). Non-reentrant checkpointing; no RNG state kept (no dropout in these models)."""
    for i in checkpointed_blocks(len(model.layers), mode):
        model.layers[i] = checkpoint_wrapper(model.layers[i], checkpoint_impl=CheckpointImpl.NO_REENTRANT,
                                             preserve_rng_state=False)


def apply_compile(model: nn.Module, mode: str) -> None:
    """torch.compile each block in `model.layers` (checkpoint-wrapped or not), in place of the block, as torchtitan
    does: after checkpointing, before fully_shard. Blocks are identical modules, so they share one compiled graph
    (Dynamo passes parameters as inputs). fullgraph=False: a fused kernel Dynamo cannot trace (fla's, ours) is a
    graph break, not an error; what lies between such kernels (residual adds, casts, the FFN's activation) fuses."""
    if mode == "none":
        return
    # a fresh start per point: the runner trains several models in one process, and Dynamo, seeing a block's shapes
    # change, would compile the next model's blocks for dynamic shapes (slower kernels than the static ones)
    torch._dynamo.reset()
    for i, block in enumerate(model.layers):
        model.layers[i] = torch.compile(block)


def make_optimizer(model: nn.Module, settings: TrainSettings, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the (sharded) fp32 parameters; the fused CUDA kernel on GPUs (it takes DTensors)."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=settings.betas,
                             weight_decay=settings.weight_decay, fused=fused or None)


# ---------------------------------------------------------------------------------------------------- the step
def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in fp32. logits (B, T, V) in the compute dtype, targets (B, T)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def train_step(forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
               batch: torch.Tensor) -> torch.Tensor:
    """One optimizer step over `batch` (grad_accum, micro_batch, T + 1) on the device. Returns this rank's mean loss
    (a 0-dim device tensor; no host sync). Each micro-batch's loss is scaled by 1/grad_accum and FSDP averages
    gradients over ranks, so the gradient is the mean over every token of the global batch. FSDP reduce-scatters
    after every micro-batch (its default: sharded gradients accumulate, memory stays flat in grad_accum)."""
    grad_accum = batch.shape[0]
    total = torch.zeros((), device=batch.device, dtype=torch.float32)
    for micro in batch:  # (micro_batch, T + 1)
        inputs, targets = micro[:, :-1], micro[:, 1:]
        loss = next_token_loss(forward(inputs), targets)
        (loss / grad_accum).backward()
        total += loss.detach()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / grad_accum
