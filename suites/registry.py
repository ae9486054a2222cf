"""The one registry from impl names to builders. Only suites/ builds models."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .contestants import Analytic, Contestant

RETNET_DECODE = ("retnet-recurrent",)
RETNET_TRAIN = ("retnet-chunkwise", "retnet-parallel")
TRANSFORMER_DECODE = ("static", "paper-like", "hf", "hf-static")
TRANSFORMER_TRAIN = ("transformer",)
PEERS = ("torchscale-retnet", "torchscale-transformer", "fla-retnet")
KERNEL_IMPLS = ("static", "transformer")  # impls whose attention kernel is chosen by name


@dataclass(frozen=True)
class ImplInfo:
    name: str
    arch: str
    phases: tuple[str, ...]
    description: str


IMPLS: dict[str, ImplInfo] = {i.name: i for i in (
    ImplInfo("retnet-recurrent", "retnet", ("decode", "capacity"),
             "RetNet: chunkwise prefill, then the recurrent step (one CUDA graph per step on GPU)"),
    ImplInfo("retnet-chunkwise", "retnet", ("train",), "RetNet training in the chunkwise recurrent form"),
    ImplInfo("retnet-parallel", "retnet", ("train",), "RetNet training in the parallel form"),
    ImplInfo("static", "transformer", ("decode", "capacity"),
             "Transformer, preallocated KV cache, in-place writes, one CUDA graph per step, chosen kernel"),
    ImplInfo("paper-like", "transformer", ("decode", "capacity"),
             "Transformer as the paper's pipeline decoded: torch.cat-grown cache, bmm + fp32 softmax"),
    ImplInfo("hf", "transformer", ("decode", "capacity"), "Hugging Face LlamaForCausalLM, SDPA, dynamic cache"),
    ImplInfo("hf-static", "transformer", ("decode", "capacity"), "Hugging Face LlamaForCausalLM, static cache"),
    ImplInfo("transformer", "transformer", ("train",), "Transformer training with the chosen attention kernel"),
    ImplInfo("torchscale-retnet", "retnet", ("decode", "capacity"), "torchscale 0.3.0 RetNetDecoder (official code)"),
    ImplInfo("torchscale-transformer", "transformer", ("decode", "capacity"),
             "torchscale 0.3.0 Decoder with xPos (the paper's baseline code)"),
    ImplInfo("fla-retnet", "retnet", ("decode", "capacity"), "flash-linear-attention RetNetForCausalLM (Triton)"),
    ImplInfo("attention", "transformer", ("op",), "one layer's causal attention (op level), chosen kernel"),
    ImplInfo("retention-parallel", "retnet", ("op",), "one layer's retention, parallel form (op level)"),
    ImplInfo("retention-chunkwise", "retnet", ("op",), "one layer's retention, chunkwise form (op level)"),
    ImplInfo("retention-recurrent", "retnet", ("op",), "one recurrent retention step (op level), torch or triton"),
)}
OP_IMPLS = ("attention", "retention-parallel", "retention-chunkwise", "retention-recurrent")


def kernel_names() -> tuple[str, ...]:
    from retnet_bench.baselines import KERNELS

    return tuple(KERNELS)


def preset_names() -> tuple[str, ...]:
    from retnet.config import PRESETS

    return tuple(PRESETS)


def check_names(impls: list[str], kernels: list[str], models: list[str]) -> None:
    """Raise ValueError (one line) for an unknown impl, kernel or model preset."""
    for impl in impls:
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r} (choose from {', '.join(IMPLS)})")
    for k in kernels:
        if k not in kernel_names():
            raise ValueError(f"unknown kernel {k!r} (choose from {', '.join(kernel_names())})")
    for m in models:
        if m not in preset_names():
            raise ValueError(f"unknown model {m!r} (choose from {', '.join(preset_names())})")


def check_lengths(models: list[str], seq_lens: list[int]) -> None:
    """Raise ValueError (one line) when a length exceeds what a preset supports."""
    from retnet import RetNetConfig
    from retnet_bench.baselines import TransformerConfig

    for m in models:
        limits = [getattr(c.from_name(m), "max_seq_len", None) for c in (RetNetConfig, TransformerConfig)]
        limit = min((x for x in limits if x), default=None)
        too_long = [t for t in seq_lens if limit and t > limit]
        if too_long:
            raise ValueError(f"length {too_long[0]} is beyond what model {m!r} supports (max {limit})")


def availability(impl: str, kernel: str, device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    """Whether this impl/kernel can run here; the reason becomes a `skipped` row's error."""
    if impl in KERNEL_IMPLS or impl == "attention":
        from retnet_bench.baselines import kernel_available

        # a decode contestant needs the kernel's masked single-query path (sdpa-flash has none)
        return kernel_available(kernel, device, dtype, phase="decode" if impl == "static" else "train")
    if impl == "retention-recurrent" and kernel == "triton":
        from retnet.kernels import triton_available

        if device.type != "cuda" or not triton_available():
            return False, "the triton step kernel needs a CUDA GPU and the triton package"
    if impl in PEERS:
        from retnet_bench.baselines.peers import peer_available

        ok, why = peer_available(impl)
        if ok and impl == "fla-retnet" and device.type != "cuda":
            return False, "fla-retnet needs a CUDA GPU (Triton kernels)"
        return ok, why
    return True, ""


def contestant_kernel(impl: str, kernel: str) -> str:
    """The kernel name a row will carry before the model is built (for skipped/error rows and resume keys)."""
    if impl in KERNEL_IMPLS:
        return kernel
    return {"paper-like": "bmm-softmax", "hf": "sdpa", "hf-static": "sdpa", "torchscale-retnet": "torchscale",
            "torchscale-transformer": "torchscale", "fla-retnet": "fla"}.get(impl, "torch")


def build(impl: str, kernel: str, preset: str, device: torch.device, dtype: torch.dtype, *, chunk_size: int = 512,
          use_graph: bool = True, seed: int = 0) -> Contestant:
    if impl in RETNET_DECODE + RETNET_TRAIN:
        from .impl_retnet import RetNetContestant

        return RetNetContestant(preset, impl, device, dtype, chunk_size=chunk_size, use_graph=use_graph, seed=seed)
    if impl in ("static", "paper-like", "transformer"):
        from .impl_transformer import TransformerContestant

        return TransformerContestant(preset, impl, kernel, device, dtype, use_graph=use_graph, seed=seed)
    if impl in ("hf", "hf-static"):
        from .impl_transformer import HFContestant

        return HFContestant(preset, impl, device, dtype, seed=seed)
    if impl in OP_IMPLS:
        from .ops import OpContestant

        return OpContestant(impl, kernel, preset, device, dtype, chunk_size=chunk_size, seed=seed)
    if impl in PEERS:
        from .impl_peers import PeerContestant

        return PeerContestant(impl, preset, device, dtype, seed=seed)
    raise ValueError(f"unknown impl {impl!r}")


__all__ = ["Analytic", "Contestant", "IMPLS", "availability", "build", "check_names", "contestant_kernel"]
