"""Add the `contestants` table to old runs' env.json (runs written before the runner recorded it).

For every env.json under the given roots (default results/reference/) that lacks `contestants`, write the table
from the contestant specs of the current code (`load_specs()`, `ContestantSpec.describe()`), only for the impls
present in that run's rows, in the registry's order, plus `contestants_note` saying when and from which commit.
The rows are never touched. Idempotent: a run that already has the table is left alone.

    python scripts/backfill_env_contestants.py [ROOT ...] [--dry-run]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
from pathlib import Path

from retnet_bench.suites.contestants.spec import load_specs
from retnet_bench.suites.contract import read_rows

REPO = Path(__file__).resolve().parents[1]


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _impls(run_dir: Path) -> list[str]:
    rows = run_dir / "rows.jsonl"
    if rows.is_file():
        return list(dict.fromkeys(str(r["impl"]) for r in read_rows(rows) if r.get("impl")))
    table = run_dir / "table.csv"
    if table.is_file():
        import csv
        with table.open(newline="", encoding="utf-8") as f:
            return list(dict.fromkeys(r["impl"] for r in csv.DictReader(f) if r.get("impl")))
    return []


def backfill(env_path: Path, specs: dict, note: str, dry_run: bool = False) -> str:
    """Add the table to one env.json; returns a one-line account of what was done."""
    env = json.loads(env_path.read_text(encoding="utf-8"))
    if "contestants" in env:
        return f"{env_path}: has contestants, left alone"
    present = set(_impls(env_path.parent))
    unknown = sorted(present - set(specs))
    table = {name: spec.describe() for name, spec in specs.items() if name in present}
    env["contestants"], env["contestants_note"] = table, note
    if not dry_run:
        env_path.write_text(json.dumps(env, indent=2) + "\n", encoding="utf-8")
    extra = f"; no spec for {', '.join(unknown)} (left to the report's row fallback)" if unknown else ""
    return f"{env_path}: added {len(table)} contestants ({', '.join(table)}){extra}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*", type=Path, default=[REPO / "results" / "reference"])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    note = (f"added {dt.date.today().isoformat()} from the contestant specs at commit {_commit()}; "
            "the rows are unchanged")
    specs = load_specs()
    for root in args.roots:
        for env_path in sorted(root.rglob("env.json")):
            print(backfill(env_path, specs, note, args.dry_run))


if __name__ == "__main__":
    main()
