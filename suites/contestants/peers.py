"""Official-code peers (torchscale 0.3.0, flash-linear-attention) behind the same contestant interface.
Specs declared here, beside the adapter; the peer models themselves live in baselines/peers/."""
from __future__ import annotations

from typing import Callable

import torch

from retnet import RetNetConfig

from .base import Analytic, Contestant, kv_cache_costs, random_ids, recurrent_state_costs
from .spec import Availability, BuildArgs, ContestantSpec, contestant


class TorchscaleTrainer(Contestant):
    """torchscale's own training forward + backward (the paper's Table 4 pipeline): RetNet in its chunkwise
    recurrent form with the suite's chunk (512), the Transformer with xPos and its own attention. No optimizer step:
    rows say forward + backward only, like every contestant without an engine recipe."""

    def __init__(self, spec: ContestantSpec, a: BuildArgs):
        from retnet_bench.baselines.peers import build_torchscale_for_training

        super().__init__(a.device, a.dtype, use_graph=False)
        self.impl, self.arch, self.kernel, self.seed = spec.name, spec.arch, a.kernel, a.seed
        torch.manual_seed(a.seed)
        self.model = build_torchscale_for_training(spec.arch, a.preset, a.dtype, a.device, a.chunk_size)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.shape = RetNetConfig.from_name(a.preset)
        self.vocab = self.shape.vocab_size
        chunked = f"chunkwise recurrent form, chunk {a.chunk_size}" if spec.arch == "retnet" else "xPos, its own attention"
        self.notes = f"torchscale 0.3.0 training forward + backward ({chunked})"

    def analytic(self, batch: int, seq_len: int) -> Analytic:
        return Analytic(self.n_params * self.dtype.itemsize, 0, 0, 2.0 * self.n_params)

    def train_step(self, batch: int, seq_len: int) -> None:
        ids = random_ids(self.vocab, batch, seq_len, self.device, self.seed)
        logits, _ = self.model(ids)  # (B, T, V)
        self._lm_loss(logits, ids).backward()
        self.model.zero_grad(set_to_none=False)  # keep grads allocated: a real training loop holds them

    def close(self) -> None:
        super().close()
        del self.model


class PeerContestant(Contestant):
    # torchscale cannot prefill a RetNet in one pass (and its Transformer prefill at 8k is slow): the peers' state is
    # built at length T from random values (baselines/peers/), so the runner times no prefill for them
    can_prefill = False

    def __init__(self, spec: ContestantSpec, a: BuildArgs, build_peer: Callable):
        super().__init__(a.device, a.dtype, use_graph=False)  # the peers decode eagerly, as their code does
        self.impl, self.arch, self.kernel = spec.name, spec.arch, a.kernel
        torch.manual_seed(a.seed)
        self.peer = build_peer(a.preset, a.dtype, a.device)
        self.n_params = self.peer.n_params
        self.shape = RetNetConfig.from_name(a.preset)  # the peers are built at our preset's width and vocabulary
        self.notes = f"{self.peer.notes}; cache put back to length T between timed steps (rewind)"
        self.peer.warmup()  # first use compiles / autotunes kernels (fla: Triton), outside every point

    def analytic(self, batch: int, seq_len: int) -> Analytic:
        # the same family cost model as our own adapters; FLOPs: 2 per parameter (the peers' own attention or
        # retention terms are not modelled)
        d, vocab, elt = self.shape.d_model, self.shape.vocab_size, self.dtype.itemsize
        if self.arch == "transformer":
            return kv_cache_costs(self.n_params, vocab, d, batch, elt, lambda t: self.peer.state_bytes_at(batch, t),
                                  seq_len, 2.0 * self.n_params)
        return recurrent_state_costs(self.n_params, vocab, d, batch, elt, self.peer.state_bytes_at(batch, seq_len),
                                     2.0 * self.n_params)

    @torch.inference_mode()
    def fill(self, batch: int, seq_len: int) -> None:
        self.peer.prefill_state(batch, seq_len)

    def _step(self) -> None:
        self.peer.step()

    def _between_steps(self) -> None:
        self.peer.rewind()  # decode at exactly T tokens of context, like every other contestant

    @property
    def works_between_steps(self) -> bool:
        return True

    def end(self) -> None:
        super().end()
        self.peer.reset()

    def close(self) -> None:
        super().close()
        del self.peer


def _torchscale(kernel: str, device: torch.device, dtype: torch.dtype) -> Availability:
    from retnet_bench.baselines.peers import torchscale_available

    return torchscale_available()


def _fla(kernel: str, device: torch.device, dtype: torch.dtype) -> Availability:
    from retnet_bench.baselines.peers import fla_available

    if device.type != "cuda":
        return False, "fla's RetNet needs a CUDA GPU (Triton kernels)"
    return fla_available()


_TORCHSCALE_INSTALL = "pip install --no-deps torchscale==0.3.0 fairscale==0.4.0"


@contestant(name="torchscale-retnet", arch="retnet", role="candidate", phases=("decode", "capacity", "train"),
            description="torchscale 0.3.0 RetNetDecoder (official code; trains in its chunkwise form)",
            default_kernel="torchscale", available=_torchscale, install_hint=_TORCHSCALE_INSTALL, source="official",
            pipeline="paper")
def build_torchscale_retnet(spec: ContestantSpec, args: BuildArgs) -> Contestant:
    from retnet_bench.baselines.peers import build_torchscale_retnet_peer

    if args.scenario == "train":
        return TorchscaleTrainer(spec, args)
    return PeerContestant(spec, args, build_torchscale_retnet_peer)


@contestant(name="torchscale-transformer", arch="transformer", role="baseline", phases=("decode", "capacity", "train"),
            description="torchscale 0.3.0 Decoder with xPos (the paper's baseline code)", default_kernel="torchscale",
            available=_torchscale, install_hint=_TORCHSCALE_INSTALL, source="official", pipeline="paper")
def build_torchscale_transformer(spec: ContestantSpec, args: BuildArgs) -> Contestant:
    from retnet_bench.baselines.peers import build_torchscale_transformer_peer

    if args.scenario == "train":
        return TorchscaleTrainer(spec, args)
    return PeerContestant(spec, args, build_torchscale_transformer_peer)


@contestant(name="fla-retnet", arch="retnet", role="candidate", phases=("decode", "capacity"),
            description="flash-linear-attention RetNetForCausalLM (Triton)", default_kernel="fla",
            available=_fla, install_hint="pip install flash-linear-attention==0.6.0", source="official")
def build_fla_retnet(spec: ContestantSpec, args: BuildArgs) -> PeerContestant:
    from retnet_bench.baselines.peers import build_fla_retnet_peer

    return PeerContestant(spec, args, build_fla_retnet_peer)
