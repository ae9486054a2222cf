"""matplotlib figures (Agg, headless) of decode: the paper's Fig. 6a/6b/6c, the roofline and the `long` sweep;
training and capacity figures live in figures_train.py. `FIGURES` lists them all in report order.

Every builder takes (rows, envs) and returns a Figure, or raises FigureSkipped(reason) when its data is missing.
Titles carry GPU, dtype, date and run id; axes carry units; one legend outside the data names each contestant
in the colour it has in every figure (figure_style.py); OOM points are drawn and labelled.
"""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from . import paper_values as pv
from .figure_style import (Palette, draw_oom, figure_meta, legend_outside, log2_ticks, log10_y, marker, new_figure,
                           palette, rows_of, spans_decades)
from .load import GIB, with_allocator_gib, without_brief_decode


class FigureSkipped(Exception):
    """The figure's data is missing; the message says what is missing (shown in the report)."""


LONG_SUITE = "long"
MEMORY_SOURCE_NAMES = {"mem_nvml_delta_gb": "device, NVML - idle", "mem_torch_reserved_gb": "torch reserved",
                       "mem_torch_peak_gb": "torch allocated", "mem_rss_peak_gb": "process RSS"}


def pick_model(rows: pd.DataFrame) -> str:
    models = rows["model"].dropna().unique()
    if pv.PAPER_DECODE_MODEL in models:
        return pv.PAPER_DECODE_MODEL
    sizes = rows.groupby("model")["n_params"].max().fillna(0)
    return str(sizes.idxmax())


def pick_batch(rows: pd.DataFrame, target: int = pv.PAPER_DECODE_BATCH) -> int:
    """The batch nearest the paper's (8) among those with the most lengths measured."""
    n = rows.groupby("batch_size")["seq_len"].nunique()
    best = n[n == n.max()].index
    return int(min(best, key=lambda b: (abs(b - target), -b)))


def _decode(df: pd.DataFrame, long: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ok decode rows, OOM decode rows), of the `long` suite or of every other decode sweep (not the brief decode
    checks of the `prefill` suite)."""
    df = without_brief_decode(df)

    def pick(rows: pd.DataFrame) -> pd.DataFrame:
        in_long = rows["suite"] == LONG_SUITE
        return rows[in_long if long else ~in_long]
    return pick(rows_of(df, "decode")), pick(rows_of(df, "decode", ("oom",)))


def _device_memory_label(rows: pd.DataFrame) -> str:
    """The y label of a `mem_gb` axis, naming the sources its values came from (MEMORY_SOURCE_NAMES)."""
    sources = ", ".join(MEMORY_SOURCE_NAMES.get(c, c) for c in sorted(rows["mem_source"].dropna().unique()))
    return f"memory (GB; {sources})"


def _line(ax, pal: Palette, g: pd.DataFrame, x: str, y: str, label: str, mark: str = "o") -> None:
    """One contestant's line; a step with the Triton projections keeps its contestant's colour and gets square
    markers, so a report holding both variants of one contestant tells them apart."""
    g = g.groupby(x, as_index=False)[y].median().sort_values(x)
    if mark == "o" and "Triton projections" in label:
        mark = "s"
    subject = pal.is_subject(label)
    ax.plot(g[x], g[y], "-" if subject else "--", marker=mark, ms=5 if subject else 4, lw=2.2 if subject else 1.3,
            color=pal.colour(label), label=label, zorder=3 if subject else 2)


def _at_one_point(df: pd.DataFrame, value: str, name: str, long: bool = False
                  ) -> tuple[pd.DataFrame, pd.DataFrame, str, int]:
    """(ok rows with `value`, OOM rows, model, batch): the decode rows of one model and batch, as a figure of
    `value` vs context length draws them."""
    rows, oom = _decode(df, long)
    rows = rows.dropna(subset=[value, "seq_len"])
    if rows.empty:
        raise FigureSkipped(f"{name}: no ok decode rows with {value}" + (" in a `long` run" if long else ""))
    model = pick_model(rows)
    rows = rows[rows["model"] == model]
    batch = pick_batch(rows)
    return rows[rows["batch_size"] == batch], oom[(oom["model"] == model) & (oom["batch_size"] == batch)], model, batch


def _draw_by_length(ax, pal: Palette, rows: pd.DataFrame, oom: pd.DataFrame, value: str, ylabel: str,
                    log_y: bool | None = None) -> None:
    """One line per contestant of `value` vs context length; OOM points at the top."""
    for label in pal.order(rows["label"]):
        _line(ax, pal, rows[rows["label"] == label].dropna(subset=[value]), "seq_len", value, label)
    for label, g in oom.groupby("label"):
        draw_oom(ax, sorted(g["seq_len"].unique()), label, pal)
    log2_ticks(ax, pd.concat([rows["seq_len"], oom["seq_len"]]))
    if log_y if log_y is not None else spans_decades(rows[value].dropna()):
        log10_y(ax)
    ax.set_xlabel("context length T (tokens)")
    ax.set_ylabel(ylabel)


def _by_length(df: pd.DataFrame, value: str, ylabel: str, title: str, name: str, envs: dict,
               long: bool = False, log_y: bool | None = None) -> tuple[Figure, object, pd.DataFrame, Palette]:
    """One panel: `value` vs context length at one model and batch."""
    pal = palette(df, envs)
    rows, oom, model, batch = _at_one_point(df, value, name, long)
    fig, (ax,) = new_figure(f"{title} ({model}, batch {batch})", figure_meta(rows, envs))
    _draw_by_length(ax, pal, rows, oom, value, ylabel, log_y)
    return fig, ax, rows, pal


def fig_memory_vs_length(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Fig. 6a: decode memory vs context length, each panel with the model-weights line. Left, where rows have it,
    the allocator peak in GiB: what the paper plotted (torchscale's 47.05 GiB at 6.7B, batch 8, 8k; the claims judge
    it); right, the device memory in GB (NVML minus idle, at least the reserved peak): what limits a batch."""
    pal = palette(df, envs)
    rows, oom, model, batch = _at_one_point(df, "mem_gb", "Fig. 6a")
    rows = with_allocator_gib(rows)
    panels = [("mem_alloc_gib", "GiB", 1e9 / GIB, "allocator peak (GiB; torch, as the paper)")] \
        if rows["mem_alloc_gib"].notna().any() else []
    panels.append(("mem_gb", "GB", 1.0, _device_memory_label(rows)))
    fig, axes = new_figure(f"Fig. 6a: decode memory vs length ({model}, batch {batch})", figure_meta(rows, envs),
                           ncols=len(panels), size=(12.0, 4.8) if len(panels) > 1 else (9.0, 5.0))
    weights = rows["weights_gb"].median()
    for ax, (value, unit, per_gb, ylabel) in zip(axes, panels):
        _draw_by_length(ax, pal, rows, oom, value, ylabel, log_y=False)
        if pd.notna(weights):
            ax.axhline(weights * per_gb, color="black", ls=":", lw=1.2,
                       label=f"model weights ({weights * per_gb:.2f} {unit})")
        ax.set_ylim(bottom=0)
    legend_outside(fig, axes, pal)
    return fig


def fig_throughput_vs_length(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """Fig. 6b: decode throughput vs context length (log y when contestants differ by a decade or more)."""
    fig, ax, _, pal = _by_length(df, "tokens_per_s", "throughput (tokens/s)",
                                 "Fig. 6b: decode throughput vs length", "Fig. 6b", envs)
    legend_outside(fig, [ax], pal)
    return fig


def fig_latency_vs_batch(df: pd.DataFrame, envs: dict[str, dict], max_lengths: int = 4) -> Figure:
    """Fig. 6c as small multiples: one panel per context length (the longest `max_lengths`), latency (ms per
    token) vs batch size, one line per contestant; shared log y so panels compare."""
    pal = palette(df, envs)
    rows, oom = _decode(df)
    rows = rows.dropna(subset=["ms_per_token"])
    if rows.empty or rows["batch_size"].nunique() < 2:
        raise FigureSkipped("Fig. 6c: needs ok decode rows at two or more batch sizes")
    model = pick_model(rows)
    rows, oom = rows[rows["model"] == model], oom[oom["model"] == model]
    lengths = sorted(set(rows["seq_len"]) | set(oom["seq_len"]))[-max_lengths:]  # a length where all OOM counts
    fig, axes = new_figure(f"Fig. 6c: decode latency vs batch size ({model}), one panel per context length",
                           figure_meta(rows, envs), ncols=len(lengths), size=(3.1 * len(lengths) + 2.6, 4.4),
                           sharey=True)
    batches = pd.concat([rows["batch_size"], oom["batch_size"]])
    log_y = spans_decades(rows["ms_per_token"])
    for ax, T in zip(axes, lengths):
        here = rows[rows["seq_len"] == T]
        for label in pal.order(here["label"]):
            _line(ax, pal, here[here["label"] == label], "batch_size", "ms_per_token", label,
                  marker(T, lengths))
        for label, g in oom[oom["seq_len"] == T].groupby("label"):
            draw_oom(ax, sorted(g["batch_size"].unique()), label, pal)
        ax.set_title(f"T = {int(T)}", fontsize=9)
        log2_ticks(ax, batches)
        if log_y:
            log10_y(ax)
        ax.set_xlabel("batch size (sequences)")
    axes[0].set_ylabel("latency (ms per token per sequence step)")
    legend_outside(fig, axes, pal)
    return fig


def fig_roofline(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """% of the measured copy bandwidth each decoder reaches per batch size at the length nearest 8k."""
    pal = palette(df, envs)
    rows, _ = _decode(df)
    rows = rows.dropna(subset=["pct_peak_bw"])
    if rows.empty:
        raise FigureSkipped("Roofline: no decode rows with pct_peak_bw (needs a GPU run with peak_copy_gbps)")
    model = pick_model(rows)
    rows = rows[rows["model"] == model]
    T = min(rows["seq_len"].unique(), key=lambda t: abs(t - pv.PAPER_DECODE_SEQ_LEN))
    rows = rows[rows["seq_len"] == T]
    fig, (ax,) = new_figure(f"Roofline: decode bandwidth use per batch ({model}, T={int(T)})", figure_meta(rows, envs))
    for label in pal.order(rows["label"]):
        _line(ax, pal, rows[rows["label"] == label], "batch_size", "pct_peak_bw", label)
    ax.axhline(100, color="black", ls=":", lw=1, label="measured copy bandwidth (100%)")
    log2_ticks(ax, rows["batch_size"])
    ax.set_ylim(0, max(110, float(rows["pct_peak_bw"].max()) * 1.05))
    ax.set_xlabel("batch size (sequences)")
    ax.set_ylabel("achieved bandwidth (% of measured copy GB/s)")
    legend_outside(fig, [ax], pal)
    return fig


def fig_long(df: pd.DataFrame, envs: dict[str, dict]) -> Figure:
    """The `long` suite: decode throughput and memory vs context length 8k..128k (log x) for both archs."""
    pal = palette(df, envs)
    rows, oom = _decode(df, long=True)
    rows = rows.dropna(subset=["tokens_per_s"])
    if rows.empty:
        raise FigureSkipped("Long context: no ok decode rows of a `long` suite run")
    model = pick_model(rows)
    rows, oom = rows[rows["model"] == model], oom[oom["model"] == model]
    batch = pick_batch(rows, target=1)
    rows, oom = rows[rows["batch_size"] == batch], oom[oom["batch_size"] == batch]
    fig, axes = new_figure(f"Long context: decode vs length ({model}, batch {batch})", figure_meta(rows, envs),
                           ncols=2, size=(12.0, 4.8))
    lengths = pd.concat([rows["seq_len"], oom["seq_len"]])
    for ax, value, ylabel in ((axes[0], "tokens_per_s", "throughput (tokens/s)"),
                              (axes[1], "mem_gb", _device_memory_label(rows))):
        for label in pal.order(rows["label"]):
            _line(ax, pal, rows[rows["label"] == label].dropna(subset=[value]), "seq_len", value, label)
        for label, g in oom.groupby("label"):
            draw_oom(ax, sorted(g["seq_len"].unique()), label, pal)
        log2_ticks(ax, lengths)
        if spans_decades(rows[value]):
            log10_y(ax)
        elif value == "mem_gb":
            ax.set_ylim(bottom=0)
        ax.set_xlabel("context length T (tokens)")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelrotation=30)
    legend_outside(fig, axes, pal)
    return fig


from .figures_train import fig_capacity, fig_scaling, fig_table4, fig_training_vs_length  # noqa: E402

FIGURES = {
    "fig6a_memory_vs_length": fig_memory_vs_length,
    "fig6b_throughput_vs_length": fig_throughput_vs_length,
    "fig6c_latency_vs_batch": fig_latency_vs_batch,
    "roofline": fig_roofline,
    "capacity": fig_capacity,
    "table4_training_bars": fig_table4,
    "long_context": fig_long,
    "scaling": fig_scaling,
    "training_vs_length": fig_training_vs_length,
}
HEADLINE = ("fig6b_throughput_vs_length", "fig6a_memory_vs_length", "capacity")  # shown right under the summary


# figures that also draw every run of a point (`every`: load_runs(..., latest=False)), not only the latest
EVERY_RUN_FIGURES = {"scaling"}


def build_figures(df: pd.DataFrame, envs: dict[str, dict], every: pd.DataFrame | None = None
                  ) -> tuple[dict[str, Figure], dict[str, str]]:
    """All figures that have data, and a note per skipped one. `every`: the rows of every run given, repeats included,
    for the figures that show how a point moved between runs."""
    built, skipped = {}, {}
    for name, builder in FIGURES.items():
        try:
            built[name] = builder(df, envs, every) if name in EVERY_RUN_FIGURES else builder(df, envs)
        except FigureSkipped as e:
            skipped[name] = str(e)
    return built, skipped
