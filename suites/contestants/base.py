"""Adapters that give every model the same small interface the runner measures.

The runner only ever calls: `analytic(B, T)`, `prefill(B, T)`, `begin_decode()`, `step()`, `end()` for decode,
and `train_step(B, T)` for training. Each adapter owns how its model keeps a cache or state; the runner owns
timing and memory.

"Decode at length T" means the steady-state cost of one decode step with T tokens of context. The static KV cache
is rewound inside its (graph-captured) step by resetting its write position. Caches grown by torch.cat (paper-like,
HF dynamic, torchscale) are put back to T tokens by `between_steps`, which the runner calls between two timed steps,
outside the timing events: it leaves the cache contiguous, as the model's own decoding does, so the next step's cat
reads it exactly as in real generation (a strided view would change the cat kernel's cost). A RetNet state has no
length, so it simply advances.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..transfer import batch_on_device


@dataclass
class Analytic:
    weights_bytes: int
    cache_bytes: int          # KV cache or recurrent state at this point
    bytes_per_step: int       # what one decode step must move through device memory
    flops_per_token: float

    @property
    def mem_bytes(self) -> int:
        return self.weights_bytes + self.cache_bytes


# ---- one cost model per family (every adapter of a family, ours or a peer's, goes through these) ----------------
def weights_read_bytes(n_params: int, vocab: int, d_model: int, batch: int, elt: int) -> int:
    """A decode step reads every weight once, except the input embedding table, of which only B rows are read."""
    return (n_params - vocab * d_model + batch * d_model) * elt


def kv_cache_costs(n_params: int, vocab: int, d_model: int, batch: int, elt: int, kv_bytes_at: Callable[[int], int],
                   seq_len: int, flops_per_token: float) -> Analytic:
    """Transformer family: the whole KV prefix of T tokens read and the new token's K and V written."""
    kv = kv_bytes_at(seq_len)
    return Analytic(n_params * elt, kv, weights_read_bytes(n_params, vocab, d_model, batch, elt) + kv + kv_bytes_at(1),
                    flops_per_token)


def recurrent_state_costs(n_params: int, vocab: int, d_model: int, batch: int, elt: int, state_bytes: int,
                          flops_per_token: float) -> Analytic:
    """RetNet family: the whole recurrent state read once and written once (its size does not depend on T)."""
    return Analytic(n_params * elt, state_bytes,
                    weights_read_bytes(n_params, vocab, d_model, batch, elt) + 2 * state_bytes, flops_per_token)


def cuda_graph(fn, warmup: int = 3) -> torch.cuda.CUDAGraph:
    """Capture `fn` (static shapes, no host sync) into one CUDA graph after warming it up on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def random_ids(vocab: int, batch: int, seq_len: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """(batch, seq_len) ids on `device`, drawn on the CPU (the same ids on every device) and copied without a sync:
    a forward + backward step draws its ids inside the timed loop."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return batch_on_device(torch.randint(0, vocab, (batch, seq_len), generator=g), device)


class Contestant:
    """Base adapter. Subclasses set arch, impl, kernel, n_params, vocab and implement the hooks."""

    arch: str = ""
    impl: str = ""
    kernel: str = ""
    notes: str = ""
    n_params: int = 0
    vocab: int = 0
    max_seq_len: int | None = None
    can_prefill: bool = True  # False: the model cannot run a prompt here; the runner calls fill() and times no prefill

    def __init__(self, device: torch.device, dtype: torch.dtype, use_graph: bool = True):
        self.device, self.dtype = device, dtype
        self.use_graph = use_graph and device.type == "cuda"
        self._graph: torch.cuda.CUDAGraph | None = None

    # --- analytic model -------------------------------------------------------------------------------------
    def analytic(self, batch: int, seq_len: int) -> Analytic:
        raise NotImplementedError

    # --- decode ---------------------------------------------------------------------------------------------
    def prefill(self, batch: int, seq_len: int) -> None:
        """Build the cache/state holding `seq_len` tokens of a random prompt (timed as the prefill phase)."""
        raise NotImplementedError

    def fill(self, batch: int, seq_len: int) -> None:
        """Build the cache/state at length `seq_len` from random values, without running a prompt (capacity
        searches at large batch, where a real prefill would dominate the time). Same shapes, dtypes and step cost."""
        raise NotImplementedError(f"{self.impl} cannot fill its cache without a prefill")

    def _step(self) -> None:
        """One greedy decode step for the whole batch; static shapes where a graph is used."""
        raise NotImplementedError

    @torch.inference_mode()
    def begin_decode(self) -> None:
        if self.use_graph:
            self._graph = cuda_graph(self._step)

    @torch.inference_mode()
    def step(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            self._step()

    def _between_steps(self) -> None:
        """Untimed work between two timed decode steps (see the module docstring); nothing by default."""

    @property
    def works_between_steps(self) -> bool:
        """Whether `_between_steps` queues GPU work of its own (a cache cut-back): its energy is in the decode
        window's (the row says so). A subclass whose hook does real work for some impls says which."""
        return False

    @torch.inference_mode()
    def between_steps(self) -> None:
        self._between_steps()

    def end(self) -> None:
        """Free the cache/state and graph of this point (weights stay for the next point)."""
        self._graph = None

    # --- training -------------------------------------------------------------------------------------------
    def train_step(self, batch: int, seq_len: int) -> None:
        raise NotImplementedError(f"{self.impl} has no training step")

    def close(self) -> None:
        """Free everything (weights too)."""
        self.end()

    @staticmethod
    def _lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # (B, T, V) -> next-token loss in fp32, as a training step would compute it
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))
