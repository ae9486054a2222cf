"""Who each contestant is, from the runs themselves: the merged `contestants` tables of the runs' env.json.

The report layer keeps no list of impl names. Every question it asks about a contestant (is it the subject RetNet
line, the paper's pipeline, an official peer; which colour does it get) is answered from the table each run writes
(`env.json` -> `contestants`: {impl: {arch, role, phases, description, source, pipeline}}, see docs/CONTRACTS.md)
and from the row columns. A run without the table (written before it existed) falls back to its rows' `role` and
`arch`, with source "ours" and no pipeline; `Roster.note()` says which contestants were read that way.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SOURCE_OURS, SOURCE_OFFICIAL = "ours", "official"
PIPELINE_PAPER = "paper"  # decodes as the paper's measured pipeline did (a torch.cat-grown KV cache)


@dataclass(frozen=True)
class Contestant:
    name: str                  # the impl name rows carry
    arch: str                  # architecture family (retnet, transformer, ...)
    role: str                  # candidate | baseline
    phases: tuple[str, ...]    # scenarios it takes part in; () when unrecorded (then: every phase)
    description: str = ""
    source: str = SOURCE_OURS  # ours | official
    pipeline: str = ""         # "paper" or ""
    recorded: bool = True      # False: rebuilt from the row columns of a run without a contestants table

    def takes_part_in(self, phase: str) -> bool:
        return not self.phases or phase in self.phases

    @property
    def group(self) -> tuple[str, str, str]:
        """(role, source, pipeline): what decides a contestant's colour family and its place in a legend."""
        return self.role, self.source, self.pipeline


class Roster:
    """The merged contestants table of a set of runs, in table order (first appearance; later runs' entries win)."""

    def __init__(self, table: dict[str, Contestant]):
        self.table = dict(table)

    @classmethod
    def from_runs(cls, envs: dict[str, dict], rows: pd.DataFrame | None = None) -> "Roster":
        """Merge the envs' `contestants` tables in run order (a later run's entry replaces an earlier one, keeping
        its place); impls in `rows` that no table describes are rebuilt from their rows' role and arch."""
        table: dict[str, Contestant] = {}
        for env in envs.values():
            for name, spec in (env.get("contestants") or {}).items():
                if isinstance(spec, dict):
                    table[str(name)] = Contestant(
                        name=str(name), arch=str(spec.get("arch") or ""), role=str(spec.get("role") or ""),
                        phases=tuple(spec.get("phases") or ()), description=str(spec.get("description") or ""),
                        source=str(spec.get("source") or SOURCE_OURS), pipeline=str(spec.get("pipeline") or ""))
        if rows is not None and len(rows) and "impl" in rows.columns:
            for impl, g in rows.groupby("impl", sort=False):
                if str(impl) in table:
                    continue
                first = lambda col: next((str(v) for v in g[col].dropna()), "") if col in g.columns else ""  # noqa
                table[str(impl)] = Contestant(name=str(impl), arch=first("arch"), role=first("role"), phases=(),
                                              recorded=False)
        return cls(table)

    def get(self, impl: object) -> Contestant | None:
        return self.table.get(str(impl))

    def _select(self, phase: str, **want) -> list[str]:
        return [c.name for c in self.table.values() if c.takes_part_in(phase)
                and all(getattr(c, k) == v for k, v in want.items())]

    def subjects(self, phase: str) -> list[str]:
        """The subject line(s) of a phase: our own candidates (role candidate, source ours) in that phase."""
        return self._select(phase, role="candidate", source=SOURCE_OURS)

    def own_baselines(self, phase: str) -> list[str]:
        """Our own baselines of a phase outside the paper's pipeline (what the subject is measured against)."""
        return self._select(phase, role="baseline", source=SOURCE_OURS, pipeline="")

    def paper_pipeline(self, phase: str) -> list[str]:
        """The paper's pipeline baselines of a phase, in preference order: the official code first (the paper
        measured torchscale's code), then ours, each in table order."""
        found = self._select(phase, role="baseline", pipeline=PIPELINE_PAPER)
        return sorted(found, key=lambda n: self.table[n].source != SOURCE_OFFICIAL)

    def official(self, phase: str | None = None) -> list[str]:
        """Official peers (the authors' or a library's published code)."""
        return [c.name for c in self.table.values() if c.source == SOURCE_OFFICIAL
                and (phase is None or c.takes_part_in(phase))]

    def unrecorded(self) -> list[str]:
        return [c.name for c in self.table.values() if not c.recorded]

    def note(self) -> str:
        """One line for the report's notes when some contestant came from a run without a contestants table."""
        missing = self.unrecorded()
        if not missing:
            return ""
        return (f"{len(missing)} contestant(s) come from run(s) whose env.json has no `contestants` table "
                f"({', '.join(missing)}): their role and family are read from the rows, and they are treated as "
                "our own code (source ours) outside the paper's pipeline.")

    def index(self, impl: object) -> int:
        """Place in the table (unknown impls last)."""
        return list(self.table).index(str(impl)) if str(impl) in self.table else len(self.table)

    def rank_in_group(self, impl: str, key=lambda c: c.group) -> int:
        """How many contestants of the same group (`key`, by default (role, source, pipeline)) that share a phase
        with `impl` come before it in the table: the shade index of its colour family."""
        me = self.table[impl]
        rank = 0
        for c in self.table.values():
            if c.name == impl:
                return rank
            shares = not me.phases or not c.phases or set(me.phases) & set(c.phases)
            rank += key(c) == key(me) and bool(shares)
        return rank


def roster_of(df: pd.DataFrame, envs: dict[str, dict] | None) -> Roster:
    """The roster `load_runs` attached to the rows (`df.attrs['roster']`), else one merged from `envs` and rows."""
    roster = df.attrs.get("roster") if hasattr(df, "attrs") else None
    return roster if isinstance(roster, Roster) else Roster.from_runs(envs or {}, df)
