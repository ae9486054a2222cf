"""Training and capacity figures: Table 4 as bars (OOM bars shown), capacity as bars, multi-GPU scaling, training
vs sequence length.

Same conventions as figures.py (colours per contestant from figure_style.py, legends outside, OOM labelled).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import paper_values as pv
from .figure_style import (FASTEST_SETTING, FWD_BWD_LABEL, draw_oom, figure_meta, legend_outside, log2_ticks,
                           new_figure, palette, rows_of)
from .load import forward_backward_only, size_key, training_memory, with_allocator_gib, with_engine_setting


def _skip(reason: str) -> Exception:
    from .figures import FigureSkipped  # figures.py imports this module; import lazily to avoid a cycle

    return FigureSkipped(reason)


def fig_table4(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Table 4 as grouped bars: training memory (the allocator peak in GiB, else device GB) and throughput (tokens/s)
    per size and contestant; a point that ran out of memory is a hatched stub labelled OOM, not a missing bar; a
    throughput bar whose step ran at the memory limit (cudaMalloc retries) says how many. Bars are plain steps; where a
    contestant's fastest engine setting (checkpointing, compile: the step the strongest framing's claim takes) beats
    its plain step, or the plain step ran out of memory, a black tick on the throughput bar (or over the OOM stub)
    marks it. A bar that timed only forward + backward (an official-code peer, no optimizer step) is dotted and says
    so in the legend: it is not the same work as an AdamW step."""
    pal = palette(df, envs)
    ok, oom = with_allocator_gib(rows_of(df, "train")), rows_of(df, "train", ("oom",))
    if ok.empty:
        raise _skip("Table 4 bars: no ok train rows")
    # one world size for all bars (tokens/s of several ranks are totals; the scaling figure sets world sizes side by
    # side): among those with a bar, the one that covers the most sizes (oom stubs count), the fewest GPUs among
    # equals (a scaling run's 1-GPU point at one size would otherwise hide its 2-GPU points at four)
    both = pd.concat([ok, oom])
    sizes_per_world_size = both.groupby(both["world_size"].fillna(1).astype(int))["model"].nunique()
    with_bar = set(ok["world_size"].fillna(1).astype(int))
    ws = int(min(with_bar, key=lambda w: (-sizes_per_world_size[w], w)))
    ok, oom = ok[ok["world_size"].fillna(1) == ws], oom[oom["world_size"].fillna(1) == ws]
    ok = ok.sort_values("batch_size").drop_duplicates(["model", "label", "seq_len"], keep="last")
    seq = int(min(ok["seq_len"].unique(), key=lambda t: abs(np.log2(t / pv.PAPER_TRAIN_SEQ_LEN))))
    ok, oom = ok[ok["seq_len"] == seq], oom[oom["seq_len"] == seq]
    settings = rows_of(df, "train", plain=False)  # every engine setting of the same steps (one GPU group, no TP)
    settings = settings[(settings["world_size"].fillna(1) == ws) & (settings["seq_len"] == seq)
                        & (settings["tensor_parallel"].fillna(1) == 1)
                        & with_engine_setting(settings)]
    plain_value = ok.groupby(["model", "label"])["tokens_per_s"].median()
    plain_oom = set(zip(oom["model"], oom["label"]))
    settings = settings.sort_values("tokens_per_s").drop_duplicates(["model", "label"], keep="last")
    # a setting beats a plain step that ran slower, or that ran out of memory (13B on two GPUs: checkpointed only);
    # with no plain row at all there is no bar or stub to mark
    faster = settings.loc[pd.Series([r.tokens_per_s > plain_value.get(
        (r.model, r.label), -np.inf if (r.model, r.label) in plain_oom else np.inf) for r in settings.itertuples()],
        index=settings.index, dtype=bool)]
    models = sorted(set(ok["model"]) | set(oom["model"]), key=size_key)
    labels = pal.order(set(ok["label"]) | set(oom["label"]))
    gpus = "one GPU" if ws == 1 else f"{ws} GPUs"
    fig, axes = new_figure(f"Table 4 as bars: training cost at T={seq} ({gpus}, real AdamW step where the row says "
                           f"so)", figure_meta(pd.concat([ok, faster]), envs), ncols=2,
                           size=(12.0, 4.8))
    width = 0.8 / max(len(labels), 1)
    for ax, col, ylabel in ((axes[0], *training_memory(ok)),
                            (axes[1], "tokens_per_s", "throughput (tokens/s)" if ws == 1 else
                             f"throughput (tokens/s, all {ws} GPUs)")):
        drawn = pd.concat([ok[col], faster[col]]) if col == "tokens_per_s" else ok[col]
        top = float(drawn.max()) if drawn.notna().any() else 1.0
        for i, lab in enumerate(labels):
            xs = np.arange(len(models)) + i * width
            bars = [ok[(ok["model"] == m) & (ok["label"] == lab)] for m in models]  # this contestant's rows per size
            vals = [b[col].median() for b in bars]
            partial = any(forward_backward_only(b).any() for b in bars)
            ax.bar(xs, vals, width, label=lab, color=pal.colour(lab), edgecolor="white", linewidth=0.5,
                   hatch="..." if partial else None)
            if partial:  # a legend entry once per figure (legend_outside drops duplicate labels)
                ax.bar([xs[0]], [0], width, color="white", edgecolor="grey", hatch="...", label=FWD_BWD_LABEL)
            for x, m, bar, value in zip(xs, models, bars, vals):
                failed = ((oom["model"] == m) & (oom["label"] == lab)).any()
                if failed and bar.empty:
                    ax.bar([x], [0.06 * top], width, color="none", edgecolor=pal.colour(lab), hatch="///",
                           label="_oom")
                    ax.text(x, 0.07 * top, "OOM", rotation=90, ha="center", va="bottom", fontsize=7,
                            color=pal.colour(lab))
                if col != "tokens_per_s":
                    continue
                fastest = faster.loc[(faster["model"] == m) & (faster["label"] == lab), col].max()
                if pd.notna(fastest):
                    ax.hlines(fastest, x - width / 2, x + width / 2, colors="black", linewidth=2,
                              label=FASTEST_SETTING)
                if bar.empty:
                    continue
                retries = bar["alloc_retries"].max()
                if pd.notna(retries) and retries > 0:
                    # the step ran at the GPU's memory limit: its time includes allocator stalls
                    ax.text(x, max(value, fastest if pd.notna(fastest) else value), f"{int(retries)} alloc\nretries",
                            ha="center", va="bottom", fontsize=7, color=pal.colour(lab))
        ax.set_xticks(np.arange(len(models)) + width * (len(labels) - 1) / 2, models)
        ax.set_xlabel("model size (preset)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, top * 1.12)
        ax.grid(True, axis="x", alpha=0)
    legend_outside(fig, axes, pal)
    return fig


def fig_capacity(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Capacity as bars: per contestant the largest batch that fits the memory budget and its throughput there."""
    pal = palette(df, envs)
    rows = rows_of(df, "capacity").dropna(subset=["tokens_per_s"])
    if rows.empty:
        raise _skip("Capacity: no ok capacity rows")
    from .figures import pick_model

    model = pick_model(rows)
    rows = rows[rows["model"] == model]
    budget = rows["capacity_budget_gib"].max()
    rows = rows[(rows["capacity_budget_gib"] == budget) | rows["capacity_budget_gib"].isna()]
    T = int(min(rows["seq_len"].unique(), key=lambda t: abs(t - pv.PAPER_DECODE_SEQ_LEN)))
    best = rows[rows["seq_len"] == T].sort_values("batch_size").drop_duplicates(["label"], keep="last")
    labels = pal.order(best["label"])[::-1]  # barh draws bottom-up: the subject on top
    best = best.set_index("label").loc[labels]
    budget_txt = f"{budget:.3g} GiB budget" if pd.notna(budget) else "budget not recorded"
    fig, axes = new_figure(f"Capacity: the largest batch that fits ({model}, T={T}, {budget_txt})",
                           figure_meta(best.reset_index(), envs), ncols=2, size=(12.0, 0.45 * len(labels) + 2.2),
                           sharey=True)
    y = np.arange(len(labels))
    for ax, col, xlabel, fmt in ((axes[0], "batch_size", "largest batch within the budget (sequences)", "{:,.0f}"),
                                 (axes[1], "tokens_per_s", "throughput at that batch (tokens/s)", "{:,.0f}")):
        vals = best[col].to_numpy(dtype=float)
        ax.barh(y, vals, color=[pal.colour(lab) for lab in labels], height=0.7)
        for yi, v in zip(y, vals):
            ax.text(v, yi, " " + fmt.format(v), va="center", fontsize=7)
        ax.set_xlim(0, float(np.nanmax(vals)) * 1.18)
        ax.set_xlabel(xlabel)
        ax.grid(True, axis="y", alpha=0)
    axes[0].set_yticks(y, labels, fontsize=8)
    return fig


EVERY_RUN_LABEL = "every run of the point (lines: the latest)"


def fig_scaling(df: pd.DataFrame, envs: dict[str, dict], every: pd.DataFrame | None = None) -> Figure:
    """Training tokens/s per GPU vs world size (GPUs), with the ideal (linear scaling: flat per GPU) line; where a
    point was measured in several runs (`every`: every run's rows), each run is a small hollow dot beside it."""
    pal = palette(df, envs)
    rows = rows_of(df, "train")
    if rows.empty or not (rows["world_size"].fillna(1) > 1).any():
        raise _skip("Scaling: no training rows with world_size > 1 (run table4 on several GPUs)")
    rows = rows.assign(world_size=rows["world_size"].fillna(1), per_gpu=rows["tokens_per_s_per_gpu"])
    multi = rows.groupby(["model", "label"])["world_size"].transform("nunique") > 1
    rows = rows[multi]
    if rows.empty:
        raise _skip("Scaling: no contestant measured at two or more world sizes")
    models = sorted(rows["model"].unique(), key=size_key)
    every_run = _every_run(every, rows)
    fig, axes = new_figure("Training scaling: tokens/s per GPU vs GPUs (labels: % of the fewest GPUs' rate)",
                           figure_meta(rows, envs), ncols=len(models),
                           size=(4.5 * len(models) + 2.6, 4.4))
    for ax, m in zip(axes, models):
        here = rows[rows["model"] == m]
        labels: list[tuple[float, float, str, str]] = []  # (world size, per GPU, efficiency text, colour)
        for lab in pal.order(here["label"]):
            g = here[here["label"] == lab].groupby("world_size", as_index=False)["per_gpu"].median()
            g = g.sort_values("world_size")
            ax.plot(g["world_size"], g["per_gpu"], "-o", color=pal.colour(lab), label=lab)
            ax.plot(g["world_size"], [g["per_gpu"].iloc[0]] * len(g), ":", color=pal.colour(lab), lw=1,
                    label="ideal (linear scaling: per-GPU rate kept)")
            labels += [(ws, v, f"{v / g['per_gpu'].iloc[0]:.0%}", pal.colour(lab))  # scaling efficiency (#14)
                       for ws, v in zip(g["world_size"].iloc[1:], g["per_gpu"].iloc[1:])]
        draws = every_run[every_run["model"] == m]
        repeated = draws.groupby("label")["world_size"].agg(lambda w: w.duplicated().any())
        if repeated.any():  # one neutral legend entry for the dots of every contestant
            ax.scatter([], [], s=14, facecolors="none", edgecolors="0.4", label=EVERY_RUN_LABEL)
        for i, lab in enumerate(pal.order(here["label"])):  # right of the points (the % labels are left of them),
            if repeated.get(lab, False):  # a small x offset per contestant keeps its dots apart
                d = draws[draws["label"] == lab]
                ax.scatter(d["world_size"] * 2 ** (0.04 * (i + 1)), d["per_gpu"], s=14, facecolors="none",
                           edgecolors=pal.colour(lab), linewidths=0.9, zorder=3, label="_nolegend_")
        log2_ticks(ax, here["world_size"])
        top = 1.08 * float(max(here["per_gpu"].max(), draws["per_gpu"].max() if len(draws) else 0))
        ax.set_ylim(0, top)
        _efficiency_labels(ax, labels, gap=0.055 * top)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("GPUs (world size)")
    axes[0].set_ylabel("tokens/s per GPU")
    legend_outside(fig, axes, pal)
    return fig


def _every_run(every: pd.DataFrame | None, shown: pd.DataFrame) -> pd.DataFrame:
    """Every run's per-GPU rate at the (model, contestant, world size) points the figure shows (`shown`: the scaling
    rows; empty without `every`)."""
    cols = ["model", "label", "world_size", "per_gpu"]
    if every is None or every.empty:
        return pd.DataFrame(columns=cols)
    rows = rows_of(every, "train")  # world_size is filled by the loader (load.normalise_rows)
    rows = rows.assign(per_gpu=rows["tokens_per_s_per_gpu"])
    return rows.merge(shown[cols[:3]].drop_duplicates(), on=cols[:3])[cols]


def _efficiency_labels(ax, labels: list[tuple[float, float, str, str]], gap: float) -> None:
    """Each contestant's % label under its point; where two points of one world size are closer than `gap`, the
    lower labels move down, in the points' order, so that no two labels overlap."""
    for ws in sorted({ws for ws, *_ in labels}):
        y_prev = float("inf")
        for _, v, text, colour in sorted((x for x in labels if x[0] == ws), key=lambda x: -x[1]):
            y = min(v, y_prev - gap)
            ax.annotate(text, (ws, y), textcoords="offset points", xytext=(-8, -14), ha="right", fontsize=8,
                        color=colour)
            y_prev = y


def fig_training_vs_length(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Training tokens/s and memory vs sequence length (log x), one GPU, the model measured at the most lengths:
    where the linear-time architecture overtakes attention (`table4-long`). OOM points are drawn, not dropped."""
    from .figures import _line, pick_model

    pal = palette(df, envs)
    ok, oom = with_allocator_gib(rows_of(df, "train")), rows_of(df, "train", ("oom",))
    one_gpu = ok["world_size"].fillna(1) == 1
    ok, oom = ok[one_gpu], oom[oom["world_size"].fillna(1) == 1]
    lengths_per_model = ok.groupby("model")["seq_len"].nunique()
    if ok.empty or lengths_per_model.max() < 2:
        raise _skip("Training vs length: no model with one-GPU training rows at two or more lengths (run table4-long)")
    most = lengths_per_model[lengths_per_model == lengths_per_model.max()].index
    model = pick_model(ok[ok["model"].isin(most)])
    ok, oom = ok[ok["model"] == model], oom[oom["model"] == model]
    ok = ok.sort_values("batch_size").drop_duplicates(["label", "seq_len"], keep="last")
    fig, axes = new_figure(f"Training vs sequence length ({model}, one GPU, real AdamW step where the row says so)",
                           figure_meta(ok, envs), ncols=2, size=(12.0, 4.8))
    lengths = pd.concat([ok["seq_len"], oom["seq_len"]])
    for ax, value, ylabel in ((axes[0], "tokens_per_s", "throughput (tokens/s)"),
                              (axes[1], *training_memory(ok))):
        for label in pal.order(ok["label"]):
            _line(ax, pal, ok[ok["label"] == label].dropna(subset=[value]), "seq_len", value, label)
        for label, g in oom.groupby("label"):
            draw_oom(ax, sorted(g["seq_len"].unique()), label, pal)
        log2_ticks(ax, lengths)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("sequence length T (tokens)")
        ax.set_ylabel(ylabel)
    legend_outside(fig, axes, pal)
    return fig
