"""One spec per contestant: everything the plan, `list`, `--resume`, skipped rows and reports need to know about it.

A spec is declared once, beside its adapter, with `@contestant(...)` on the adapter's builder. Nothing else keeps a
list of impl names: the registry below is filled by importing the adapter modules (`SPECS`, `get_spec`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from .base import Contestant

Availability = tuple[bool, str]


@dataclass(frozen=True)
class Variant:
    """The settings of one contestant point beyond (model, kernel): KV heads of a Transformer (None = as many as
    query heads), precision of what a decoder carries between steps, the RetNet state or a Transformer's KV cache
    (None = the family's default: fp32 state, KV cache in the model dtype). Both are row columns and key parts."""

    n_kv_heads: int | None = None
    state_dtype: str | None = None


@dataclass(frozen=True)
class ContestantSpec:
    name: str                                   # the impl name rows carry
    arch: str                                   # architecture family: retnet | transformer | ...
    role: str                                   # candidate (linear-time architecture under test) | baseline
    phases: tuple[str, ...]                     # scenarios it takes part in: decode, capacity, train, op_*
    description: str
    build: Callable[..., "Contestant"]          # build(spec, BuildArgs) -> Contestant
    kernels: tuple[str, ...] = ()               # kernel names it accepts by name (empty: its kernel is fixed)
    default_kernel: Callable[[torch.device, str], str] | str = "torch"  # (device, preset) -> the row kernel when the
    #                                                                      suite names none it accepts
    available: Callable[[str, torch.device, torch.dtype], Availability] = field(default=lambda k, d, t: (True, ""))
    variants: tuple[str, ...] = ()              # which Variant fields apply: "n_kv_heads", "state_dtype", "kv_dtype"
    install_hint: str = ""
    recipe: Callable[[BuildArgs], object] | None = None  # train: the engine's ModelRecipe (no recipe: fwd+bwd only)
    source: str = "ours"                        # ours | official (the authors' or a library's published code)
    pipeline: str = ""                          # "paper": decodes as the paper's measured pipeline did
    decode_gemm: bool = False                   # its decode step takes the suite's decode_gemm (else F.linear)

    def describe(self) -> dict:
        """What reports need to know about this contestant (written to env.json's `contestants`)."""
        return dict(arch=self.arch, role=self.role, phases=list(self.phases), description=self.description,
                    source=self.source, pipeline=self.pipeline)

    def resolve_kernels(self, requested: list[str], device: torch.device, preset: str = "") -> list[str]:
        """The kernels this contestant runs for a suite's kernel list, decided once when the plan is built:
        the requested names it accepts, else its default for this device and model preset (e.g. `triton` for the
        RetNet step on a GPU). The plan's keys, the rows and `--resume` all use the names returned here."""
        taken = [k for k in requested if k in self.kernels]
        if taken:
            return taken
        default = self.default_kernel(device, preset) if callable(self.default_kernel) else self.default_kernel
        return [default]


@dataclass(frozen=True)
class BuildArgs:
    preset: str
    kernel: str
    device: torch.device
    dtype: torch.dtype
    variant: Variant = Variant()
    chunk_size: int = 512
    use_graph: bool = True
    seed: int = 0
    scenario: str = ""        # the scenario the contestant is built for (a peer builds a training model for "train")
    decode_gemm: str = "torch"  # the decode step's projections, resolved by the plan ("torch" | "triton")


SPECS: dict[str, ContestantSpec] = {}


def contestant(**kw) -> Callable:
    """Register the decorated builder `fn(spec, args) -> Contestant` under the spec `ContestantSpec(build=fn, **kw)`."""

    def register(fn: Callable) -> Callable:
        spec = ContestantSpec(build=fn, **kw)
        if spec.name in SPECS:
            raise ValueError(f"contestant {spec.name!r} declared twice")
        SPECS[spec.name] = spec
        return fn

    return register


def load_specs() -> dict[str, ContestantSpec]:
    """Import every adapter module once (each registers its specs) and return the registry."""
    from . import ops, peers, retnet, transformer  # noqa: F401  (import for the registration side effect)

    return SPECS


def get_spec(name: str) -> ContestantSpec:
    specs = load_specs()
    if name not in specs:
        raise ValueError(f"unknown impl {name!r} (choose from {', '.join(specs)})")
    return specs[name]


def known_kernels() -> tuple[str, ...]:
    """Every kernel name some contestant accepts (suite files and --kernel may name only these)."""
    return tuple(dict.fromkeys(k for spec in load_specs().values() for k in spec.kernels))
