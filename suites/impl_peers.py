"""Official-code peers (torchscale 0.3.0, flash-linear-attention) behind the same contestant interface."""
from __future__ import annotations

import torch

from retnet_bench.baselines.peers import build_peer

from .contestants import Analytic, Contestant


class PeerContestant(Contestant):
    # torchscale cannot prefill a RetNet in one pass (and its Transformer prefill at 8k is slow): the peers' state is
    # built at length T from random values (baselines/peers.py), so the runner times no prefill for them
    can_prefill = False

    def __init__(self, impl: str, preset: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
        super().__init__(device, dtype, use_graph=False)  # the peers decode eagerly, as their code does
        self.impl = impl
        self.arch = "transformer" if impl == "torchscale-transformer" else "retnet"
        self.kernel = "fla" if impl == "fla-retnet" else "torchscale"
        torch.manual_seed(seed)
        self.peer = build_peer(impl, preset, dtype, device)
        self.n_params = self.peer.n_params
        self.notes = f"{self.peer.notes}; cache put back to length T between timed steps (rewind)"
        self.peer.warmup()  # first use compiles / autotunes kernels (fla: Triton), outside every point

    def analytic(self, batch: int, seq_len: int) -> Analytic:
        weights = self.n_params * torch.empty((), dtype=self.dtype).element_size()
        cache = self.peer.state_bytes_at(batch, seq_len)  # the state at length T, as for our impls
        return Analytic(weights, cache, weights + cache, 2.0 * self.n_params)

    @torch.inference_mode()
    def fill(self, batch: int, seq_len: int) -> None:
        self.peer.prefill_state(batch, seq_len)

    def _step(self) -> None:
        self.peer.step()

    def _between_steps(self) -> None:
        self.peer.rewind()  # decode at exactly T tokens of context, like every other contestant

    def end(self) -> None:
        super().end()
        self.peer.reset()

    def close(self) -> None:
        super().close()
        del self.peer
