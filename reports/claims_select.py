"""Selecting what a claim compares: contestants by role, the measured point nearest the paper's, memory measures.

Used by claims.py; no verdict logic here. Rows come from load.load_runs (every contract column, `role` filled).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import paper_values as pv
from .load import (ENGINE_SETTINGS, GPU_MEMORY_SOURCES, engine_setting_suffix, impl_label, ok_rows,
                   with_allocator_gib, with_engine_setting, with_memory, without_brief_decode)

# The paper's model sizes (Table 4, Fig. 6): a claim is judged only on rows at one of these presets on a GPU.
PAPER_PRESETS = ("1.3b", "2.7b", "6.7b", "13b")
MODERN_KV_HEADS = 8  # framing 4: grouped-query attention with 8 key/value heads (Llama 3, Mistral, Qwen)

GROUP = ["model", "arch", "role", "impl", "kernel", "n_kv_heads", "state_dtype", "world_size", "tensor_parallel",
         *ENGINE_SETTINGS, "decode_gemm", "phase", "batch_size", "seq_len", "capacity_budget_gib"]
VALUES = ["tokens_per_s", "tokens_per_s_per_gpu", "ms_per_token", "mem_gb", "mem_alloc_gib", "weights_gb",
          "pct_peak_bw", "n_params", "ms_median", "ms_p10", "ms_p90"]

# Two memory measures, both reported by every memory claim:
#   device memory (NVML peak minus the idle baseline, else torch's reserved peak), in GB: what the process holds,
#     the caching allocator's slack and kernel workspaces included, so what limits a batch;
#   allocator peak (torch.cuda.max_memory_allocated), in GiB: what the paper reported (torchscale's 47.05 GiB is
#     its "47.3 GB" at 6.7B, batch 8, 8k), so the like-for-like measure for the paper's ratios.
MEASURE_ALLOCATOR = "allocator peak (GiB)"
MEASURE_DEVICE = "device memory (NVML - idle, GB)"
MEMORY_MEASURE_WHY = (
    "Memory claims give two ratios. The verdict uses the allocator peak (torch.cuda.max_memory_allocated, in GiB) "
    "because that is what the paper reported (torchscale's 47.05 GiB = the paper's '47.3 GB'), so it compares like "
    "with like; the device-memory ratio (NVML peak minus the idle baseline) is shown beside it because device "
    "memory, the allocator's cached blocks and kernel workspaces included, is what limits a batch. Where a row "
    "has no allocator peak, the verdict falls back to device memory and says so.")


def points(df: pd.DataFrame, phase: str) -> pd.DataFrame:
    """ok rows of one phase with `mem_gb` (device) and `mem_alloc_gib` (allocator), repeated points (several
    runs) reduced to their median. Variant columns are kept so that callers can filter on them; a training step's
    engine settings (checkpointing, compile) read "none" where unset (`plain` keeps those rows)."""
    rows = with_allocator_gib(with_memory(ok_rows(without_brief_decode(df), phase), GPU_MEMORY_SOURCES))
    if rows.empty:
        return pd.DataFrame(columns=GROUP + VALUES + ["alloc_retries", "gpu_name", "dtype", "device"])
    rows = rows.assign(kernel=rows["kernel"].fillna(""), capacity_budget_gib=rows["capacity_budget_gib"].fillna(-1),
                       tensor_parallel=rows["tensor_parallel"].fillna(1),
                       n_kv_heads=rows["n_kv_heads"].fillna(-1), state_dtype=rows["state_dtype"].fillna(""),
                       role=rows["role"].fillna(""), **{c: rows[c].fillna("none") for c in ENGINE_SETTINGS},
                       decode_gemm=rows["decode_gemm"].fillna(""))
    # cudaMalloc retries: the most any repeat had (a point that stalled once ran at the memory limit)
    agg = {c: "median" for c in VALUES} | {"alloc_retries": "max", "gpu_name": "first", "dtype": "first",
                                           "device": "first"}
    return rows.groupby(GROUP, dropna=False, as_index=False).agg(agg)


def plain(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of `points` without an engine setting: steps that recompute nothing and run eager blocks."""
    return rows[~with_engine_setting(rows)]


def setting_label(r: pd.Series) -> str:
    """A `points` row's engine settings in words: "plain", or e.g. "checkpointed every 8th block"."""
    parts = [engine_setting_suffix(c, r[c]).removeprefix(", ") for c in ENGINE_SETTINGS if r[c] != "none"]
    return ", ".join(parts) or "plain"


def candidates(rows: pd.DataFrame) -> pd.DataFrame:
    """The paper's subject: RetNet contestants (role candidate, arch retnet) with the fp32 recurrent state
    (state_dtype float32 or unrecorded), the precision the claims use unless a framing says otherwise."""
    return rows[(rows["role"] == "candidate") & (rows["arch"] == "retnet")
                & rows["state_dtype"].isin(["", "float32"])]


def baselines(rows: pd.DataFrame, kv_heads: int | None = None) -> pd.DataFrame:
    """role baseline rows. kv_heads an int: exactly that many KV heads. kv_heads None: full multi-head attention,
    the paper's baseline: rows whose KV-head count is unrecorded (every row before schema 2 was MHA), or equals
    the largest recorded for their model, unless unrecorded MHA rows of that model exist beside it and it is at
    most MODERN_KV_HEADS (then it is a GQA/MQA run added to an older MHA sweep)."""
    base = rows[rows["role"] == "baseline"]
    if kv_heads is not None:
        return base[base["n_kv_heads"] == kv_heads]
    recorded = base["n_kv_heads"] >= 0
    top = base["n_kv_heads"].where(recorded).groupby(base["model"]).transform("max")
    has_old = (~recorded).groupby(base["model"]).transform("any")
    full = ~recorded | ((base["n_kv_heads"] == top) & ~(has_old & (base["n_kv_heads"] <= MODERN_KV_HEADS)))
    return base[full]


def kv_heads_label(n: float) -> str:
    return "MHA (KV heads = heads)" if pd.isna(n) or n < 0 else f"{int(n)} KV heads"


def projections_label(r: pd.Series) -> str:
    """', Triton projections' for a decode row whose step projected through retnet.kernels.skinny_linear."""
    return ", Triton projections" if r.get("decode_gemm") == "triton" else ""


def baseline_label(b: pd.Series) -> str:
    """'impl (kernel), <n> KV heads': every claim states the KV-head count of its baseline."""
    return f"{impl_label(b['impl'], b['kernel'] or None)}, {kv_heads_label(b['n_kv_heads'])}{projections_label(b)}"


def model_rank(rows: pd.DataFrame, model: str) -> tuple:
    n = rows.loc[rows["model"] == model, "n_params"].max()
    return (model != pv.PAPER_DECODE_MODEL, -(0.0 if pd.isna(n) else n), model)


def best_point(cand: pd.DataFrame, base: pd.DataFrame, keys: list[str], paper: dict) -> dict | None:
    """The key tuple shared by candidate and baseline rows that is closest to the paper's point."""
    common = cand[keys].drop_duplicates().merge(base[keys].drop_duplicates(), on=keys)
    if common.empty:
        return None
    both = pd.concat([cand, base])

    def rank(p: pd.Series) -> tuple:
        r: tuple = ()
        if "model" in keys:
            r += model_rank(both, p["model"]) if "model" not in paper else (p["model"] != paper["model"],)
        if "seq_len" in keys:
            r += (abs(math.log2(p["seq_len"] / paper["seq_len"])),)
        if "batch_size" in keys:
            r += (abs(p["batch_size"] - paper["batch_size"]), -p["batch_size"])
        if "capacity_budget_gib" in keys:
            r += (-p["capacity_budget_gib"],)
        return r

    return min((row for _, row in common.iterrows()), key=rank).to_dict()


def at(rows: pd.DataFrame, point: dict) -> pd.DataFrame:
    sel = np.ones(len(rows), dtype=bool)
    for k, v in point.items():
        sel &= (rows[k] == v).to_numpy()
    return rows[sel]


def fastest(rows: pd.DataFrame) -> pd.Series | None:
    if rows.empty:
        return None
    return rows.sort_values("tokens_per_s", ascending=False, na_position="last").iloc[0]


def _fold(num: float, den: float) -> float:
    if pd.isna(num) or pd.isna(den) or den <= 0:
        return float("nan")
    return float(num / den)


def ratio(metric: str, cand: pd.Series, base: pd.Series) -> float:
    """x-fold advantage of the candidate (larger favours RetNet); memory by the verdict's measure."""
    if metric == "memory":
        return memory_ratios(cand, base)[0]
    if metric == "throughput":
        return _fold(cand["tokens_per_s"], base["tokens_per_s"])
    return _fold(base["ms_per_token"], cand["ms_per_token"])


def step_band(value: float, cand: pd.Series, base: pd.Series) -> tuple[float, float]:
    """A speed ratio `value` (throughput or latency, larger favours RetNet) with each side's step time moved to the
    ends of its p10-p90 range: (RetNet at its p90 and the baseline at its p10, RetNet at its p10 and the baseline
    at its p90). Not a confidence interval: how far the steps of one run spread. NaN where a side has no spread."""
    try:
        low = value * (cand["ms_median"] / cand["ms_p90"]) * (base["ms_p10"] / base["ms_median"])
        high = value * (cand["ms_median"] / cand["ms_p10"]) * (base["ms_p90"] / base["ms_median"])
    except (KeyError, TypeError, ZeroDivisionError):
        return float("nan"), float("nan")
    return (float(low), float(high)) if math.isfinite(low) and math.isfinite(high) else (float("nan"), float("nan"))


def memory_ratios(cand: pd.Series, base: pd.Series) -> tuple[float, str, float, float]:
    """(verdict ratio, its measure, device-memory ratio, allocator ratio); see MEMORY_MEASURE_WHY."""
    device = _fold(base["mem_gb"], cand["mem_gb"])
    alloc = _fold(base["mem_alloc_gib"], cand["mem_alloc_gib"])
    if math.isfinite(alloc):
        return alloc, MEASURE_ALLOCATOR, device, alloc
    return device, MEASURE_DEVICE if math.isfinite(device) else "", device, alloc


def memory_text(cand: pd.Series, base: pd.Series) -> str:
    """Both measures, both sides: 'RetNet 12.5 GiB alloc / 14.3 GB device vs 47.0 GiB / 84.7 GB'."""
    def side(r: pd.Series) -> str:
        a = "—" if pd.isna(r["mem_alloc_gib"]) else f"{r['mem_alloc_gib']:.1f} GiB"
        d = "—" if pd.isna(r["mem_gb"]) else f"{r['mem_gb']:.1f} GB"
        return f"{a} allocated / {d} device"
    return f"RetNet {side(cand)} vs baseline {side(base)}"


def not_applicable(rows: list[pd.Series], suite: str) -> str:
    """'' when every row is under the paper's conditions (a CUDA device, a paper preset), else the reason."""
    for r in rows:
        device, model = str(r.get("device") or "cpu"), str(r.get("model"))
        if not device.startswith("cuda") or model not in PAPER_PRESETS:
            return f"not applicable on {device}/{model}: run {suite} on a GPU"
    return ""
