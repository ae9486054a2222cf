"""From a suite definition to the points to measure, grouped by the model each group builds once."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import registry
from .spec import Suite


@dataclass
class Point:
    phase: str
    batch_size: int | None
    seq_len: int


@dataclass
class Group:
    """Points measured with one built model (weights built once per group)."""
    model: str
    impl: str
    kernel: str
    points: list[Point] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return registry.IMPLS[self.impl].arch


def plan(suite: Suite) -> list[Group]:
    groups: list[Group] = []

    def kernels_for(impl: str) -> list[str]:
        return suite.kernels if impl in registry.KERNEL_IMPLS else [registry.contestant_kernel(impl, "")]

    for model in suite.models:
        for impl in suite.impls:
            for kernel in kernels_for(impl):
                g = Group(model, impl, kernel)
                if "decode" in suite.phases:
                    g.points += [Point("decode", b, t) for t in suite.seq_lens for b in suite.batch_sizes]
                if "capacity" in suite.phases:
                    g.points.append(Point("capacity", None, suite.capacity_seq_len))
                if g.points:
                    groups.append(g)
        if "op" in suite.phases:
            from .ops import OP_IMPLS, RETENTION_STEP_KERNELS

            for impl, phases in OP_IMPLS.items():
                kernels = suite.kernels if impl == "attention" else (
                    list(RETENTION_STEP_KERNELS) if impl == "retention-recurrent" else ["torch"])
                for kernel in kernels:
                    groups.append(Group(model, impl, kernel, [Point(ph, b, t) for ph in phases
                                                              for t in suite.seq_lens for b in suite.batch_sizes]))
        if "train" in suite.phases:
            for impl in suite.train_impls:
                for kernel in kernels_for(impl):
                    groups.append(Group(model, impl, kernel, [Point("train", b, t) for t in suite.train_seq_lens
                                                              for b in suite.train_batch_sizes]))
    return groups
