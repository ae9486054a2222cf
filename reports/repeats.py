"""One training point measured in several runs: RetNet / Transformer per run, and how far apart the runs are.

Table 4 and the claims take each contestant's latest run (load.latest_per_point). When the runs given to a report
measured the same training point more than once (another lease of the same machine kind, or the same machine again),
this table lists every run's pair, so a reader sees whether the ratio the claims judged is one of several close ones
or one draw of a spread. Both sides of a pair come from one run: one machine, minutes apart.
"""
from __future__ import annotations

import pandas as pd

from .load import forward_backward_only, ok_rows, run_meta, training_variant
from .tables import Table

RETNET_IMPL = "retnet-chunkwise"   # our RetNet's training contestant
BASELINE_IMPL = "transformer"      # our Transformer's
_POINT = ["model", "world_size", "variant", "seq_len", "batch_size", "dtype"]


def _side(rows: pd.DataFrame, impl: str) -> pd.DataFrame:
    side = rows[rows["impl"] == impl]
    return side[_POINT + ["run_id", "kernel", "tokens_per_s", "ms_p10", "ms_p90", "timestamp"]]


def training_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Per run and training point: our RetNet beside our Transformer of the same run, one line per (RetNet kernel,
    Transformer kernel), with `ratio` = RetNet tokens/s over the Transformer's. Only pairs whose point and kernels
    were measured in two runs or more. Steps without an optimizer step (the paper's pipeline) are left out."""
    tr = ok_rows(df, "train") if len(df) else df
    if tr.empty:
        return pd.DataFrame()
    tr = tr[~forward_backward_only(tr)]
    tr = tr.assign(variant=training_variant(tr), world_size=tr["world_size"].fillna(1))
    pairs = _side(tr, RETNET_IMPL).merge(_side(tr, BASELINE_IMPL), on=_POINT + ["run_id"],
                                         suffixes=("_retnet", "_base"))
    if pairs.empty:
        return pairs
    pairs["ratio"] = pairs["tokens_per_s_retnet"] / pairs["tokens_per_s_base"]
    combo = _POINT + ["kernel_retnet", "kernel_base"]
    runs = pairs.groupby(combo, dropna=False)["run_id"].transform("nunique")
    return pairs[runs >= 2].sort_values(combo + ["timestamp_retnet"]).reset_index(drop=True)


def _spread(p10: float, p90: float) -> str:
    return "" if pd.isna(p10) or pd.isna(p90) else f"{p10:.0f}-{p90:.0f}"


def training_repeats(df: pd.DataFrame, envs: dict[str, dict]) -> Table | None:
    """The report table of `training_pairs`, with the ratio's range per point in the note. `df`: every row of the
    runs given (not only each contestant's latest run)."""
    pairs = training_pairs(df)
    if pairs.empty:
        return None
    out, ranges = [], []
    for key, g in pairs.groupby(_POINT + ["kernel_retnet", "kernel_base"], dropna=False, sort=False):
        model, world, variant, seq, batch, _dtype, k_ret, k_base = key
        point = f"{model}{variant}, {int(world)} GPU{'s' if world > 1 else ''}, T={int(seq)}, batch {int(batch)}"
        pair = f"{RETNET_IMPL} ({k_ret}) / {BASELINE_IMPL} ({k_base})"
        ranges.append(f"{point}, {pair}: {g['ratio'].min():.2f}-{g['ratio'].max():.2f}x over {len(g)} runs "
                      f"(median {g['ratio'].median():.2f}x)")
        for _, r in g.iterrows():
            boot = envs.get(r["run_id"], {}).get("boot_id")
            out.append({"point": point, "pair": pair, "run": r["run_id"],
                        "UTC": str(r["timestamp_retnet"] or "")[:16].replace("T", " "),
                        "machine (boot)": str(boot)[:8] if boot else "",
                        "RetNet tokens/s": r["tokens_per_s_retnet"],
                        "RetNet ms p10-p90": _spread(r["ms_p10_retnet"], r["ms_p90_retnet"]),
                        "Transformer tokens/s": r["tokens_per_s_base"],
                        "Transformer ms p10-p90": _spread(r["ms_p10_base"], r["ms_p90_base"]),
                        "RetNet / Transformer": round(r["ratio"], 3)})
    frame = pd.DataFrame(out).set_index(["point", "pair", "run"])
    rows = df[df["run_id"].isin(pairs["run_id"].unique())]
    return Table("training_repeats", "Training: one point in several runs (RetNet / Transformer per run)", frame,
                 run_meta(rows, envs),
                 "both sides of a line come from one run (one machine, minutes apart); runs with one machine (boot) "
                 "id ran on one machine without a restart (runs written before the id existed have none); Table 4 and "
                 "the claims use each contestant's latest run. Range per point: " + "; ".join(ranges))
