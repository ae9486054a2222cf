"""How every figure looks: one colour per contestant (the same in every figure), a marker per context length,
titles that wrap instead of clipping, legends outside the data, OOM points drawn and labelled, >= 150 dpi.

RetNet (the subject) is a strong red; RetNet peers are muted reds; baselines are blues (our static decoder),
greys (the paper's cat-grown cache, torchscale) and muted purples (Hugging Face); a GQA baseline is teal.
Unknown contestants get a muted colour from a stable hash of their label, so a colour never depends on which
other contestants a run happens to hold.
"""
from __future__ import annotations

import textwrap
import zlib

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from .load import impl_label, ok_rows, with_memory  # noqa: E402

DPI = 160
SUBJECT_COLOUR = "#c0392b"
_COLOURS = {  # by impl, then impl (kernel)
    "retnet-recurrent": SUBJECT_COLOUR, "retnet-chunkwise": SUBJECT_COLOUR, "retnet-parallel": "#e07b6f",
    "retention-recurrent": SUBJECT_COLOUR, "retention-chunkwise": SUBJECT_COLOUR, "retention-parallel": "#e07b6f",
    "torchscale-retnet": "#e8a49c", "fla-retnet": "#d9b08c",
    "static": "#2c5d9e", "static (flash-attn-4)": "#5b8ad0", "static (flash-attn)": "#7aa3d8",
    "paper-like": "#555555", "torchscale-transformer": "#9a9a9a",
    "hf": "#7d5a94", "hf-static": "#b39bc8",
    "transformer (sdpa-math)": "#9a9a9a", "transformer (bmm-softmax)": "#9a9a9a", "transformer (sdpa-cudnn)": "#2c5d9e",
    "transformer (sdpa-flash)": "#5b8ad0", "transformer (flash-attn-4)": "#86b0e6", "transformer (flash-attn)": "#86b0e6",
    "attention (sdpa-cudnn)": "#2c5d9e", "attention (sdpa-flash)": "#5b8ad0", "attention (sdpa-math)": "#9a9a9a",
    "attention (sdpa-efficient)": "#7d5a94",
}
GQA_COLOUR = "#2a9d8f"
_MUTED = ("#8c8c5a", "#5a8c7a", "#8c6d5a", "#6d7a8c", "#a07aa0", "#7a8c5a", "#a08c6d", "#5a7a8c")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
OOM_MARKER = "x"


def contestant(impl: object, kernel: object, n_kv_heads: object = None, state_dtype: object = None) -> str:
    """The label a contestant has in every legend: 'impl (kernel)', plus ', N KV heads' for a GQA/MQA variant
    and ', <dtype> state' for a RetNet state kept in another precision than fp32."""
    label = impl_label(impl, kernel)
    if n_kv_heads is not None and pd.notna(n_kv_heads) and float(n_kv_heads) <= 8:
        label += f", {int(float(n_kv_heads))} KV heads"
    if isinstance(state_dtype, str) and state_dtype not in ("", "float32"):
        label += f", {state_dtype} state"
    return label


def colour(label: str) -> str:
    if "KV heads" in label:
        return GQA_COLOUR
    if label.endswith(" state"):
        return "#f1948a"  # a RetNet state-precision variant: a lighter subject red
    impl = label.split(" (")[0]
    return _COLOURS.get(label.split(",")[0], _COLOURS.get(impl, _MUTED[zlib.crc32(label.encode()) % len(_MUTED)]))


def is_subject(label: str) -> bool:
    return colour(label) == SUBJECT_COLOUR


def marker(value: float, values: list[float]) -> str:
    """A marker per context length (or batch): the same length gets the same marker within a figure."""
    return MARKERS[sorted(values).index(value) % len(MARKERS)]


def rows_of(df: pd.DataFrame, phase: str, statuses: tuple[str, ...] = ("ok",)) -> pd.DataFrame:
    """Rows of one phase with the given statuses, `mem_gb` and a `label` per contestant."""
    rows = df[(df["phase"] == phase) & df["status"].isin(statuses)] if statuses != ("ok",) else ok_rows(df, phase)
    rows = with_memory(rows)
    return rows.assign(label=[contestant(i, k, n, s) for i, k, n, s in
                              zip(rows["impl"], rows["kernel"], rows["n_kv_heads"], rows["state_dtype"])])


def order(labels) -> list[str]:
    """Legend order: the subject first, then other candidates, then baselines, each alphabetically."""
    return sorted(set(labels), key=lambda s: (not is_subject(s), not s.startswith(("retnet", "torchscale-retnet",
                                                                                    "fla-retnet", "retention")), s))


def new_figure(title: str, meta: str, ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (9.0, 5.0),
               **subplot_kw) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure whose suptitle (title + wrapped run meta line) never clips."""
    fig = Figure(figsize=size, layout="constrained", dpi=DPI)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)).ravel()
    wrapped = "\n".join(textwrap.wrap(meta, int(size[0] * 11)))
    fig.suptitle(f"{title}\n{wrapped}", fontsize=9)
    for ax in axes:
        ax.grid(True, alpha=0.3, which="major")
    return fig, axes


def log2_ticks(ax, values, axis: str = "x") -> None:
    """Log-2 axis with a tick at each measured value, printed as an integer (8192, not 2^13 or 8.0e3)."""
    ticks = sorted({int(v) for v in values if pd.notna(v)})
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    a.set_major_locator(FixedLocator(ticks))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v)):d}" if v >= 1 else f"{v:g}"))
    a.set_minor_locator(NullLocator())


def log10_y(ax) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))


def spans_decades(values) -> bool:
    v = pd.Series(values).dropna()
    v = v[v > 0]
    return len(v) > 1 and v.max() / v.min() >= 10


def draw_oom(ax, xs, label: str, text: str = "OOM") -> None:
    """OOM (or over-budget) points: an 'x' in the contestant's colour at the top of the axes, labelled."""
    trans = ax.get_xaxis_transform()  # x in data, y in axes fraction
    ax.set_ymargin(0.15)  # headroom: the OOM row at the top stays clear of the data
    for x in xs:
        ax.plot([x], [0.96], OOM_MARKER, color=colour(label), ms=8, mew=2, transform=trans, label="_oom",
                clip_on=False)
        ax.annotate(text, (x, 0.96), xycoords=trans, xytext=(0, -11), textcoords="offset points", fontsize=6,
                    ha="center", color=colour(label))


def legend_outside(fig: Figure, axes, title: str = "contestant (impl (kernel))") -> None:
    """One legend for the figure, right of the axes, in the subject-first order; OOM points are explained."""
    handles: dict[str, object] = {}
    for ax in np.atleast_1d(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    labels = [lab for lab in order([k for k in handles if not k.startswith(("T=", "model weights", "ideal",
                                                                              "measured copy"))])]
    extra = [k for k in handles if k not in labels]
    # below the axes: outside the data, and clear of the (wrapped) title whatever its length
    fig.legend([handles[k] for k in labels + extra], labels + extra, loc="outside lower center", fontsize=7,
               title=title, title_fontsize=7, frameon=False, ncols=min(4, len(labels + extra)))


def figure_meta(rows: pd.DataFrame, envs: dict[str, dict]) -> str:
    """One compact line for a figure title: GPU(s) · dtype(s) · date(s) · run id(s), each value once."""
    run_ids = sorted(rows["run_id"].dropna().astype(str).unique()) if len(rows) else sorted(envs)

    def once(values) -> str:
        return ", ".join(dict.fromkeys(v for v in values if v)) or "?"
    gpus = once(envs.get(r, {}).get("gpu_name") or _first(rows, r, "gpu_name") or _first(rows, r, "device")
                or "cpu" for r in run_ids)
    dtypes = once(sorted(rows["dtype"].dropna().astype(str).unique()) if len(rows) else [])
    dates = once(str(envs.get(r, {}).get("created") or _first(rows, r, "timestamp") or "")[:10] for r in run_ids)
    return f"{gpus} · {dtypes} · {dates} · run{'s' if len(run_ids) > 1 else ''} {', '.join(run_ids)}"


def _first(rows: pd.DataFrame, run_id: str, col: str) -> str | None:
    vals = rows.loc[rows["run_id"] == run_id, col].dropna() if len(rows) else []
    return str(vals.iloc[0]) if len(vals) else None
