"""pandas tables for the report: decode pivots, RetNet/Transformer ratios, the paper's Table 4, row status.

Memory in tables is `mem_gb` from `load.with_memory` (NVML delta, else torch reserved, else torch allocated peak,
else process RSS); each memory table says which sources its numbers came from.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from retnet_bench.suites.contract import FORWARD_BACKWARD_ONLY

from . import paper_values as pv
from .claims import TRAIN_BASELINE_KERNELS
from .contestants import Roster, roster_of
from .load import (PREFILL_SUITE, contestant_labels, forward_backward_only, ok_rows, run_meta, size_key,
                   training_variant, with_allocator_gib, with_memory, without_brief_decode)


@dataclass
class Table:
    """A named table with the caption every table carries (GPU, dtype, date, run id)."""

    name: str      # file stem under tables/
    title: str
    df: pd.DataFrame
    meta: str      # run_meta(): GPU, dtype, date, run id
    note: str = ""

    def to_csv_frame(self) -> pd.DataFrame:
        """Flat frame with the run metadata as leading columns (CSV has no caption)."""
        flat = self.df.reset_index()
        flat.columns = [" ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c)
                        for c in flat.columns]
        flat.insert(0, "meta", self.meta)
        return flat


def _labelled(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with `impl_kernel`: the contestant's full label (KV heads, projections, state precision), so that no
    cell is the median of two contestants (MHA and GQA-8 rows of one impl and kernel were once averaged)."""
    rows = with_memory(rows)
    return rows.assign(impl_kernel=contestant_labels(rows))


def _sources(rows: pd.DataFrame) -> str:
    used = sorted(rows["mem_source"].dropna().unique())
    return "memory from " + (", ".join(used) if used else "no memory column")


_POINT = ["batch_size", "seq_len"]


def _by_length(frame: pd.DataFrame, value: str, row_label: str) -> pd.DataFrame:
    """(row label, batch) x length pivot of `value` (median per cell), columns named T=<length>."""
    pivot = frame.pivot_table(index=["impl_kernel", "batch_size"], columns="seq_len", values=value, aggfunc="median")
    pivot.columns = [f"T={int(c)}" for c in pivot.columns]
    pivot.index = pivot.index.set_names([row_label, "batch"])
    return pivot


def _retnet_beside_baselines(rows: pd.DataFrame, roster: Roster, values: list[str]) -> pd.DataFrame | None:
    """Per (Transformer flavour, batch, length): the flavour's median `values` (suffix _base) beside the RetNet
    subject's fastest kernel at that point with the fp32 state, as the claims take it (suffix _retnet); None when
    either side has no rows."""
    fp32 = rows["state_dtype"].isna() | (rows["state_dtype"] == "float32")  # unrecorded: every run before bf16
    retnet = rows[rows["impl"].isin(roster.subjects("decode")) & fp32]
    base = rows[rows["role"] == "baseline"]
    if retnet.empty or base.empty:
        return None
    # RetNet's fastest kernel per point is the RetNet side of every ratio, with the baseline's decode projections
    # where RetNet was measured with them (like with like), else its fastest row at that point.
    retnet, base = retnet.assign(_gemm=retnet["decode_gemm"].fillna("")), base.assign(
        _gemm=base["decode_gemm"].fillna(""))
    by_gemm = retnet.sort_values("tokens_per_s").drop_duplicates(_POINT + ["_gemm"], keep="last")
    fastest = retnet.sort_values("tokens_per_s").drop_duplicates(_POINT, keep="last")
    b = base.groupby(["impl_kernel", "_gemm"] + _POINT, as_index=False)[values].median()
    same = b.merge(by_gemm[_POINT + ["_gemm"] + values], on=_POINT + ["_gemm"], suffixes=("_base", "_retnet"))
    rest = b.merge(same[["impl_kernel", "_gemm"] + _POINT], how="left", indicator=True)
    rest = rest[rest["_merge"] == "left_only"].drop(columns="_merge").merge(
        fastest[_POINT + values], on=_POINT, suffixes=("_base", "_retnet"))
    return pd.concat([same, rest], ignore_index=True).drop(columns="_gemm")


# What an energy table says it holds (suites/trackers.EnergyTracker): GPU energy over the timed window per token.
ENERGY_NOTE = ("GPU energy (NVML's counter, whole device) over the timed window, per token; decode windows of "
               "torch.cat-grown caches include their untimed cut-back (the row's notes say so); points without a "
               "reading are left out")


def decode_tables(df: pd.DataFrame, envs: dict[str, dict]) -> list[Table]:
    """Per model: (impl (kernel), batch) x length pivots of tokens/s, ms/token, J/token and GB (decode sweeps only:
    not the brief decode checks of the `prefill` suite). A quantity no row has (J/token off a GPU) gets no table."""
    dec = _labelled(ok_rows(without_brief_decode(df), "decode"))
    tables = []
    for model in sorted(dec["model"].dropna().unique(), key=size_key):
        rows = dec[dec["model"] == model]
        meta = run_meta(rows, envs)
        for value, unit, name in (("tokens_per_s", "tokens/s", "tokens_per_s"), ("ms_per_token", "ms/token",
                                                                                  "ms_per_token"),
                                  ("joules_per_token", "J/token", "joules_per_token"),
                                  ("mem_gb", "GB", "memory_gb")):
            if rows[value].notna().sum() == 0:
                continue
            note = _sources(rows) if value == "mem_gb" else ENERGY_NOTE if value == "joules_per_token" else ""
            tables.append(Table(f"decode_{name}_{model}", f"Decode {unit}, {model} (rows: batch; columns: "
                                f"context length)", _by_length(rows, value, "impl (kernel)"), meta, note))
    return tables


def ratio_tables(df: pd.DataFrame, envs: dict[str, dict]) -> list[Table]:
    """Per model: the subject RetNet line (our own decode candidate, from the contestants table) / each baseline
    flavour at equal batch and length."""
    roster = roster_of(df, envs)
    dec = _labelled(ok_rows(without_brief_decode(df), "decode"))
    tables = []
    for model in sorted(dec["model"].dropna().unique(), key=size_key):
        rows = dec[dec["model"] == model]
        m = _retnet_beside_baselines(rows, roster, ["tokens_per_s", "mem_gb"])
        if m is None:
            continue
        m["throughput_x"] = m["tokens_per_s_retnet"] / m["tokens_per_s_base"]
        m["memory_x"] = m["mem_gb_base"] / m["mem_gb_retnet"]
        meta = run_meta(rows, envs)
        for col, title, name in (("throughput_x", "RetNet tokens/s / Transformer tokens/s", "throughput"),
                                 ("memory_x", "Transformer GB / RetNet GB (x less memory)", "memory")):
            if m[col].notna().sum() == 0:
                continue
            tables.append(Table(f"ratio_{name}_{model}", f"{title}, {model} (> 1 favours RetNet)",
                                _by_length(m, col, "Transformer flavour"), meta,
                                _sources(rows) if name == "memory" else ""))
    return tables


def prefill_tables(df: pd.DataFrame, envs: dict[str, dict]) -> list[Table]:
    """Per model: prefill tokens/s, (impl (kernel), batch) x length, and RetNet's fastest kernel / each Transformer
    flavour at equal batch and length. The `prefill` suite's rows (warmed, repeated) when there are any; otherwise the
    single prefill each decode point timed before its steps."""
    roster = roster_of(df, envs)
    pre = _labelled(ok_rows(df, "prefill"))
    timed = pre[pre["suite"] == PREFILL_SUITE]
    pre, source = (timed, "the prefill suite (warmed, median of repeats)") if not timed.empty else (
        pre, "the prefill before each decode point (one pass, not warmed)")
    tables = []
    for model in sorted(pre["model"].dropna().unique(), key=size_key):
        rows = pre[pre["model"] == model]
        meta = run_meta(rows, envs)
        tables.append(Table(f"prefill_tokens_per_s_{model}", f"Prefill tokens/s, {model} (rows: batch; columns: "
                            "prompt length)", _by_length(rows, "tokens_per_s", "impl (kernel)"), meta,
                            f"from {source}"))
        if rows["joules_per_token"].notna().any():
            tables.append(Table(f"prefill_joules_per_token_{model}", f"Prefill J/token, {model} (rows: batch; "
                                "columns: prompt length)", _by_length(rows, "joules_per_token", "impl (kernel)"),
                                meta, f"from {source}; GPU energy (NVML's counter, whole device) over the timed "
                                "prefills, per prompt token; points without a reading are left out"))
        m = _retnet_beside_baselines(rows, roster, ["tokens_per_s"])
        if m is None:
            continue
        m["x"] = m["tokens_per_s_retnet"] / m["tokens_per_s_base"]
        tables.append(Table(f"prefill_ratio_{model}", f"RetNet prefill tokens/s / Transformer prefill tokens/s, "
                            f"{model} (> 1 favours RetNet)", _by_length(m, "x", "Transformer flavour"), meta,
                            f"from {source}"))
    return tables


def _paper_flavour(impl: str, kernel: str, roster: Roster) -> str | None:
    """Which column of the paper's Table 4 a training row sits beside: our RetNet (the subject of `train`), the
    vanilla Transformer (the paper's pipeline or a materialised-softmax kernel), or FlashAttention."""
    if impl in roster.subjects("train"):
        return "retnet"
    c = roster.get(impl)
    if c is None or c.role != "baseline":  # e.g. an official RetNet: no column of the paper's Table 4
        return None
    if impl in roster.paper_pipeline("train") or kernel in TRAIN_BASELINE_KERNELS["vanilla"]:
        return "vanilla"
    if kernel in TRAIN_BASELINE_KERNELS["flash"]:
        return "flash"
    return None


def _pct(part: float | None, whole: float | None) -> float | None:
    ok = part is not None and whole and not (pd.isna(part) or pd.isna(whole))
    return 100.0 * part / whole if ok else None


def table4(df: pd.DataFrame, envs: dict[str, dict]) -> Table | None:
    """Training in the shape of the paper's Table 4: memory GB and tokens/s per size and impl, paper beside ours.

    For each (size, impl, kernel, length) the largest batch that ran is shown. Memory twice: the allocator peak in
    GiB (the paper's measure: its "GB" are GiB) and the device memory in GB (what the process held)."""
    roster = roster_of(df, envs)
    tr = with_allocator_gib(_labelled(ok_rows(df, "train")))
    if tr.empty:
        return None
    # tensor-parallel, checkpointed and compiled steps on their own lines: other measurements of the same contestant
    # a row that timed no optimizer step (the paper's pipeline, `optimizer = false`) says so, as its bar is dotted
    partial = forward_backward_only(tr).map({True: ", " + FORWARD_BACKWARD_ONLY, False: ""})
    # and a point over several GPUs (FSDP2) is another measurement too: its line says how many
    gpus = tr["world_size"].fillna(1).astype(int)
    tr = tr.assign(impl_kernel=tr["impl_kernel"] + training_variant(tr) + partial
                   + gpus.map(lambda n: f", {n} GPUs" if n > 1 else ""), gpus=gpus)
    tr = tr.sort_values("batch_size").drop_duplicates(["model", "impl_kernel", "seq_len"], keep="last")
    out = []
    for _, row in tr.iterrows():
        flavour = _paper_flavour(row["impl"], row["kernel"], roster)
        # the paper's numbers beside rows of its setting only (a T=256 row, the host's time per step, is not one)
        paper = pv.TABLE4.get(row["model"], {}) if int(row["seq_len"]) == pv.PAPER_TRAIN_SEQ_LEN else {}
        out.append({"size": row["model"], "impl (kernel)": row["impl_kernel"], "seq_len": int(row["seq_len"]),
                    "batch": int(row["batch_size"]), "allocator GiB": row["mem_alloc_gib"],
                    "device GB": row["mem_gb"], "alloc retries": row.get("alloc_retries"),
                    "tokens/s": row["tokens_per_s"],
                    "tokens/s per GPU": row["tokens_per_s_per_gpu"],
                    "J/token": row["joules_per_token"],
                    "GPU compute % of step": _pct(row.get("gpu_compute_ms"), row["ms_median"]),
                    "T=256 step % of step": _pct(row.get("short_step_ms"), row["ms_median"]),
                    "exposed comm ms": row.get("exposed_comm_ms"),
                    "paper memory (its GB = GiB)": paper.get("memory_gb", {}).get(flavour) if flavour else None,
                    "paper wps (8 GPUs)": paper.get("tokens_per_s", {}).get(flavour) if flavour else None})
    out.sort(key=lambda r: (size_key(r["size"]), r["impl (kernel)"], r["seq_len"]))
    frame = pd.DataFrame(out).set_index(["size", "impl (kernel)"])
    # rows from before a column, or (J/token) from runs without an energy counter: nothing to say
    frame = frame.drop(columns=[c for c in ("alloc retries", "J/token", "GPU compute % of step", "T=256 step % of step",
                                            "exposed comm ms") if frame[c].isna().all()])
    multi_gpu = bool((tr["gpus"] > 1).any())
    if not multi_gpu:  # one GPU throughout: per GPU is the same number, and nothing is communicated
        frame = frame.drop(columns=[c for c in ("tokens/s per GPU", "exposed comm ms") if c in frame])
    return Table("table4_training", "Training cost in the shape of the paper's Table 4", frame, run_meta(tr, envs),
                 ("tokens/s: all GPUs of a row; memory: per GPU (the largest rank); " if multi_gpu else "")
                 + "device GB: " + _sources(tr) + ("; J/token: GPU energy of the timed steps (NVML's counter), all "
                 "GPUs, per token of all ranks" if "J/token" in frame else "")
                 + ("; GPU compute % of step: the busiest GPU's kernels (NCCL's excluded) in one profiled step after "
                    "the timed ones, over the median step; below 100% the GPU waited for the host or a collective"
                    if "GPU compute % of step" in frame else "")
                 + ("; T=256 step % of step: a step of the same model and engine at T=256 (the GPU has little to do "
                    "there), over the median step; on one GPU near 100% the host's time to issue a step, not the GPU, "
                    "sets the pace; on several it also holds the communication" if "T=256 step % of step" in frame
                    else "")
                 + ("; exposed comm ms: NCCL kernels with no compute beside them in that step, the largest rank"
                    if "exposed comm ms" in frame else "") + f"; paper: {pv.TABLE4_SOURCE} (its "
                 "GB are GiB, as the allocator column; absolute numbers not comparable: 8 GPUs, TP)")


def status_table(df: pd.DataFrame, envs: dict[str, dict]) -> Table | None:
    """How many rows each (phase, impl, kernel) has per status: non-ok rows are counted, never used as values."""
    if df.empty:
        return None
    rows = _labelled(df)
    # a capacity search's rows per budget: two searches at different budgets are two things
    budget = rows["capacity_budget_gib"].map(lambda b: "" if pd.isna(b) else f" ({b:.3g} GiB)")
    rows = rows.assign(phase=rows["phase"].astype(str) + budget)
    counts = rows.pivot_table(index=["phase", "impl_kernel"], columns="status", values="run_id", aggfunc="count",
                              fill_value=0)
    counts.index = counts.index.set_names(["phase", "impl (kernel)"])
    return Table("status_counts", "Rows per status", counts, run_meta(df, envs))


# The op-level phases of the `kernels` suite, in the order a reader compares them.
OP_PHASES = {"op_fwd": "forward", "op_fwdbwd": "forward + backward", "op_decode": "one decode step"}


def op_tables(df: pd.DataFrame, envs: dict[str, dict]) -> list[Table]:
    """Per model and op phase: (op (kernel), batch) x length pivot of ms per call: one layer's attention or retention
    at the model's head shapes (the `kernels` suite), so a kernel engineer sees each kernel beside the others."""
    ops = _labelled(ok_rows(df[df["phase"].isin(list(OP_PHASES))], None)) if len(df) else df
    tables = []
    for model in sorted(ops["model"].dropna().unique(), key=size_key) if len(ops) else []:
        for phase, words in OP_PHASES.items():
            rows = ops[(ops["model"] == model) & (ops["phase"] == phase)]
            if rows["ms_median"].notna().sum() == 0:
                continue
            tables.append(Table(f"{phase}_ms_{model}", f"Op level, {words}: ms per call, one layer at {model}'s "
                                f"head shapes (rows: op (kernel), batch; columns: length)",
                                _by_length(rows, "ms_median", "op (kernel)"), run_meta(rows, envs),
                                "points that did not run (oom, skipped) are in the status table"))
    return tables


def all_tables(df: pd.DataFrame, envs: dict[str, dict]) -> list[Table]:
    tables = decode_tables(df, envs) + ratio_tables(df, envs) + prefill_tables(df, envs) + op_tables(df, envs)
    tables += [t for t in (table4(df, envs), status_table(df, envs)) if t is not None]
    return tables
