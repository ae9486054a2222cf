"""matplotlib figures (Agg, headless): the paper's Fig. 6a/6b/6c, Table 4 as bars, roofline, capacity.

Every builder takes (rows, envs) and returns a Figure, or raises FigureSkipped(reason) when its data is missing.
Titles carry GPU, dtype, date and run id; axes carry units; legends carry impl + kernel.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

from . import paper_values as pv  # noqa: E402
from .claims import RETNET_DECODE_IMPL  # noqa: E402
from .load import impl_label, ok_rows, run_meta, with_memory  # noqa: E402

PAPER_LIKE = ("paper-like", "torchscale-transformer")


class FigureSkipped(Exception):
    """The figure's data is missing; the message says what is missing (shown in the report)."""


def _rows(df: pd.DataFrame, phase: str) -> pd.DataFrame:
    rows = with_memory(ok_rows(df, phase))
    return rows.assign(label=[impl_label(i, k) for i, k in zip(rows["impl"], rows["kernel"])])


def _pick_model(rows: pd.DataFrame) -> str:
    models = rows["model"].dropna().unique()
    if pv.PAPER_DECODE_MODEL in models:
        return pv.PAPER_DECODE_MODEL
    sizes = rows.groupby("model")["n_params"].max().fillna(0)
    return str(sizes.idxmax())


def _pick_batch(rows: pd.DataFrame) -> int:
    """The batch nearest the paper's (8) among those with the most lengths measured."""
    n = rows.groupby("batch_size")["seq_len"].nunique()
    best = n[n == n.max()].index
    return int(min(best, key=lambda b: (abs(b - pv.PAPER_DECODE_BATCH), -b)))


def _new(title: str, meta: str, size: tuple[float, float] = (7.5, 4.8)) -> tuple[Figure, object]:
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{title}\n{meta}", fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _log2x(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())  # 2048, not 2^11


def _lines(ax, rows: pd.DataFrame, x: str, y: str, group: str = "label") -> None:
    for name, g in rows.groupby(group):
        g = g.groupby(x, as_index=False)[y].median().sort_values(x)
        style = "-" if str(name).startswith("retnet") else "--"
        ax.plot(g[x], g[y], style, marker="o", ms=4, label=str(name))
    ax.legend(fontsize=7, title="impl (kernel)", title_fontsize=7)


def _decode_slice(df: pd.DataFrame, value: str, what: str) -> tuple[pd.DataFrame, str, int]:
    rows = _rows(df, "decode").dropna(subset=[value, "seq_len"])
    if rows.empty:
        raise FigureSkipped(f"{what}: no ok decode rows with {value}")
    model = _pick_model(rows)
    rows = rows[rows["model"] == model]
    batch = _pick_batch(rows)
    return rows[rows["batch_size"] == batch], model, batch


def fig_memory_vs_length(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Fig. 6a: decode GPU memory vs context length, with the model-weights line."""
    rows, model, batch = _decode_slice(df, "mem_gb", "Fig. 6a")
    fig, ax = _new(f"Fig. 6a: decode memory vs length ({model}, batch {batch})", run_meta(rows, envs))
    _lines(ax, rows, "seq_len", "mem_gb")
    weights = rows["weights_gb"].median()
    if pd.notna(weights):
        ax.axhline(weights, color="black", ls=":", lw=1.2, label=f"model weights ({weights:.2f} GB)")
        ax.legend(fontsize=7, title="impl (kernel)", title_fontsize=7)
    sources = ", ".join(sorted(rows["mem_source"].dropna().unique()))
    ax.set_xlabel("context length T (tokens)")
    ax.set_ylabel(f"memory (GB; {sources})")
    _log2x(ax)
    return fig


def fig_throughput_vs_length(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Fig. 6b: decode throughput vs context length."""
    rows, model, batch = _decode_slice(df, "tokens_per_s", "Fig. 6b")
    fig, ax = _new(f"Fig. 6b: decode throughput vs length ({model}, batch {batch})", run_meta(rows, envs))
    _lines(ax, rows, "seq_len", "tokens_per_s")
    ax.set_xlabel("context length T (tokens)")
    ax.set_ylabel("throughput (tokens/s)")
    _log2x(ax)
    return fig


def fig_latency_vs_batch(df: pd.DataFrame, envs: dict[str, dict], max_lengths: int = 4) -> Figure:
    """Fig. 6c: decode latency (ms per token) vs batch size for several lengths.

    Lines: RetNet, the paper-like baseline and the fastest Transformer flavour, each at up to `max_lengths`
    lengths (the longest ones), so the figure stays readable with many kernels."""
    rows = _rows(df, "decode").dropna(subset=["ms_per_token"])
    if rows.empty or rows["batch_size"].nunique() < 2:
        raise FigureSkipped("Fig. 6c: needs ok decode rows at two or more batch sizes")
    model = _pick_model(rows)
    rows = rows[rows["model"] == model]
    base = rows[rows["arch"] == "transformer"]
    keep = set(rows.loc[rows["impl"].str.startswith("retnet"), "label"]) | set(
        base.loc[base["impl"].isin(PAPER_LIKE), "label"])
    if not base.empty:
        keep.add(base.groupby("label")["tokens_per_s"].median().idxmax())
    lengths = sorted(rows["seq_len"].unique())[-max_lengths:]
    rows = rows[rows["label"].isin(keep) & rows["seq_len"].isin(lengths)]
    rows = rows.assign(series=[f"{lab}, T={int(t)}" for lab, t in zip(rows["label"], rows["seq_len"])])
    fig, ax = _new(f"Fig. 6c: decode latency vs batch size ({model})", run_meta(rows, envs))
    _lines(ax, rows, "batch_size", "ms_per_token", group="series")
    _log2x(ax)
    ax.set_xlabel("batch size (sequences)")
    ax.set_ylabel("latency (ms per token per sequence step)")
    return fig


def fig_table4(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Table 4 as grouped bars: training memory (GB) and throughput (tokens/s) per size and impl (kernel)."""
    rows = _rows(df, "train")
    if rows.empty:
        raise FigureSkipped("Table 4 bars: no ok train rows")
    rows = rows.sort_values("batch_size").drop_duplicates(["model", "label", "seq_len"], keep="last")
    seq = int(min(rows["seq_len"].unique(), key=lambda t: abs(np.log2(t / pv.PAPER_TRAIN_SEQ_LEN))))
    rows = rows[rows["seq_len"] == seq]
    meta = run_meta(rows, envs)
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    fig.suptitle(f"Table 4 (training cost, T={seq}) as bars\n{meta}", fontsize=9)
    labels, models = sorted(rows["label"].unique()), sorted(rows["model"].unique())
    width = 0.8 / max(len(labels), 1)
    for ax, col, ylabel in ((axes[0], "mem_gb", "memory (GB)"), (axes[1], "tokens_per_s", "throughput (tokens/s)")):
        for i, lab in enumerate(labels):
            vals = [rows.loc[(rows["model"] == m) & (rows["label"] == lab), col].median() for m in models]
            ax.bar(np.arange(len(models)) + i * width, vals, width, label=lab)
        ax.set_xticks(np.arange(len(models)) + width * (len(labels) - 1) / 2, models)
        ax.set_xlabel("model size (preset)")
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, title="impl (kernel)", title_fontsize=7)
    return fig


def fig_roofline(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """% of the measured peak copy bandwidth reached by each decode point, by impl (kernel)."""
    rows = _rows(df, "decode").dropna(subset=["pct_peak_bw"])
    if rows.empty:
        raise FigureSkipped("Roofline: no decode rows with pct_peak_bw (needs a GPU run with peak_copy_gbps)")
    model = _pick_model(rows)
    rows = rows[rows["model"] == model]
    fig, ax = _new(f"Roofline: decode bandwidth use ({model}, all batches)", run_meta(rows, envs))
    for (name, g), marker in zip(rows.groupby("label"), "osD^v<>ph*"):
        ax.scatter(g["seq_len"] * g["batch_size"], g["pct_peak_bw"], marker=marker, s=22, label=name, alpha=0.8)
    ax.axhline(100, color="black", ls=":", lw=1, label="measured copy bandwidth")
    ax.legend(fontsize=7, title="impl (kernel)", title_fontsize=7)
    _log2x(ax)
    ax.set_xlabel("tokens held in cache/state (batch x T)")
    ax.set_ylabel("achieved bandwidth (% of peak copy GB/s)")
    return fig


def fig_capacity(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Throughput at the largest batch that fits the memory budget (capacity rows), per length."""
    rows = _rows(df, "capacity").dropna(subset=["tokens_per_s"])
    if rows.empty:
        raise FigureSkipped("Capacity: no ok capacity rows")
    model = _pick_model(rows)
    rows = rows[rows["model"] == model]
    budget = rows["capacity_budget_gb"].max()
    rows = rows[(rows["capacity_budget_gb"] == budget) | rows["capacity_budget_gb"].isna()]
    best = rows.sort_values("batch_size").drop_duplicates(["label", "seq_len"], keep="last")
    budget_txt = f"{budget:g} GB budget" if pd.notna(budget) else "budget not recorded"
    fig, ax = _new(f"Capacity: throughput at the largest batch that fits ({model}, {budget_txt})",
                   run_meta(best, envs))
    _lines(ax, best, "seq_len", "tokens_per_s")
    for _, r in best.iterrows():
        ax.annotate(f"b={int(r['batch_size'])}", (r["seq_len"], r["tokens_per_s"]), fontsize=6,
                    textcoords="offset points", xytext=(3, 3))
    _log2x(ax)
    ax.set_xlabel("context length T (tokens)")
    ax.set_ylabel("throughput at max batch (tokens/s)")
    return fig


FIGURES = {
    "fig6a_memory_vs_length": fig_memory_vs_length,
    "fig6b_throughput_vs_length": fig_throughput_vs_length,
    "fig6c_latency_vs_batch": fig_latency_vs_batch,
    "table4_training_bars": fig_table4,
    "roofline": fig_roofline,
    "capacity": fig_capacity,
}


def build_figures(df: pd.DataFrame, envs: dict[str, dict]) -> tuple[dict[str, Figure], dict[str, str]]:
    """All figures that have data, and a note per skipped one."""
    built, skipped = {}, {}
    for name, builder in FIGURES.items():
        try:
            built[name] = builder(df, envs)
        except FigureSkipped as e:
            skipped[name] = str(e)
    return built, skipped
