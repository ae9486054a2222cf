"""Append-only result storage: rows.jsonl is flushed and fsynced per point, so finished rows survive a crash."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .schema import ROW_COLUMNS, point_key


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RowWriter:
    def __init__(self, path: Path):
        self.path = path

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a rows.jsonl; a torn last line (crash mid-write) is dropped, any other bad line is an error."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise ValueError(f"{path}: line {i + 1} is not JSON")
    return rows


def repair_torn_tail(path: Path) -> None:
    """Rewrite rows.jsonl without a torn final line so appends start on a clean line."""
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        rows = read_rows(path)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def done_keys(rows: Iterable[dict[str, Any]]) -> set[tuple]:
    return {point_key(r) for r in rows}


def write_table(run_dir: Path) -> Path:
    rows = read_rows(run_dir / "rows.jsonl")
    df = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    out = run_dir / "table.csv"
    df.to_csv(out, index=False)
    return out
