"""From a suite definition to the points to measure, grouped by the model each group builds once.

Every name a row will carry (impl, kernel, KV heads, state precision) is decided here, from the contestant specs,
so that the plan's point keys and the rows' keys are the same and `--resume` skips exactly the finished points.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .contestants.spec import ContestantSpec, Variant, get_spec
from .contract import DECODE_GEMM_PHASES, TRAIN_VARIANT_DEFAULTS, decode_gemm_ran, point_key
from .suite import Scenario, Suite

# the phases each scenario measures, in the order its points run
SCENARIO_PHASES = {"decode": ("decode",), "capacity": ("capacity",), "train": ("train",),
                   "op": ("op_fwd", "op_fwdbwd", "op_decode")}


@dataclass
class Point:
    phase: str
    batch_size: int | None
    seq_len: int


@dataclass
class Group:
    """Points measured with one built model (weights built once per group)."""
    scenario: str
    model: str
    spec: ContestantSpec
    kernel: str
    variant: Variant
    settings: Scenario
    points: list[Point] = field(default_factory=list)
    decode_gemm: str | None = None  # decode / capacity groups: the steps' projection kernel, resolved ("torch" | "triton")

    @property
    def impl(self) -> str:
        return self.spec.name

    @property
    def arch(self) -> str:
        return self.spec.arch

    @property
    def world_size(self) -> int:
        return getattr(self.settings, "nproc", 1)

    @property
    def uses_engine(self) -> bool:
        """Training on the engine (suites/training: a real optimizer step, FSDP2, tensor parallelism): a train
        scenario with the optimizer on and a contestant with a training recipe. Other train points run the
        contestant's own forward + backward in this process."""
        return bool(getattr(self.settings, "optimizer", False) and self.spec.recipe is not None)

    def key(self, p: Point, dtype: str) -> tuple:
        return point_key(self.row_identity(p, dtype))

    def row_identity(self, p: Point, dtype: str) -> dict:
        """The identifying columns of this point's row (also its resume key)."""
        # the training-only variants: tensor parallelism, checkpointing and compile apply on the engine; a peer's own
        # forward + backward runs without them, whatever the suite says
        variants = dict.fromkeys(TRAIN_VARIANT_DEFAULTS)
        if p.phase == "train":
            variants = dict(TRAIN_VARIANT_DEFAULTS)
            if self.uses_engine:
                variants.update(tensor_parallel=self.settings.tp, checkpointing=self.settings.checkpointing,
                                compile=self.settings.compile)
        # what the step ran (a prefill row has no decode step; a step over more than 16 sequences ran F.linear)
        gemm = decode_gemm_ran(self.decode_gemm, p.batch_size) if p.phase in DECODE_GEMM_PHASES else None
        return dict(model=self.model, arch=self.arch, role=self.spec.role, impl=self.impl, kernel=self.kernel,
                    n_kv_heads=self.variant.n_kv_heads, state_dtype=self.variant.state_dtype, phase=p.phase,
                    batch_size=p.batch_size, seq_len=p.seq_len, dtype=dtype, world_size=self.world_size,
                    decode_gemm=gemm, **variants)


def query_heads(model: str) -> int:
    from retnet_bench.baselines import TransformerConfig

    return TransformerConfig.from_name(model).n_heads


def variants(spec: ContestantSpec, sc: Scenario, model: str) -> list[Variant]:
    """The variants of `spec` a scenario asks for, with the values rows carry (KV heads as a count: 0 -> n_heads)."""
    out: list[Variant] = []
    if "n_kv_heads" in spec.variants:
        heads = query_heads(model)
        kv_dtypes = [None, *getattr(sc, "kv_dtypes", [])] if "kv_dtype" in spec.variants else [None]
        for n in sc.n_kv_heads:
            for d in kv_dtypes:  # a KV-cache precision rides in the row's state_dtype (what the decoder carries)
                v = Variant(n_kv_heads=n or heads, state_dtype=d)
                if v not in out:
                    out.append(v)
    elif spec.arch == "transformer":  # every attention model has a KV-head count; this one is fixed (MHA)
        out = [Variant(n_kv_heads=query_heads(model))]
    elif "state_dtype" in spec.variants:
        out = [Variant(state_dtype=d) for d in dict.fromkeys(sc.state_dtypes)]
    return out or [Variant()]


def impls_for(kind: str, sc: Scenario) -> list[ContestantSpec]:
    """The contestants of a scenario. The `op` scenario runs every op-level contestant (none is named)."""
    if kind == "op":
        from .contestants.spec import load_specs

        return [s for s in load_specs().values() if set(s.phases) & set(SCENARIO_PHASES["op"])]
    return [get_spec(name) for name in sc.impls]


def check_phases(suite: Suite) -> None:
    """A contestant named in a scenario it does not take part in is bad input (ValueError, one line): a decode-only
    impl in the train table would otherwise give rows labelled with a name that did not run."""
    for kind, sc in suite.scenarios.items():
        for spec in impls_for(kind, sc):
            if not set(spec.phases) & set(SCENARIO_PHASES[kind]):
                raise ValueError(f"suite {suite.name!r} [{kind}]: impl {spec.name!r} has no {kind} phase "
                                 f"(it takes part in: {', '.join(spec.phases)})")


def resolved_decode_gemm(spec: ContestantSpec, sc: Scenario, device: torch.device, dtype: str) -> str:
    """What the decode step's projections run for this contestant: the suite's setting where the contestant takes
    it ("auto" resolved for this device and dtype), else "torch" (its own F.linear)."""
    from retnet.kernels.skinny_linear import resolve_decode_gemm

    if not spec.decode_gemm:
        return "torch"
    return resolve_decode_gemm(getattr(sc, "decode_gemm", "auto"), device, getattr(torch, dtype))


def plan(suite: Suite, device: torch.device) -> list[Group]:
    groups: list[Group] = []
    for model in suite.models:
        for kind in ("decode", "capacity", "op", "train"):
            sc = suite.scenarios.get(kind)
            if sc is None:
                continue
            for spec in impls_for(kind, sc):
                phases = [ph for ph in SCENARIO_PHASES[kind] if ph in spec.phases]
                for kernel in spec.resolve_kernels(sc.kernels, device, model):
                    for variant in variants(spec, sc, model):
                        g = Group(kind, model, spec, kernel, variant, sc)
                        if kind in DECODE_GEMM_PHASES:
                            g.decode_gemm = resolved_decode_gemm(spec, sc, device, suite.dtype)
                        if kind == "capacity":
                            g.points = [Point("capacity", None, sc.seq_len)]
                        else:
                            g.points = [Point(ph, b, t) for ph in phases for t in sc.seq_lens for b in sc.batch_sizes]
                        groups.append(g)
    return groups
