"""CI gate: a fresh CPU smoke run against the committed reference (results/reference/cpu-smoke/).

Deterministic columns (parameter counts, analytic bytes and memory) must match exactly: they change only when a
model or the analytic model changes, which must then be a deliberate update of the reference. CPU timings are
printed for information and never fail CI (shared 2-core machines are noisy).

    python -m retnet_bench.reports.ci_gate REFERENCE_RUN NEW_RUN      # exit 0 ok, 1 mismatch, 2 bad input
"""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from .compare import CompareInputError, compare_deterministic, compare_runs, render_rich


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    console = Console()
    if len(args) != 2:
        console.print("usage: python -m retnet_bench.reports.ci_gate REFERENCE_RUN NEW_RUN", markup=False)
        return 2
    reference, new = map(Path, args)
    try:
        mismatches = compare_deterministic(reference, new)
        timing = compare_runs(reference, new, allow_mismatch=True)
    except CompareInputError as e:
        console.print(f"error: {e}", markup=False)
        return 2
    console.print("[bold]CPU timings vs reference (information only, never fails CI):[/]")
    console.print(render_rich(timing))
    if mismatches:
        console.print(f"[bold red]{len(mismatches)} deterministic column mismatch(es) vs {reference}:[/]")
        for line in mismatches:
            console.print(f"  {line}", markup=False)
        return 1
    console.print(f"[bold green]deterministic columns match {reference}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
