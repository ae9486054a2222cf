"""The result-row contract (see docs/CONTRACTS.md and the README's "Result rows").

Every row written by the runner has every column in ROW_COLUMNS (None where not applicable), so pandas, the
report and `compare` can rely on the columns being there.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

SCHEMA_VERSION = 1

ROW_COLUMNS: tuple[str, ...] = (
    "run_id", "suite", "model", "arch", "impl", "kernel", "phase", "batch_size", "seq_len", "chunk_size",
    "dtype", "status", "error",
    "ms_median", "ms_p10", "ms_p90", "n_repeats", "tokens_per_s", "ms_per_token",
    "mem_nvml_peak_gb", "mem_nvml_delta_gb", "mem_torch_peak_gb", "mem_torch_reserved_gb", "mem_rss_peak_gb",
    "mem_analytic_gb", "weights_gb", "bytes_per_step", "flops_per_token", "achieved_gbps", "pct_peak_bw",
    "n_params", "capacity_budget_gb", "device", "gpu_name", "notes", "timestamp",
)

# Identify a sweep point; `--resume` skips points whose key already has a row.
POINT_KEY: tuple[str, ...] = ("model", "arch", "impl", "kernel", "phase", "batch_size", "seq_len", "dtype")

STATUSES = ("ok", "oom", "error", "skipped", "over_budget")


def make_row(**values: Any) -> dict[str, Any]:
    """A full row: every schema column present, unknown keys rejected (a typo must not become a new column)."""
    unknown = set(values) - set(ROW_COLUMNS)
    if unknown:
        raise KeyError(f"unknown result columns: {sorted(unknown)}")
    row = {c: None for c in ROW_COLUMNS}
    row.update(values)
    if row["status"] not in STATUSES:
        raise ValueError(f"bad status {row['status']!r}")
    row["timestamp"] = row["timestamp"] or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return row


def point_key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(k) for k in POINT_KEY)
