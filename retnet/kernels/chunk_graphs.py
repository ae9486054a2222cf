"""fla's chunk retention for training, replayed from CUDA graphs (the "fla-graphs" chunk kernel).

Why: fla's `chunk_simple_gla` spends ~1.2 ms of host time per layer on a forward + backward (its Python layers and
six Triton launches), ~29 ms per 1.3B training step, and RetNet's 1.3B step is then as long on the host as on the
GPU (results/reference/h200/2026-11-29-probes-s16): a slower host CPU, or FSDP2's own host work on several GPUs,
makes the step host-bound. Replaying the same kernels from CUDA graphs costs ~0.18 ms per layer (same probe, with
outputs and gradients bit-equal to the eager calls). The Transformer's attention is one cuDNN call each way and has
no such cost to remove.

How: `torch.cuda.make_graphed_callables` over every layer at once, at the first training call of a shape: one
forward and one backward graph per layer, captured in the order a training step runs them (forwards 0..L-1, then
backwards L-1..0) in one shared memory pool. A shared pool is only safe when the graphs replay in that order, so
`RetentionGraphs` checks it: each forward pass must call the layers in order, and the backward must reach layer 0
before the next pass begins. Activation checkpointing (a block's forward again during backward) and
torch.compile are therefore refused by the training engine for this kernel.

Memory: per layer, the graphs keep q, k, v and o (what the eager path keeps for backward too) plus the gradient of
o and of q, k, v (which the eager path frees layer by layer): at 1.3B and T=8192 ~190 MB per layer, ~4.6 GB in all.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from retnet.kernels.chunk import ChunkKernelUnavailable, _fla_chunk_simple_gla, chunk_kernel_available


class GraphOrderError(RuntimeError):
    """A graphed layer was called out of the order its graphs were captured in."""


class RetentionGraphs:
    """Graphed fla retention for the `n_layers` layers of one model. `__call__(layer, q, k, v, log_gamma)` -> o, the
    unnormalised retention of `chunk_retention(kernel="fla")` (scale 1, no initial or final state), differentiable
    in q, k, v. Use only where a backward follows every forward pass (`usable` says when it applies)."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self._key: tuple | None = None
        self._fns: tuple[Callable, ...] | None = None
        self._g_gamma: Tensor | None = None  # the per-head log decay the graphs read (fp32, by address)
        self._next = 0  # the layer whose forward comes next
        self._awaiting_backward = False  # a full forward pass ran; its backward has not reached layer 0 yet

    @staticmethod
    def usable(q: Tensor, k: Tensor, v: Tensor) -> bool:
        """A training call on a GPU: grad enabled, inputs that need gradients, not inside another graph capture."""
        return (q.is_cuda and torch.is_grad_enabled() and all(t.requires_grad for t in (q, k, v))
                and not torch.cuda.is_current_stream_capturing())

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor, log_gamma: Tensor) -> Tensor:
        """q, k (B, T, H, dk), v (B, T, H, dv), one dtype; log_gamma (H,). Returns o (B, T, H, dv) in q's dtype."""
        key = (tuple(q.shape), tuple(v.shape), q.dtype, q.device)
        if layer == 0 and not self._awaiting_backward and key != self._key:
            self._capture(key, q, k, v, log_gamma)
        if layer != self._next or key != self._key or (layer == 0 and self._awaiting_backward):
            raise GraphOrderError(
                f"graphed retention called for layer {layer} with q {tuple(q.shape)}; expected layer {self._next}"
                + (" after the last pass's backward" if self._awaiting_backward else "")
                + f" with q {self._key[0] if self._key else None}. Its graphs replay in the order a training step runs:"
                " each forward pass through the layers in order, then its backward (no activation checkpointing, no"
                " second forward before the backward); use kernel 'fla' otherwise")
        o = self._fns[layer](q, k, v)
        if layer == 0:  # its gradient is the last a backward computes before the layer-0 graph replays
            o.register_hook(self._backward_reached_layer_0)
        self._next = (layer + 1) % self.n_layers
        self._awaiting_backward = self._next == 0
        return o

    def _backward_reached_layer_0(self, grad: Tensor) -> None:
        self._awaiting_backward = False

    def _capture(self, key: tuple, q: Tensor, k: Tensor, v: Tensor, log_gamma: Tensor) -> None:
        """Capture every layer's forward and backward graph for this shape (random static inputs, never zeros)."""
        ok, why = chunk_kernel_available("fla", q.device, (q.shape[-1], v.shape[-1]))
        if not ok:
            raise ChunkKernelUnavailable(f"chunk kernel 'fla-graphs' unavailable: {why}")
        chunk_simple_gla, _ = _fla_chunk_simple_gla()
        self._fns = self._g_gamma = None  # the old shape's graphs and their pool go before the new ones are captured
        # fla multiplies g_gamma by 1/ln 2 in its own dtype and loads it per head: fp32 is what its kernels expect.
        # Kept here: the graphs read it by address at every replay, and nothing else holds it once captured (freed,
        # its memory reused, the decays became garbage from the second step on: the GPU parity test caught it)
        g_gamma = self._g_gamma = log_gamma.detach().to(device=q.device, dtype=torch.float32).contiguous()

        def retention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return chunk_simple_gla(q, k, v, g_gamma=g_gamma, scale=1.0)[0]

        def static(t: Tensor) -> Tensor:
            return (torch.randn(t.shape, device=t.device, dtype=t.dtype) * 0.1).requires_grad_()

        samples = tuple((static(q), static(k), static(v)) for _ in range(self.n_layers))
        self._fns = torch.cuda.make_graphed_callables(tuple(retention for _ in range(self.n_layers)), samples)
        self._key, self._next, self._awaiting_backward = key, 0, False
