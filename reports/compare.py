"""Noise-aware comparison of two benchmark runs: ``retnet-bench compare BASE HEAD``.

A run is a folder ``results/<run-id>/`` holding ``rows.jsonl`` (one result row per line, docs/CONTRACTS.md) and
``env.json``. Rows are matched by (suite, model, arch, impl, kernel, phase, batch_size, seq_len, dtype) plus
chunk_size and capacity_budget_gib, which are null for most rows but tell a chunk-size sweep's points apart
(null matches null).

For each point that is ``ok`` in both runs, every metric present in both is judged:

* direction: higher is better for tokens_per_s and achieved_gbps; lower for ms_median, ms_per_token and the
  measured memory columns (mem_nvml_*, mem_torch_*, mem_rss_peak_gb).
* ``regressed``: worse by more than the threshold (default 5%, per-metric overrides) AND the p10-p90 ranges of
  the two runs do not overlap. Timing metrics take their range from ms_p10 / ms_p90; throughput metrics are
  inverse times, so their range is the ms range mapped through value / ms. Memory has no range: it is a
  point value, and worse by more than the threshold regresses; a memory change smaller than MEMORY_FLOOR_GB
  (0.01 GB) is ok whatever its percentage.
* ``noisy``: changed by more than the threshold either way, but the ranges overlap: not a regression.
* ``improved``: better by more than the threshold with separated ranges. ``ok``: within the threshold.
* ``not comparable``: a timed point with fewer than MIN_REPEATS repeats or no p10-p90 spread (p10 == p90, e.g.
  one prefill pass) on either side has no noise estimate; its timing metrics regress or improve only beyond
  THIN_FACTOR (3) x the threshold, and a change between 1x and 3x the threshold is reported as not comparable.
* ``changed-deterministic``: an analytic column (n_params, bytes_per_step, mem_analytic_gb, weights_gb,
  flops_per_token) differs, i.e. the two runs did not measure the same thing. Reported, never a regression.

Points whose status is not ``ok`` on either side are listed in ``not_compared`` with the reason; points in only
one run are listed in ``missing`` (base only) and ``new`` (head only). None of these set the exit code, except a
point that was ok in base and fails (OOM, error) in head. Two runs without a single common point (another suite,
dtype or model) are bad input: "no regression" would be a verdict on nothing. Every output format lists the
regressions first (compare_render.py).

GitHub dashboards (github-action-benchmark) and the CI wiring: compare_render.py.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from retnet_bench.suites.contract import (TRAIN_VARIANT_DEFAULTS, RowsError, comparable_schemas,
                                         decode_gemm, measure_changing, read_rows, train_variant)

from .load import capacity_budget_column, convert_engine_gib, read_env_json

KEY_COLUMNS = ("suite", "model", "arch", "impl", "kernel", "phase", "batch_size", "seq_len", "dtype")
# The contract's variant columns (KV heads, RetNet state precision, GPUs, TP, checkpointing, compile, the decode
# projections) tell points of one impl apart; rows written before they existed read them as null (world_size as 1:
# every such run used one GPU; a training row's tensor_parallel as 1, its checkpointing and compile as "none"; a
# decode row's decode_gemm as "torch").
VARIANT_COLUMNS = ("n_kv_heads", "state_dtype", "world_size", "tensor_parallel", "checkpointing", "compile",
                   "decode_gemm")
MATCH_COLUMNS = (*KEY_COLUMNS, "chunk_size", "capacity_budget_gib", *VARIANT_COLUMNS)
_INTEGER_KEYS = ("batch_size", "seq_len", "chunk_size", "n_kv_heads", "world_size", "tensor_parallel")
_NUMERIC_KEYS = (*_INTEGER_KEYS, "capacity_budget_gib")
_PASS_COLUMNS = ("run_id", "n_repeats", "gpu_name")  # carried into the GitHub entries' tooltip


# Memory metrics change by less than this (GB) count as ok, whatever the percentage: a CPU run's RSS growth or a
# tiny model's peak is a few hundred KB, where allocator and page granularity alone move it by more than 5%
# (0.00048 -> 0.00064 GB was flagged as a regression); 10 MB is far below any model's memory that matters.
MEMORY_FLOOR_GB = 0.01


@dataclass(frozen=True)
class Metric:
    direction: Literal["higher", "lower", "exact"]
    unit: str
    # How the value follows the step time, which gives its p10-p90 range; None: a point value.
    with_time: Literal["proportional", "inverse"] | None = None
    floor: float = 0.0  # an absolute change below this is ok, whatever its relative size


METRICS: dict[str, Metric] = {
    "tokens_per_s": Metric("higher", "tokens/s", "inverse"),
    "achieved_gbps": Metric("higher", "GB/s", "inverse"),
    "ms_median": Metric("lower", "ms", "proportional"),
    "ms_per_token": Metric("lower", "ms", "proportional"),
    "mem_nvml_peak_gb": Metric("lower", "GB", floor=MEMORY_FLOOR_GB),
    "mem_nvml_delta_gb": Metric("lower", "GB", floor=MEMORY_FLOOR_GB),
    "mem_torch_peak_gb": Metric("lower", "GB", floor=MEMORY_FLOOR_GB),
    "mem_torch_reserved_gb": Metric("lower", "GB", floor=MEMORY_FLOOR_GB),
    "mem_rss_peak_gb": Metric("lower", "GB", floor=MEMORY_FLOOR_GB),
    "n_params": Metric("exact", "params"),
    "bytes_per_step": Metric("exact", "bytes"),
    "mem_analytic_gb": Metric("exact", "GB"),
    "weights_gb": Metric("exact", "GB"),
    "flops_per_token": Metric("exact", "FLOP"),
}
DETERMINISTIC_COLUMNS = tuple(name for name, m in METRICS.items() if m.direction == "exact")
GITHUB_TOOLS = {"bigger": "customBiggerIsBetter", "smaller": "customSmallerIsBetter"}
_STATUS_STYLE = {"regressed": "bold red", "improved": "green", "noisy": "yellow", "not comparable": "cyan",
                 "changed-deterministic": "magenta", "ok": "dim"}
# A timed point with fewer repeats than this, or with no spread (p10 == p90, e.g. one prefill pass), carries no
# noise estimate, so the range-overlap guard cannot apply: its timing metrics are judged only beyond
# THIN_FACTOR x the threshold, and a change between 1x and THIN_FACTOR x is reported "not comparable".
MIN_REPEATS = 3
THIN_FACTOR = 3.0


class CompareInputError(ValueError):
    """Bad input to a comparison (missing run, unreadable rows, different GPU or schema); the CLI exits 2."""


# ---------------------------------------------------------------------------------------------- loading


def load_run(run: Path | str, role: str = "run") -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Read ``run/rows.jsonl`` and ``run/env.json`` (None when absent). Raises CompareInputError."""
    run = Path(run)
    if run.is_file() and run.name == "rows.jsonl":
        run = run.parent
    if not run.is_dir():
        raise CompareInputError(f"{role} run not found: {run}")
    rows_path = run / "rows.jsonl"
    if not rows_path.is_file():
        raise CompareInputError(f"{role} run {run} has no rows.jsonl")
    try:  # the one contract reader: a torn last line (a crashed run) is dropped with a note on stderr
        records = read_rows(rows_path)
    except RowsError as e:
        raise CompareInputError(str(e)) from None
    if not records:
        raise CompareInputError(f"{rows_path} holds no rows")
    env = read_env_json(run / "env.json", CompareInputError)
    rows = _normalize(pd.DataFrame.from_records(records), rows_path)
    return convert_engine_gib(rows, (env or {}).get("schema_version")), env


def _normalize(rows: pd.DataFrame, source: object) -> pd.DataFrame:
    """Check the key columns, give every column we read a value (null if absent) and numeric dtypes."""
    lacking = [c for c in (*KEY_COLUMNS, "status") if c not in rows]
    if lacking:
        raise CompareInputError(f"{source} lacks column(s) {', '.join(lacking)}")
    needed = (*MATCH_COLUMNS, *METRICS, "ms_p10", "ms_p90", "status", "error", *_PASS_COLUMNS)
    rows = rows.reindex(columns=list(dict.fromkeys([*rows.columns, *needed])))
    for col in (*_NUMERIC_KEYS, *METRICS, "ms_p10", "ms_p90", "n_repeats"):
        kind = "Int64" if col in _INTEGER_KEYS else "float64"
        try:
            rows[col] = pd.to_numeric(rows[col]).astype(kind)
        except (ValueError, TypeError) as e:
            raise CompareInputError(f"{source}: column {col} does not hold {kind} values ({e})") from e
    for col in (c for c in MATCH_COLUMNS if c not in _NUMERIC_KEYS):
        rows[col] = rows[col].astype(object).where(rows[col].notna(), None)
    rows["world_size"] = rows["world_size"].fillna(1)
    rows["capacity_budget_gib"] = capacity_budget_column(rows)
    for col in TRAIN_VARIANT_DEFAULTS:  # older rows lack them: a training row then ran with the defaults
        values = [train_variant(col, ph, None if pd.isna(v) else v) for ph, v in zip(rows["phase"], rows[col])]
        rows[col] = pd.array(values, dtype="Int64" if col in _INTEGER_KEYS else object)
    rows["decode_gemm"] = pd.array([decode_gemm(ph, None if pd.isna(v) else v)
                                    for ph, v in zip(rows["phase"], rows["decode_gemm"])], dtype=object)
    # A capacity point's batch is its *result* (the largest batch within budget), not a setting: match capacity
    # points without it, and drop the search's intermediate over-budget attempts.
    cap = rows["phase"] == "capacity"
    rows = rows[~(cap & (rows["status"] == "over_budget") & rows["batch_size"].notna())].copy()
    rows.loc[rows["phase"] == "capacity", "batch_size"] = pd.NA
    dup = rows.duplicated(subset=list(MATCH_COLUMNS), keep=False)
    if dup.any():
        raise CompareInputError(f"{source}: point {_label(rows[dup].iloc[0])} appears more than once")
    rows["point"] = [_label(r) for _, r in rows.iterrows()]
    return rows.reset_index(drop=True)


def _label(row: pd.Series) -> str:
    """Readable, stable point name: suite/model/arch/impl/kernel/phase/b<B>/T<T>/dtype[/chunk<C>][/budget<G>GiB]."""
    def num(v: object) -> str:
        return "-" if v is None or pd.isna(v) else f"{float(v):g}"

    parts = [str(row[c]) for c in ("suite", "model", "arch", "impl", "kernel", "phase")]
    parts += [f"b{num(row['batch_size'])}", f"T{num(row['seq_len'])}", str(row["dtype"])]
    if pd.notna(row["chunk_size"]):
        parts.append(f"chunk{num(row['chunk_size'])}")
    if pd.notna(row["capacity_budget_gib"]):
        parts.append(f"budget{num(row['capacity_budget_gib'])}GiB")
    if pd.notna(row["n_kv_heads"]):
        parts.append(f"kv{num(row['n_kv_heads'])}")
    if row["state_dtype"] is not None:
        parts.append(f"state-{row['state_dtype']}")
    if pd.notna(row["world_size"]) and row["world_size"] != 1:
        parts.append(f"x{num(row['world_size'])}gpu")
    if pd.notna(row["tensor_parallel"]) and row["tensor_parallel"] != 1:
        parts.append(f"tp{num(row['tensor_parallel'])}")
    for col, tag in (("checkpointing", "ckpt"), ("compile", "compile")):  # NaN never names a point
        if pd.notna(row[col]) and row[col] != "none":
            parts.append(f"{tag}-{row[col]}")
    if row["decode_gemm"] == "triton":
        parts.append("gemm-triton")
    return "/".join(parts)


def _long(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (ok point, metric with a value): value and its p10-p90 range (lo/hi, NaN for point values)."""
    ok = rows[rows["status"] == "ok"]
    # Ratios of the ms percentiles to the median carry the timing spread over to any time-derived metric.
    r10 = ok["ms_p10"] / ok["ms_median"].where(ok["ms_median"] > 0)
    r90 = ok["ms_p90"] / ok["ms_median"].where(ok["ms_median"] > 0)
    frames = []
    for name, metric in METRICS.items():
        value = ok[name]
        lo = hi = pd.Series(np.nan, index=ok.index)
        if metric.with_time == "proportional":
            lo, hi = value * r10, value * r90
        elif metric.with_time == "inverse":
            lo, hi = value / r90, value / r10
        thin = pd.Series(False, index=ok.index)
        if metric.with_time is not None:  # no noise estimate: too few repeats, or no spread / no range at all
            thin = (ok["n_repeats"] < MIN_REPEATS) | lo.isna() | hi.isna() | (lo == hi)
        frame = ok[[*MATCH_COLUMNS, "point", *_PASS_COLUMNS]].assign(metric=name, value=value, lo=lo, hi=hi,
                                                                     thin=thin.astype(bool))
        frames.append(frame[value.notna()])
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------- comparing


@dataclass
class CompareResult:
    """Outcome of :func:`compare_runs`. ``points``: one row per (matched ok point, metric)."""

    base: Path
    head: Path
    points: pd.DataFrame
    missing: pd.DataFrame  # points only in base
    new: pd.DataFrame  # points only in head
    not_compared: pd.DataFrame  # matched points not ok on either side, with reason
    warnings: list[str] = field(default_factory=list)  # env mismatches accepted by allow_mismatch
    head_metrics: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # head's ok values, long

    @property
    def regressions(self) -> pd.DataFrame:
        return self.points[self.points["status"] == "regressed"]

    @property
    def broken(self) -> pd.DataFrame:
        """Points that were ok in base and fail in head (OOM, error): a regression, or an all-OOM head would pass."""
        nc = self.not_compared
        if nc.empty:
            return nc
        return nc[(nc["status_base"] == "ok") & nc["status_head"].isin(["oom", "error"])]

    @property
    def regressed(self) -> bool:
        return not self.regressions.empty or not self.broken.empty

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    def counts(self) -> dict[str, int]:
        return {s: int((self.points["status"] == s).sum()) for s in _STATUS_STYLE}


def compare_runs(base: Path, head: Path, threshold: float = 0.05,
                 metric_thresholds: dict[str, float] | None = None,
                 allow_mismatch: bool = False, thin_factor: float = THIN_FACTOR) -> CompareResult:
    """Compare run folder ``head`` against ``base``; thresholds are fractions (0.05 = 5%).

    ``metric_thresholds`` maps a metric name, or an fnmatch pattern such as ``"mem_*"``, to its own threshold
    (an exact name wins over a pattern). A timed point with too few repeats or no spread on either side is judged
    only beyond ``thin_factor`` x its threshold ("not comparable" below that). Raises CompareInputError on bad
    input.
    """
    if not (isinstance(thin_factor, (int, float)) and math.isfinite(thin_factor) and thin_factor >= 1):
        raise CompareInputError(f"thin_factor must be a number >= 1, got {thin_factor!r}")
    thresholds = _resolve_thresholds(threshold, metric_thresholds or {})
    base_rows, base_env = load_run(base, "base")
    head_rows, head_env = load_run(head, "head")
    warnings = _check_envs(base_env, head_env, allow_mismatch)

    keys = list(MATCH_COLUMNS)
    side = ["point", "status", "error"]
    joined = base_rows[keys + side].merge(head_rows[keys + side], on=keys + ["point"], how="outer",
                                          suffixes=("_base", "_head"), indicator=True)
    missing = joined[joined["_merge"] == "left_only"][keys + ["point", "status_base"]]
    new = joined[joined["_merge"] == "right_only"][keys + ["point", "status_head"]]
    both = joined[joined["_merge"] == "both"]
    if both.empty:  # another suite, dtype or model: "no regression" would be a verdict on nothing
        raise CompareInputError(f"compare: no common points between {base} and {head} "
                                f"({_key_differences(base_rows, head_rows)})")
    not_ok = both[(both["status_base"] != "ok") | (both["status_head"] != "ok")]
    not_compared = not_ok[keys + ["point", "status_base", "status_head"]].assign(
        reason=[_reason(r) for _, r in not_ok.iterrows()])

    head_long = _long(head_rows)
    long_cols = keys + ["point", "metric", "value", "lo", "hi", "thin"]
    points = _long(base_rows)[long_cols].merge(head_long[long_cols], on=keys + ["point", "metric"],
                                               suffixes=("_base", "_head"))
    # Read point by point, in base's row order, metrics in METRICS order.
    order = {point: i for i, point in enumerate(base_rows["point"])}
    points = points.sort_values(["point", "metric"], key=lambda c: c.map(order if c.name == "point" else
                                                                          list(METRICS).index), kind="stable")
    points = _judge(points.reset_index(drop=True), thresholds, thin_factor)
    return CompareResult(base=Path(base), head=Path(head), points=points,
                         missing=missing.reset_index(drop=True).rename(columns={"status_base": "status"}),
                         new=new.reset_index(drop=True).rename(columns={"status_head": "status"}),
                         not_compared=not_compared.reset_index(drop=True), warnings=warnings,
                         head_metrics=head_long)


def _resolve_thresholds(default: float, overrides: dict[str, float]) -> dict[str, float]:
    for name, value in {"threshold": default, **overrides}.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise CompareInputError(f"threshold for {name} must be a fraction >= 0 (0.05 = 5%), got {value!r}")
    for pattern in overrides:
        if not fnmatch.filter(METRICS, pattern):
            raise CompareInputError(f"unknown metric in thresholds: {pattern!r} (known: {', '.join(METRICS)})")
    resolved = {}
    for name in METRICS:
        patterns = [p for p in overrides if p != name and fnmatch.fnmatchcase(name, p)]
        resolved[name] = overrides.get(name, overrides[patterns[0]] if patterns else default)
    return resolved


def _check_envs(base_env: dict | None, head_env: dict | None, allow_mismatch: bool) -> list[str]:
    problems = [f"{role} run has no env.json" for role, env in (("base", base_env), ("head", head_env))
                if env is None]
    if base_env is not None and head_env is not None:
        base_schema, head_schema = base_env.get("schema_version"), head_env.get("schema_version")
        if not comparable_schemas(base_schema, head_schema):
            problems.append(f"different schema_version: base {base_schema!r}, head {head_schema!r}")
        if base_env.get("gpu_name") != head_env.get("gpu_name"):
            problems.append(f"different gpu_name: base {base_env.get('gpu_name')!r}, head {head_env.get('gpu_name')!r}")
        problems += _runtime_env_differences(base_env, head_env)
    if problems and not allow_mismatch:
        raise CompareInputError("; ".join(problems) + " (allow_mismatch / --allow-mismatch compares anyway)")
    return problems


def _runtime_env_differences(base_env: dict, head_env: dict) -> list[str]:
    """The measure-changing environment variables (the allocator's settings, ...) set differently in the two runs.
    A run written before env.json recorded `runtime_env` is not judged."""
    if "runtime_env" not in base_env or "runtime_env" not in head_env:
        return []
    base, head = (measure_changing(e["runtime_env"] or {}) for e in (base_env, head_env))
    return [f"different {name}: base {base.get(name, '(unset)')!r}, head {head.get(name, '(unset)')!r}"
            for name in dict.fromkeys([*base, *head]) if base.get(name) != head.get(name)]


def _reason(row: pd.Series) -> str:
    parts = []
    for role in ("base", "head"):
        status, error = row[f"status_{role}"], row[f"error_{role}"]
        if status != "ok":
            parts.append(f"{role} {status}" + (f": {error}" if isinstance(error, str) and error else ""))
    return "; ".join(parts)


def _judge(points: pd.DataFrame, thresholds: dict[str, float], thin_factor: float = THIN_FACTOR) -> pd.DataFrame:
    """Add direction, unit, change_pct, ranges_overlap, threshold_pct, thin and status to the merged long table."""
    metric = points["metric"]
    direction = metric.map(lambda m: METRICS[m].direction)
    base, head = points["value_base"], points["value_head"]
    with np.errstate(divide="ignore", invalid="ignore"):
        change = (head - base) / base.abs() * 100
    change = change.where(base != 0, np.where(head == base, 0.0, np.sign(head - base) * np.inf))
    worse = change.where(direction == "lower", -change)  # > 0: worse, whichever direction is better
    threshold_pct = metric.map(thresholds) * 100
    ranged = points[["lo_base", "hi_base", "lo_head", "hi_head"]].notna().all(axis=1)
    overlap = (points["lo_base"] <= points["hi_head"]) & (points["lo_head"] <= points["hi_base"])

    thin = points["thin_base"].astype(bool) | points["thin_head"].astype(bool)
    within_floor = (head - base).abs() < metric.map(lambda m: METRICS[m].floor)

    status = np.select(
        [direction == "exact", (worse.abs() <= threshold_pct) | within_floor,
         thin & (worse.abs() <= threshold_pct * thin_factor),
         ranged & overlap, worse > 0],
        [np.where(head == base, "ok", "changed-deterministic"), "ok", "not comparable", "noisy", "regressed"],
        default="improved")
    return points.drop(columns=["thin_base", "thin_head"]).assign(
        direction=direction, unit=metric.map(lambda m: METRICS[m].unit), change_pct=change,
        ranges_overlap=overlap.where(ranged), threshold_pct=threshold_pct.where(direction != "exact"),
        thin=thin & (direction != "exact"), status=status)


def compare_deterministic(base: Path | pd.DataFrame, head: Path | pd.DataFrame,
                          columns: Sequence[str] = DETERMINISTIC_COLUMNS) -> list[str]:
    """Exact-match gate for analytic columns, e.g. a CPU smoke run against its committed reference.

    Returns one line per mismatch: a point present on one side only, a point whose status differs, or a
    column whose value differs (null counts as a value). Timings are not looked at. Empty list: all match.
    """
    frames = [_normalize(x.copy(), role) if isinstance(x, pd.DataFrame) else load_run(x, role)[0]
              for x, role in ((base, "base"), (head, "head"))]
    keys = list(MATCH_COLUMNS)
    cols = list(dict.fromkeys(["status", *columns]))
    for frame in frames:
        for col in cols:
            if col not in frame:
                frame[col] = None
    joined = frames[0][keys + ["point", *cols]].merge(frames[1][keys + ["point", *cols]], on=keys + ["point"],
                                                     how="outer", suffixes=("_base", "_head"), indicator=True)
    mismatches = []
    for _, row in joined.iterrows():
        if row["_merge"] != "both":
            mismatches.append(f"{row['point']}: only in {'base' if row['_merge'] == 'left_only' else 'head'}")
            continue
        for col in cols:
            b, h = row[f"{col}_base"], row[f"{col}_head"]
            if not (b == h or (pd.isna(b) and pd.isna(h))):
                mismatches.append(f"{row['point']}: {col} base {b!r} != head {h!r}")
    return mismatches


# The renderers and the text helpers live in compare_render.py (kept apart for size); re-exported so callers import
# from one place (compare_runs reads _key_differences from here at call time).
from .compare_render import (_key_differences, parse_threshold, regression_lines, render_github,  # noqa: E402
                             render_rich, to_github, to_json, write_github)
