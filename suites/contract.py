"""The result-row contract: the one home of the row columns, the point key and the rows.jsonl reader/writer.

Imported by the runner (writing), the report loader and `compare` (reading). It imports neither torch nor a model,
so the report layer may import it (docs/CONTRACTS.md); `retnet_bench.suites` loads its torch-heavy modules lazily.
Every row has every column in ROW_COLUMNS (None where not applicable).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_VERSION = 3  # 2: role, n_kv_heads, state_dtype, world_size, tokens_per_s_per_gpu, mfu; 3: engine memory in GB
# Columns added since 2 (alloc_retries, checkpointing, tensor_parallel, compile, energy_j, joules_per_token,
# avg_power_w, decode_gemm, capacity_budget_gib, gpu_compute_ms, exposed_comm_ms, short_step_ms) read as null in older
# rows: additive, no new version. 3 changed only the training engine's memory unit, which readers convert (`holds_engine_gib`):
# `compare` mixes 2 and 3, no others.

ROW_COLUMNS: tuple[str, ...] = (
    "run_id", "suite", "model", "arch", "role", "impl", "kernel", "n_kv_heads", "state_dtype", "phase",
    "batch_size", "seq_len", "chunk_size", "dtype", "world_size", "tensor_parallel", "checkpointing", "compile",
    "decode_gemm", "status", "error", "ms_median", "ms_p10", "ms_p90", "n_repeats", "tokens_per_s", "tokens_per_s_per_gpu",
    "ms_per_token", "mfu", "mem_nvml_peak_gb", "mem_nvml_delta_gb", "mem_torch_peak_gb", "mem_torch_reserved_gb",
    "alloc_retries", "mem_rss_peak_gb", "mem_analytic_gb", "weights_gb", "bytes_per_step", "flops_per_token",
    "achieved_gbps", "pct_peak_bw", "energy_j", "joules_per_token", "avg_power_w", "gpu_compute_ms", "exposed_comm_ms",
    "short_step_ms", "n_params", "capacity_budget_gib", "device", "gpu_name", "notes", "timestamp",
)
NUMERIC_COLUMNS: tuple[str, ...] = (
    "n_kv_heads", "batch_size", "seq_len", "chunk_size", "world_size", "tensor_parallel", "ms_median", "ms_p10",
    "ms_p90", "n_repeats", "tokens_per_s", "tokens_per_s_per_gpu", "ms_per_token", "mfu", "mem_nvml_peak_gb",
    "mem_nvml_delta_gb", "mem_torch_peak_gb", "mem_torch_reserved_gb", "alloc_retries", "mem_rss_peak_gb",
    "mem_analytic_gb", "weights_gb", "bytes_per_step", "flops_per_token", "achieved_gbps", "pct_peak_bw", "energy_j",
    "joules_per_token", "avg_power_w", "gpu_compute_ms", "exposed_comm_ms", "short_step_ms", "n_params",
    "capacity_budget_gib",
)

# Environment variables that change what a run measures: env.json's `runtime_env` records them when set, the report
# names them, `compare` refuses two runs that differ in them. The allocator's settings are the sharpest: on the H200,
# expandable segments (torchtitan's default) made RetNet's 6.7B training step 17% slower
# (results/reference/h200/2026-11-29-probes-s7).
MEASURE_CHANGING_ENV: tuple[str, ...] = (
    "PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_NO_CUDA_MEMORY_CACHING", "CUDA_LAUNCH_BLOCKING",
    "NVIDIA_TF32_OVERRIDE", "CUBLAS_WORKSPACE_CONFIG",
)
# and every variable with these prefixes. fla (fla-core 0.6.0) reads a dozen FLA_* switches: backends that take its
# calls (FLA_TILELANG, FLA_GLUON, FLA_INTRACARD_CP), fast math in its kernels (FLA_USE_FAST_OPS), TMA, its autotune
# cache, its dispatch (FLA_DISABLE_BACKEND_DISPATCH: fla's dispatch wrappers cost 0.2 ms of host time per layer's
# retention forward + backward at 1.3B's head dims on the H200, results/reference/h200/2026-11-29-probes-s14)
MEASURE_CHANGING_PREFIXES: tuple[str, ...] = ("FLA_",)


def set_among(variables: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The `names` that are set in `variables` (os.environ, or an env.json's `runtime_env`), in `names`' order."""
    return {name: variables[name] for name in names if name in variables}


def with_prefix(variables: Mapping[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    """The entries of `variables` whose name starts with one of `prefixes`, sorted by name."""
    return {k: variables[k] for k in sorted(variables) if k.startswith(prefixes)}


def measure_changing(variables: Mapping[str, str]) -> dict[str, str]:
    """The MEASURE_CHANGING_ENV entries of `variables`, then those with a MEASURE_CHANGING_PREFIXES prefix, sorted."""
    return {**set_among(variables, MEASURE_CHANGING_ENV), **with_prefix(variables, MEASURE_CHANGING_PREFIXES)}

# What a contestant is in a comparison (declared by its spec, carried by every row): reports pick the subject
# (a linear-time architecture under test) and its baselines (KV-cache Transformers) by role, never by arch name.
ROLES = ("candidate", "baseline")

# Identifies a sweep point; `--resume` skips points whose key already has a row. The variant columns (KV heads,
# state precision, world size, tensor parallelism, checkpointing, compile) are part of it: the same impl at another
# variant is another point.
POINT_KEY: tuple[str, ...] = ("model", "arch", "impl", "kernel", "n_kv_heads", "state_dtype", "phase", "batch_size",
                              "seq_len", "dtype", "world_size", "tensor_parallel", "checkpointing", "compile",
                              "decode_gemm")

STATUSES = ("ok", "oom", "error", "skipped", "over_budget")


# The note a training row carries when it timed the contestant's own forward + backward, not a real optimizer step
# (the official-code peers): reports draw and label such rows apart.
FORWARD_BACKWARD_ONLY = "forward + backward only (no optimizer step)"

# Every training-engine row's notes begin with this (suites/training/result.py writes it); no other row's do.
ENGINE_NOTES_PREFIX = "FSDP2 x"
# Until schema 3 the training engine's ranks divided their memory by 2**30 under the same `_gb` column names (every
# other row used 1e9): an engine row of an older run holds GiB there and is read converted. Found in session 11: a
# 6.7B row's allocator peak read 106.95 "GB", below the 107.3 GB that its fp32 weights, gradients and AdamW state
# alone take. The engine came in schema 2; the forward + backward path and every other phase always wrote GB.
ENGINE_MEMORY_COLUMNS = ("mem_nvml_peak_gb", "mem_nvml_delta_gb", "mem_torch_peak_gb", "mem_torch_reserved_gb",
                         "mem_rss_peak_gb")
ENGINE_GB_SINCE_SCHEMA = 3


def holds_engine_gib(schema_version: int | None, phase: Any, notes: Any) -> bool:
    """Whether a row's ENGINE_MEMORY_COLUMNS hold GiB: a training-engine row of a run written before schema 3.
    A run without a schema version (no env.json) is read as written by this version."""
    return (schema_version is not None and int(schema_version) < ENGINE_GB_SINCE_SCHEMA and phase == "train"
            and str(notes or "").startswith(ENGINE_NOTES_PREFIX))


def comparable_schemas(a: int | None, b: int | None) -> bool:
    """Whether rows of these two schema versions can be compared: equal, or 2 and 3 (3 changed only a unit that
    readers convert)."""
    return a == b or {a, b} == {2, 3}


def make_row(**values: Any) -> dict[str, Any]:
    """A full row: every column present, unknown keys rejected (a typo must not become a new column)."""
    unknown = set(values) - set(ROW_COLUMNS)
    if unknown:
        raise KeyError(f"unknown result columns: {sorted(unknown)}")
    row = {c: None for c in ROW_COLUMNS}
    row.update(values)
    if row["status"] not in STATUSES:
        raise ValueError(f"bad status {row['status']!r}")
    if row["role"] is not None and row["role"] not in ROLES:
        raise ValueError(f"bad role {row['role']!r}")
    row["timestamp"] = row["timestamp"] or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return row


# The training-only variants and what a training row without the column ran with (rows from before the column, and
# steps outside the training engine): no tensor parallelism, no checkpointing, eager blocks. Other phases have none.
TRAIN_VARIANT_DEFAULTS: dict[str, Any] = {"tensor_parallel": 1, "checkpointing": "none", "compile": "none"}
# The values a suite ([train] table) and the engine's settings accept for the named training variants, default first.
# checkpointing: "full" recomputes every block in backward; "every-N" every N-th (torchtitan's selective per-layer
# option), which trades 1/N of full checkpointing's recomputation for 1/N of its memory saving.
TRAIN_VARIANT_CHOICES: dict[str, tuple[str, ...]] = {
    "checkpointing": ("none", "full", "every-2", "every-4", "every-8"), "compile": ("none", "blocks")}


def train_variant(column: str, phase: Any, value: Any) -> Any:
    """A row's value of a training-only variant column, the default filled in for training rows."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return TRAIN_VARIANT_DEFAULTS[column] if phase == "train" else None
    return value


# The decode steps' projection kernel (`retnet.kernels.skinny_linear`): "torch" (F.linear, cuBLAS on a GPU) or
# "triton" (steps of at most 16 sequences; a larger batch falls back to F.linear). A decode or capacity row without
# the column ran F.linear: every row before it did, and so does every contestant whose step does not take the setting.
DECODE_GEMM_PHASES = ("decode", "capacity", "capacity_probe")
DECODE_GEMMS = ("torch", "triton")  # what a step ran (retnet.kernels.skinny_linear.DECODE_GEMMS, kept equal by a test)
DECODE_GEMM_CHOICES = ("auto", *DECODE_GEMMS)  # a suite's setting; "auto": triton where it can run
# The kernel's row limit (retnet.kernels.skinny_linear.MAX_ROWS, which this module cannot import: reports read it
# without torch; a test keeps the two equal). A step over more sequences ran F.linear whatever the setting said.
DECODE_GEMM_MAX_ROWS = 16


def decode_gemm_ran(setting: str | None, batch: int | None) -> str | None:
    """What a decode step of `batch` sequences projected with under `setting`: the setting up to the kernel's row
    limit, "torch" beyond it (a row must never say "triton" for a step that ran F.linear). A batch-less capacity
    point (the search finds its batch) keeps the setting."""
    if setting is None or batch is None or batch <= DECODE_GEMM_MAX_ROWS:
        return setting
    return "torch"


def decode_gemm(phase: Any, value: Any) -> Any:
    """A row's decode_gemm, "torch" filled in for decode and capacity rows without one; None for other phases."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "torch" if phase in DECODE_GEMM_PHASES else None
    return value


# GiB: the unit of the paper's memory numbers (torch's allocator peaks, reports' "allocator GiB") and of a capacity
# search's budget (the A100-80GB's 80 GiB). Rows before session 10 carried `capacity_budget_gb`, a budget of 1e9-byte
# GB (their "80 GB" was 74.5 GiB).
GIB = 2**30


def capacity_budget_gib(gib: Any, old_gb: Any) -> float | None:
    """A row's capacity budget in GiB: its `capacity_budget_gib`, or an older row's `capacity_budget_gb` converted."""
    for value, scale in ((gib, 1.0), (old_gb, 1e9 / GIB)):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value) * scale
    return None


def point_key(row: dict[str, Any]) -> tuple:
    # rows written before a key column existed read it as None, as does a point that has no such variant
    def value(k: str) -> Any:
        if k in TRAIN_VARIANT_DEFAULTS:
            return train_variant(k, row.get("phase"), row.get(k))
        return decode_gemm(row.get("phase"), row.get(k)) if k == "decode_gemm" else row.get(k)
    return tuple(value(k) for k in POINT_KEY)


class RowsError(ValueError):
    """rows.jsonl is unreadable (a bad line that is not the last one); the message names the file and line."""


def read_rows(path: Path, *, warn: bool = True) -> list[dict[str, Any]]:
    """Rows of a rows.jsonl. A torn last line (a crash mid-write) is dropped with a note on stderr; any other bad
    line, or a line that is not a JSON object, raises RowsError. A missing file gives no rows."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RowsError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    rows = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                if warn:
                    print(f"note: {path}: dropped a half-written last line (a run stopped mid-write)", file=sys.stderr)
                continue
            raise RowsError(f"{path}:{i + 1}: not a JSON row ({e.msg})") from None
        if not isinstance(row, dict):
            raise RowsError(f"{path}:{i + 1}: a row must be a JSON object")
        rows.append(row)
    return rows


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class RowWriter:
    """Append-only: each row is flushed and fsynced as its point finishes, so finished rows survive a crash."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in row.items()})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def repair_torn_tail(path: Path) -> None:
    """Rewrite rows.jsonl without a torn final line so that appends start on a clean line."""
    path = Path(path)
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            rows = read_rows(path, warn=False)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def done_keys(rows: Iterable[dict[str, Any]]) -> set[tuple]:
    return {point_key(r) for r in rows}


def write_table(run_dir: Path) -> Path:
    import pandas as pd

    rows = read_rows(Path(run_dir) / "rows.jsonl", warn=False)
    out = Path(run_dir) / "table.csv"
    pd.DataFrame(rows, columns=list(ROW_COLUMNS)).to_csv(out, index=False)
    return out
