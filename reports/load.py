"""Read run folders (rows.jsonl, env.json, table.csv) into one DataFrame.

The report layer sees only files: no torch, no model; from suites/ only the row contract (`suites/contract.py`,
which imports no torch), so the runner, the report and `compare` read rows one way (docs/CONTRACTS.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from retnet_bench.suites.contract import (ENGINE_MEMORY_COLUMNS, FORWARD_BACKWARD_ONLY, GIB, NUMERIC_COLUMNS,
                                          ROW_COLUMNS, TRAIN_VARIANT_DEFAULTS, RowsError, capacity_budget_gib,
                                          decode_gemm, holds_engine_gib, read_rows, train_variant)

from .contestants import Roster

# Memory the *GPU process holds*, which is what the paper plots (Fig. 6a, "GPU Memory (GB)"): NVML peak minus the
# idle baseline first (it sees the caching allocator's reserve and the workspace of cuBLAS/flash kernels), then
# torch's reserved peak (misses non-torch allocations). Claims use only these two.
GPU_MEMORY_SOURCES: tuple[str, ...] = ("mem_nvml_delta_gb", "mem_torch_reserved_gb")
# Tables and figures fall back further so that CPU smoke runs still draw: torch allocated peak (misses allocator
# slack), then process RSS (CPU runs; includes the interpreter and libraries, so ratios are not meaningful).
ANY_MEMORY_SOURCES: tuple[str, ...] = GPU_MEMORY_SOURCES + ("mem_torch_peak_gb", "mem_rss_peak_gb")


class ReportInputError(ValueError):
    """A run folder is missing or unreadable (message is one line, naming the path)."""


def _read_rows(run_dir: Path) -> pd.DataFrame:
    rows_path, table_path = run_dir / "rows.jsonl", run_dir / "table.csv"
    if rows_path.is_file():
        try:  # a torn last line (a crashed run) is dropped with a note on stderr: a crashed run can be reported
            return pd.DataFrame.from_records(read_rows(rows_path))
        except RowsError as e:
            raise ReportInputError(f"unreadable rows: {e}") from None
    if table_path.is_file():
        try:
            return pd.read_csv(table_path)
        except (OSError, ValueError) as e:
            raise ReportInputError(f"{table_path}: unreadable table ({type(e).__name__}: {e})") from None
    raise ReportInputError(f"{run_dir}: no rows.jsonl or table.csv (is this a results/<run-id> folder?)")


def read_env_json(env_path: Path, error: type[ValueError]) -> dict | None:
    """env.json as a dict, None when absent; an unreadable file raises `error` with one line naming the path.
    Shared by the report loader and `compare` (each with its own error class)."""
    if not env_path.is_file():
        return None
    try:
        env = json.loads(env_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{env_path}: unreadable env ({type(e).__name__}: {e})") from None
    if not isinstance(env, dict):
        raise error(f"{env_path}: expected a JSON object")
    return env


def _read_env(run_dir: Path) -> dict:
    return read_env_json(run_dir / "env.json", ReportInputError) or {}


# Rows written before schema 2 lack the contestant's role: the only candidates then were RetNets, the only
# baselines Transformers. Newer rows carry the role their contestant's spec declares.
ROLE_OF_ARCH = {"retnet": "candidate", "transformer": "baseline"}


RUN_FILES = ("rows.jsonl", "table.csv", "env.json")  # a run's own file stands for its folder


def capacity_budget_column(df: pd.DataFrame) -> pd.Series:
    """`capacity_budget_gib` as float, an older row's `capacity_budget_gb` converted (contract.capacity_budget_gib)."""
    old = df["capacity_budget_gb"] if "capacity_budget_gb" in df else pd.Series(None, index=df.index, dtype=float)
    return pd.Series([capacity_budget_gib(g, o) for g, o in zip(df["capacity_budget_gib"], old)], index=df.index,
                     dtype=float)


def normalise_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Every contract column present, numeric columns as floats (None -> NaN), `role` filled from `arch` where an
    old row lacks it, `world_size` 1 where absent (every run before multi-GPU training was one GPU), a training row's
    `tokens_per_s_per_gpu` where absent (its tokens/s over its world size: forward + backward peers and older rows),
    `decode_gemm` "torch" for a decode or capacity row without it (contract.decode_gemm: every such row ran F.linear),
    the capacity budget in GiB (an older row's GB converted)."""
    df = df.copy()
    for col in ROW_COLUMNS:
        if col not in df.columns:
            df[col] = None
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    derived = df["arch"].map(ROLE_OF_ARCH)
    df["role"] = df["role"].astype(object).where(df["role"].notna(), derived)
    df["world_size"] = df["world_size"].fillna(1.0)
    train = df["phase"] == "train"
    df.loc[train, "tokens_per_s_per_gpu"] = df.loc[train, "tokens_per_s_per_gpu"].fillna(
        df.loc[train, "tokens_per_s"] / df.loc[train, "world_size"])
    df["capacity_budget_gib"] = capacity_budget_column(df)
    df["decode_gemm"] = pd.Series([decode_gemm(p, v) for p, v in zip(df["phase"], df["decode_gemm"])],
                                  index=df.index, dtype=object)
    return df


def convert_engine_gib(rows: pd.DataFrame, schema_version: int | None) -> pd.DataFrame:
    """`rows` of one run with its training-engine rows' memory in GB: a run before schema 3 wrote GiB there
    (contract.holds_engine_gib). `rows.attrs["engine_rows_from_gib"]` says how many rows were converted."""
    notes = rows["notes"] if "notes" in rows else pd.Series(None, index=rows.index, dtype=object)
    mask = pd.Series([holds_engine_gib(schema_version, ph, n) for ph, n in zip(rows["phase"], notes)],
                     index=rows.index, dtype=bool)
    if not mask.any():
        return rows
    rows, cols = rows.copy(), [c for c in ENGINE_MEMORY_COLUMNS if c in rows]
    rows.loc[mask, cols] = rows.loc[mask, cols].astype(float) * (GIB / 1e9)
    rows.attrs["engine_rows_from_gib"] = int(mask.sum())
    return rows


def load_runs(run_dirs: list[Path], latest: bool = True) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Concatenate the rows of several run folders; with `latest`, each contestant's latest run only
    (latest_per_point: what the figures, tables and claims read).

    Returns (rows, envs): rows has every schema column (numeric ones as float) plus `run_dir`; envs maps run_id to
    that run's env.json (empty dict when the run has none). The runs' `contestants` tables, merged in the order
    given (later runs win), ride along as `rows.attrs['roster']` (`contestants.roster_of` reads it back).
    Raises ReportInputError for a missing/unreadable run.
    """
    if not run_dirs:
        raise ReportInputError("no run folders given")
    frames, envs = [], {}
    for raw in run_dirs:
        run_dir = Path(raw)
        if run_dir.is_file() and run_dir.name in RUN_FILES:
            run_dir = run_dir.parent
        if not run_dir.is_dir():
            raise ReportInputError(f"{run_dir}: run folder not found")
        rows, env = _read_rows(run_dir), _read_env(run_dir)
        run_id = str(env.get("run_id") or run_dir.name)
        rows = convert_engine_gib(normalise_rows(rows), env.get("schema_version"))
        rows["run_id"] = rows["run_id"].where(rows["run_id"].notna(), run_id)
        if run_id in envs:  # two folders from runs of the same id (e.g. one per machine): keep them apart
            run_id = f"{run_id} ({run_dir})"
            rows["run_id"] = run_id
        rows["run_dir"] = str(run_dir)
        env = {**env, "run_id": run_id, "run_dir": str(run_dir),
               "engine_rows_from_gib": rows.attrs.get("engine_rows_from_gib", 0)}
        envs[run_id] = env
        frames.append(rows)
    df = pd.concat(frames, ignore_index=True) if frames else normalise_rows(pd.DataFrame())
    roster = Roster.from_runs(envs, df)
    df, superseded = latest_per_point(df, roster) if latest else (df, 0)
    # grouped-query attention = fewer KV heads than query heads (rows written before schema 2 have no KV heads:
    # where a model has such rows the figures fall back to "8 or fewer KV heads is grouped", right for every
    # paper-size model)
    if len(df):
        attn = df[df["arch"] == "transformer"]
        unknown = set(attn.loc[attn["n_kv_heads"].isna(), "model"])
        grouped = (df["arch"] == "transformer") & (df["n_kv_heads"] < df["model"].map(_query_heads(df)))
        df["kv_grouped"] = grouped.astype(object).where(~df["model"].isin(unknown), None)
    df.attrs["roster"] = roster
    df.attrs["superseded_rows"] = superseded
    return df, envs


def _query_heads(df: pd.DataFrame) -> pd.Series:
    """Query heads per model, as the rows tell them: the most KV heads any attention row of that model has (rows carry
    only KV heads; every suite that measures GQA measures the MHA baseline beside it)."""
    return df[df["arch"] == "transformer"].groupby("model")["n_kv_heads"].max()


# What identifies one contestant's measurements in one suite (the contract's point key without the point itself,
# plus the suite: figures and claims select rows by suite, so a `long` row never stands in for a `fig6` one).
_CONTESTANT = ("suite", "model", "arch", "impl", "kernel", "n_kv_heads", "state_dtype", "dtype", "world_size",
               "tensor_parallel", "checkpointing", "compile", "decode_gemm")


def latest_per_point(df: pd.DataFrame, roster=None) -> tuple[pd.DataFrame, int]:
    """When a contestant of a suite was measured in several runs, keep only the latest run's rows for it (the run
    whose rows are newest), so that no line, table or claim mixes two measurements of one contestant (e.g. batch 2
    from an older build of a kernel beside batch 8 from a newer one). Rows written before schema 2 lack the variant
    columns: for the comparison only, our RetNet's null state_dtype reads as float32 (every run before the variant
    existed used an fp32 state) and a Transformer's null n_kv_heads as the most KV heads any row of that model has
    (MHA: every run before GQA existed). Returns (rows, number of rows left out)."""
    if df.empty or "timestamp" not in df or "run_id" not in df:
        return df, 0
    key = df[list(_CONTESTANT)].copy()
    ours = df["impl"].map(lambda i: (roster.get(i).source if roster is not None and roster.get(i) else "ours"))
    fp32 = (key["arch"] == "retnet") & key["state_dtype"].isna() & (ours == "ours") & \
        df["phase"].isin(["decode", "prefill", "capacity", "capacity_probe"])
    key.loc[fp32, "state_dtype"] = "float32"
    tr = (key["arch"] == "transformer") & key["n_kv_heads"].isna()
    if tr.any():
        key.loc[tr, "n_kv_heads"] = df.loc[tr, "model"].map(_query_heads(df))
    key["world_size"] = key["world_size"].fillna(1)
    for col in TRAIN_VARIANT_DEFAULTS:
        key[col] = [train_variant(col, ph, v) for ph, v in zip(df["phase"], key[col])]
    key = key.astype(object).where(key.notna(), "-").astype(str)  # NaN is a value here, not a missing group
    stamp = df["timestamp"].astype(object).where(df["timestamp"].notna(), "").astype(str)
    groups = [key[c] for c in _CONTESTANT]
    run_newest = stamp.groupby(groups + [df["run_id"].astype(str)], dropna=False).transform("max")
    newest = stamp.groupby(groups, dropna=False).transform("max")
    keep = run_newest == newest
    return df[keep].reset_index(drop=True), int((~keep).sum())


# The suite that times prefill on its own (warmed, repeated); the prefill tables prefer its rows.
PREFILL_SUITE = "prefill"
# Suites whose decode rows are a brief check after what they time (the prefill suite decodes 2-5 steps after each
# timed prefill): no decode figure, table or claim reads them (a fig6 point would otherwise take their median with a
# real decode sweep, and fig6 would pick their batch sizes); the status table still counts them.
BRIEF_DECODE_SUITES = (PREFILL_SUITE,)



def training_memory(rows: pd.DataFrame) -> tuple[str, str]:
    """(column, axis label) of the memory a training figure or table shows: the allocator peak in GiB (what the
    paper's Table 4 reported, and what the training claims judge) when every row has it, else the device memory
    (`mem_gb`, GB). Device memory near a GPU's capacity is mostly what the caching allocator kept reserved (6.7B on
    an H200: 148 GB held for 119 GB allocated), so it would not compare two models' needs."""
    if "mem_torch_peak_gb" in rows and len(rows) and rows["mem_torch_peak_gb"].notna().all():
        return "mem_alloc_gib", "allocator peak per GPU (GiB)"
    return "mem_gb", "device memory per GPU (GB)"


def with_allocator_gib(rows: pd.DataFrame) -> pd.DataFrame:
    """Add `mem_alloc_gib`: torch's allocator peak in GiB (the rows keep decimal GB)."""
    return rows.assign(mem_alloc_gib=rows["mem_torch_peak_gb"] * 1e9 / GIB)


def without_brief_decode(df: pd.DataFrame) -> pd.DataFrame:
    """`df` without the decode rows of BRIEF_DECODE_SUITES."""
    if "suite" not in df:
        return df
    return df[~((df["phase"] == "decode") & df["suite"].isin(BRIEF_DECODE_SUITES))]


# The engine settings a training step can carry besides the plain one (TRAIN_VARIANT_CHOICES): recomputation
# (checkpointing every block or every N-th) and compiled blocks. Each is another measurement of its contestant: its
# own Table 4 line, out of the figures; the claims compare plain steps, except where a framing takes each side's
# fastest measured setting (claims_select.points keeps the column for that).
ENGINE_SETTINGS = ("checkpointing", "compile")


def engine_setting_suffix(column: str, value: str) -> str:
    """The Table 4 suffix of one engine setting: ", checkpointed" (every block recomputed in backward),
    ", checkpointed every 8th block", ", compiled" (torch.compile per block)."""
    if column == "compile":
        return ", compiled"
    if value == "full":
        return ", checkpointed"
    n = int(str(value).removeprefix("every-"))
    return f", checkpointed every {n}{'nd' if n == 2 else 'th'} block"


def forward_backward_only(df: pd.DataFrame) -> pd.Series:
    """Per row, whether it timed no optimizer step (the paper's pipeline, `optimizer = false`): its notes say so."""
    return df["notes"].fillna("").str.contains(FORWARD_BACKWARD_ONLY, regex=False)


def size_key(model: str) -> tuple:
    """Presets in size order: '1.3b' < '2.7b' < '13b'; other names after, alphabetically."""
    try:
        return (0, float(model.rstrip("bB")), model)
    except ValueError:
        return (1, 0.0, model)


def training_variant(df: pd.DataFrame) -> pd.Series:
    """Per row, what makes a training step another measurement than the plain one-step-per-replica the figures
    draw: ", TP x2" (tensor parallel), an engine setting's suffix (engine_setting_suffix), or "" (plain, and every
    other phase). The Table 4 table lists such rows on their own lines with this suffix; the claims keep
    tensor-parallel rows as their own points."""
    out = pd.Series("", index=df.index, dtype=object)
    train = df["phase"] == "train"
    if "tensor_parallel" in df:
        tp = train & df["tensor_parallel"].notna() & (df["tensor_parallel"] > 1)
        out[tp] = [f", TP x{int(n)}" for n in df.loc[tp, "tensor_parallel"]]
    for column in ENGINE_SETTINGS:
        sel = _engine_setting_set(df, column)
        out[sel] += [engine_setting_suffix(column, v) for v in df.loc[sel, column]]
    return out


def _engine_setting_set(df: pd.DataFrame, column: str) -> pd.Series:
    """Training rows whose `column` (checkpointing, compile) is set to something other than "none"."""
    if column not in df:
        return pd.Series(False, index=df.index)
    return (df["phase"] == "train") & df[column].notna() & (df[column] != "none")


def with_engine_setting(df: pd.DataFrame) -> pd.Series:
    """Training rows that carry any engine setting (ENGINE_SETTINGS): another measurement than the plain step."""
    out = pd.Series(False, index=df.index)
    for column in ENGINE_SETTINGS:
        out |= _engine_setting_set(df, column)
    return out


def plain_training(df: pd.DataFrame) -> pd.DataFrame:
    """`df` without training rows that carry a variant (see `training_variant`): what the figures draw."""
    return df[training_variant(df) == ""]


def ok_rows(df: pd.DataFrame, phase: str | None = None) -> pd.DataFrame:
    """Rows with status 'ok' (others never give values), optionally of one phase."""
    sel = df["status"] == "ok"
    if phase is not None:
        sel &= df["phase"] == phase
    return df[sel]


def with_memory(df: pd.DataFrame, sources: tuple[str, ...] = ANY_MEMORY_SOURCES) -> pd.DataFrame:
    """Add `mem_gb` (first non-null of `sources`, per row) and `mem_source` (which column it came from). NVML is
    sampled (a training rank reads it between steps), so it can miss the peak: a step that hit the memory limit has
    emptied the allocator's cache by the time of the sample (6.7B RetNet on one H200: NVML 119.8 GB over idle, torch
    reserved 148.4). The process held at least its reserved peak, so that is taken where it is larger."""
    df = df.copy()
    mem = pd.Series(np.nan, index=df.index, dtype=float)
    src = pd.Series(None, index=df.index, dtype=object)
    for col in sources:
        take = mem.isna() & df[col].notna()
        mem[take] = df.loc[take, col]
        src[take] = col
    reserved = "mem_torch_reserved_gb"
    if reserved in sources and reserved in df:
        missed = (src == "mem_nvml_delta_gb") & (df[reserved] > mem)
        mem[missed], src[missed] = df.loc[missed, reserved], reserved
    df["mem_gb"], df["mem_source"] = mem, src
    return df


def impl_label(impl: object, kernel: object) -> str:
    """'impl (kernel)' as used in legends and tables."""
    if kernel is None or (isinstance(kernel, float) and np.isnan(kernel)) or kernel == "":
        return str(impl)
    return f"{impl} ({kernel})"


def contestant_label(impl: object, kernel: object, n_kv_heads: object = None, state_dtype: object = None,
                     grouped: object = None, decode_gemm: object = None) -> str:
    """The label a contestant has in every legend and table: 'impl (kernel)', plus ', N KV heads' for a GQA/MQA
    variant, ', Triton projections' for a decode step that projected through Triton (`decode_gemm`), and
    ', <dtype> state' for a RetNet state kept in another precision than fp32 (', <dtype> KV cache' for an attention
    model's quantized cache), last: the figures' palette reads a label's end. `grouped`: fewer KV heads than query
    heads (the loader's `kv_grouped`); without it, 8 or fewer KV heads count as grouped (paper-size models)."""
    label = impl_label(impl, kernel)
    has_kv = n_kv_heads is not None and pd.notna(n_kv_heads)
    is_grouped = bool(grouped) if grouped is not None and pd.notna(grouped) else has_kv and float(n_kv_heads) <= 8
    if has_kv and is_grouped:
        label += f", {int(float(n_kv_heads))} KV heads"
    if decode_gemm == "triton":
        label += ", Triton projections"
    if isinstance(state_dtype, str) and state_dtype not in ("", "float32"):
        label += f", {state_dtype} KV cache" if has_kv else f", {state_dtype} state"  # what the decoder carries
    return label


def contestant_labels(rows: pd.DataFrame) -> list[str]:
    """`contestant_label` of every row (the loader's `kv_grouped` where present): figures' legends and tables' lines."""
    grouped = rows["kv_grouped"] if "kv_grouped" in rows else [None] * len(rows)
    return [contestant_label(i, k, n, s, g, m) for i, k, n, s, g, m in zip(
        rows["impl"], rows["kernel"], rows["n_kv_heads"], rows["state_dtype"], grouped, rows["decode_gemm"])]


def run_meta(df: pd.DataFrame, envs: dict[str, dict]) -> str:
    """One line naming GPU, dtype, date and run id of the rows in `df` (every table and figure carries it)."""
    parts = []
    for run_id in sorted(df["run_id"].dropna().astype(str).unique()) if len(df) else sorted(envs):
        env = envs.get(run_id, {})
        sub = df[df["run_id"] == run_id] if len(df) else df
        gpu = env.get("gpu_name") or _first(sub, "gpu_name") or env.get("device") or _first(sub, "device") or "cpu"
        dtypes = sorted(sub["dtype"].dropna().astype(str).unique()) if len(sub) else []
        dtype = "/".join(dtypes) or env.get("dtype") or "?"
        date = str(env.get("created") or _first(sub, "timestamp") or "?")[:10]
        parts.append(f"GPU {gpu} · {dtype} · {date} · run {run_id}")
    return "; ".join(parts) if parts else "no runs"


def _first(df: pd.DataFrame, col: str) -> str | None:
    if not len(df) or col not in df.columns:
        return None
    vals = df[col].dropna()
    return str(vals.iloc[0]) if len(vals) else None
