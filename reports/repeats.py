"""One training point measured in several runs: RetNet / Transformer per run, and how far apart the runs are.

Table 4 and the claims take each contestant's latest run (load.latest_per_point). When the runs given to a report
measured the same training point more than once (another lease of the same machine kind, or the same machine again),
this table lists every run's pair, so a reader sees whether one run's ratio is typical or one draw of a spread. Both
sides of a pair come from one run: one machine, minutes apart.
"""
from __future__ import annotations

import pandas as pd

from .contestants import Roster, roster_of
from .load import forward_backward_only, ok_rows, run_meta, training_variant
from .tables import Table

# What makes two runs' rows the same point: the suite, the GPU, the model and the step (engine variant, world size,
# length, batch, dtype)
_POINT = ["suite", "gpu_name", "model", "world_size", "variant", "seq_len", "batch_size", "dtype"]
# What makes a side the same contestant across runs (a Transformer's KV heads, RetNet's state precision)
_SIDE = ["impl", "kernel", "n_kv_heads", "state_dtype"]
_VALUES = ["tokens_per_s", "ms_p10", "ms_p90", "short_step_ms", "timestamp"]
# One line of the table per run of: a point, and the contestant on each side
_PAIR_KEY = _POINT + [f"{c}_retnet" for c in _SIDE] + [f"{c}_base" for c in _SIDE]


def _side(rows: pd.DataFrame, impls: list[str]) -> pd.DataFrame:
    """One row per (run, point, contestant): a point retried within a run keeps its latest row."""
    side = rows[rows["impl"].isin(impls)].sort_values("timestamp", na_position="first")
    keys = _POINT + ["run_id"] + _SIDE
    return side.drop_duplicates(keys, keep="last")[keys + _VALUES]


def training_pairs(df: pd.DataFrame, roster: Roster) -> pd.DataFrame:
    """Per run and training point: our RetNet (the roster's training subject) beside our own Transformer baseline of
    the same run, one line per contestant on each side, with `ratio` = RetNet tokens/s over the Transformer's. Only
    pairs whose point and contestants were measured in two runs or more. Left out: steps without an optimizer step
    (the paper's pipeline) and rows without tokens/s."""
    tr = ok_rows(df, "train") if len(df) else df
    if tr.empty:
        return pd.DataFrame()
    tr = tr[~forward_backward_only(tr) & tr["tokens_per_s"].notna()]
    # NaN is a value in a key here (a run without a GPU name, a Transformer row without a state precision)
    tr = tr.assign(variant=training_variant(tr), world_size=tr["world_size"].fillna(1))
    tr[_POINT + _SIDE] = tr[_POINT + _SIDE].astype(object).where(tr[_POINT + _SIDE].notna(), "-")
    pairs = _side(tr, roster.subjects("train")).merge(_side(tr, roster.own_baselines("train")),
                                                      on=_POINT + ["run_id"], suffixes=("_retnet", "_base"))
    if pairs.empty:
        return pairs
    pairs["ratio"] = pairs["tokens_per_s_retnet"] / pairs["tokens_per_s_base"]
    runs = pairs.groupby(_PAIR_KEY, dropna=False)["run_id"].transform("nunique")
    return pairs[runs >= 2].sort_values(_PAIR_KEY + ["timestamp_retnet"], na_position="first").reset_index(drop=True)


def _spread(p10: float, p90: float) -> str:
    return "" if pd.isna(p10) or pd.isna(p90) else f"{p10:.0f}-{p90:.0f}"


def _label(r: pd.Series, side: str) -> str:
    """impl (kernel), with a Transformer's KV heads or RetNet's state precision where the row has them."""
    extra = [f"{int(r[f'n_kv_heads_{side}'])} KV heads"] if r[f"n_kv_heads_{side}"] != "-" else []
    extra += [f"{r[f'state_dtype_{side}']} state"] if r[f"state_dtype_{side}"] != "-" else []
    return f"{r[f'impl_{side}']} ({', '.join([str(r[f'kernel_{side}'])] + extra)})"


def training_repeats(df: pd.DataFrame, envs: dict[str, dict], main_runs: set[str] | None = None) -> Table | None:
    """The report table of `training_pairs`, with the ratio's range per point in the note. `df`: every row of the
    runs given (not only each contestant's latest run). `main_runs`: the runs the rest of the report reads (the
    others were given with --repeats-from); None: all of them."""
    pairs = training_pairs(df, roster_of(df, envs))
    if pairs.empty:
        return None
    out, ranges = [], []
    for _, g in pairs.groupby(_PAIR_KEY, dropna=False, sort=False):
        first = g.iloc[0]
        world = int(first["world_size"])
        point = (f"{first['model']}{first['variant']}, {world} GPU{'s' if world > 1 else ''}, T={int(first['seq_len'])}"
                 f", batch {int(first['batch_size'])}, {first['gpu_name']}")
        pair = f"{_label(first, 'retnet')} / {_label(first, 'base')}"
        ranges.append(f"{point}, {pair}: {g['ratio'].min():.2f}-{g['ratio'].max():.2f}x over "
                      f"{g['run_id'].nunique()} runs (median {g['ratio'].median():.2f}x)")
        for _, r in g.iterrows():
            boot = envs.get(r["run_id"], {}).get("boot_id")
            stamp = r["timestamp_retnet"]
            out.append({"point": point, "pair": pair, "run": r["run_id"],
                        "read by": "the report" if main_runs is None or r["run_id"] in main_runs else "this table",
                        "UTC": str(stamp)[:16].replace("T", " ") if isinstance(stamp, str) else "",
                        "machine (boot)": str(boot)[:8] if boot else "",
                        "RetNet tokens/s": r["tokens_per_s_retnet"],
                        "RetNet ms p10-p90": _spread(r["ms_p10_retnet"], r["ms_p90_retnet"]),
                        "Transformer tokens/s": r["tokens_per_s_base"],
                        "Transformer ms p10-p90": _spread(r["ms_p10_base"], r["ms_p90_base"]),
                        "RetNet / Transformer": round(r["ratio"], 3),
                        "RetNet T=256 step ms": r["short_step_ms_retnet"],
                        "Transformer T=256 step ms": r["short_step_ms_base"]})
    frame = pd.DataFrame(out).set_index(["point", "pair", "run"])
    short = ["RetNet T=256 step ms", "Transformer T=256 step ms"]
    has_short = frame[short].notna().any().any()
    if not has_short:  # runs from before the column
        frame = frame.drop(columns=short)
    rows = df[df["run_id"].isin(pairs["run_id"].unique())]
    return Table("training_repeats", "Training: one point in several runs (RetNet / Transformer per run)", frame,
                 run_meta(rows, envs),
                 "both sides of a line come from one run (one machine, minutes apart); p10-p90 is the spread of one "
                 "run's steps, not between runs; runs with one machine (boot) id ran on one machine without a restart "
                 "(runs written before the id existed have none); 'read by': Table 4, the figures and the claims read "
                 "the report's runs (each contestant's latest among them), a run given with --repeats-from only this "
                 "table; the runs should share one method (the training loop changed in session 11)"
                 + ("; T=256 step ms: the same model and engine at T=256 after the timed steps, where the GPU has "
                    "little to do: on one GPU the host's time to issue a step, so it tells a slow host from a slow "
                    "GPU" if has_short else "") + ". Range per point: " + "; ".join(ranges))
