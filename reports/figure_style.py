"""How every figure looks: one colour per contestant (the same in every figure), a marker per context length,
titles that wrap instead of clipping, legends outside the data, OOM points drawn and labelled, >= 150 dpi.

Colours come from the runs' contestants tables (role, source, pipeline) and their order, never from names: our
own candidates (the subject) strong reds; official candidates muted warm tones; the paper's pipeline greys (the
official code first in the table gets the dark one); our baselines blues, then indigo and purple families in table
order, a shade per kernel (dark and light alternating); a GQA variant a teal per kernel, a RetNet state-precision
variant a dark red. A contestant no table
or row describes gets a muted colour from a stable hash of its label.
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
from retnet_bench.suites.contract import FORWARD_BACKWARD_ONLY  # noqa: E402

from .contestants import PIPELINE_PAPER, SOURCE_OURS, Contestant, Roster, roster_of  # noqa: E402
from .load import contestant_labels, ok_rows, plain_training, with_memory  # noqa: E402

DPI = 160
SUBJECT_COLOUR = "#c0392b"
# Colour families, chosen by what the runs' contestants tables say (contestants.Roster), never by name; the shade
# within a family is the contestant's rank among the family members that share a phase with it, in table order.
FAMILIES = {
    "ours candidate": (SUBJECT_COLOUR, "#e67e22", "#922b21"),          # the subject: red, then orange, dark red
    "official candidate": ("#e8a49c", "#d9b08c", "#c9a27e", "#e6c07b"),  # official RetNet peers: muted warm tones
    "paper pipeline": ("#555555", "#9a9a9a", "#777777"),                # the paper's cat-grown cache: greys
    "official baseline": ("#8c6d5a", "#a08c6d", "#6d5a4a"),              # other official baselines: browns
}
# our own baselines: a family per contestant (blues first), a shade per kernel (the contestant's kernels, most rows
# first; our own candidates likewise, within their reds);
# neighbouring shades alternate dark and light, so that two kernels of one contestant never look alike
BASELINE_FAMILIES = (("#2c5d9e", "#86b0e6", "#14305a", "#5b8ad0", "#a9c8ef"),
                     ("#4b4f9e", "#7b80c8", "#a3a7e0", "#2e3170"),
                     ("#7d5a94", "#b39bc8", "#5e3f75", "#d0bfe0"))
GQA_SHADES = ("#2a9d8f", "#0b5345", "#76d7c4")  # grouped-query variants: teals, a shade per kernel as above
STATE_VARIANT_COLOUR = "#641e16"  # a RetNet state kept in another precision than fp32: a dark subject red (the
# official RetNet peers are the light warm tones)
_MUTED = ("#8c8c5a", "#5a8c7a", "#8c6d5a", "#6d7a8c", "#a07aa0", "#7a8c5a", "#a08c6d", "#5a7a8c")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
OOM_MARKER = "x"


def parse_label(label: str) -> tuple[str, str]:
    """(impl, kernel) of a `contestant()` label ('' when it names no kernel)."""
    head = label.split(",")[0]
    impl, _, rest = head.partition(" (")
    return impl, rest[:-1] if rest.endswith(")") else ""


def family(c: Contestant | None) -> str:
    """The colour family of a contestant, from its role, source and pipeline."""
    if c is None:
        return "unknown"
    if c.role == "candidate":
        return "ours candidate" if c.source == SOURCE_OURS else "official candidate"
    if c.role == "baseline":
        if c.pipeline == PIPELINE_PAPER:
            return "paper pipeline"
        return "ours baseline" if c.source == SOURCE_OURS else "official baseline"
    return "unknown"


class Palette:
    """Colours and legend order for one report: built from all its rows, so a contestant has the same colour in
    every figure. Unknown contestants get a muted colour from a stable hash of their label."""

    def __init__(self, roster: Roster, kernels: dict[str, list[str]]):
        self.roster, self.kernels = roster, kernels

    def _family(self, label: str) -> tuple[str, Contestant | None]:
        c = self.roster.get(parse_label(label)[0])
        return family(c), c

    def _kernel_index(self, label: str) -> int:
        """A label's kernel's place among its contestant's kernels (most rows first; 0 if unknown)."""
        impl, kernel = parse_label(label)
        kernels = self.kernels.get(impl, [])
        return kernels.index(kernel) if kernel in kernels else 0

    def _kernel_shade(self, label: str, shades: tuple[str, ...]) -> str:
        """The shade of a label's kernel among its contestant's kernels, so kernels of one contestant differ."""
        return shades[self._kernel_index(label) % len(shades)]

    def colour(self, label: str) -> str:
        if "KV heads" in label:
            return self._kernel_shade(label, GQA_SHADES)
        if label.endswith(" state"):
            return STATE_VARIANT_COLOUR
        fam, c = self._family(label)
        if c is None or fam == "unknown":
            return _MUTED[zlib.crc32(label.encode()) % len(_MUTED)]
        rank = self.roster.rank_in_group(c.name, family)
        if fam == "ours baseline":
            return self._kernel_shade(label, BASELINE_FAMILIES[rank % len(BASELINE_FAMILIES)])
        shades = FAMILIES[fam]
        if fam == "ours candidate":  # a contestant's kernels differ too (fla and fla-graphs in one training figure)
            rank += self._kernel_index(label)
        return shades[rank % len(shades)]

    def is_subject(self, label: str) -> bool:
        """Our own candidate (drawn thick, listed first); its state-precision variants are not the subject."""
        return self._family(label)[0] == "ours candidate" and not label.endswith(" state")

    def order(self, labels) -> list[str]:
        """Legend order: the subject first, then other candidates, then baselines, each in table order."""
        def key(s: str):
            fam, c = self._family(s)
            group = 0 if self.is_subject(s) else 1 if c is not None and c.role == "candidate" else 2
            return group, self.roster.index(parse_label(s)[0]), s
        return sorted(set(labels), key=key)


def palette(df: pd.DataFrame, envs: dict[str, dict] | None) -> Palette:
    """The palette of a report's rows: the runs' contestants tables (`roster_of`) and each impl's kernels."""
    kernels: dict[str, list[str]] = {}
    if len(df):
        for impl, g in df.groupby("impl"):  # most rows first: a contestant's main kernel gets its first shade
            counts = g["kernel"].dropna().astype(str).value_counts()
            kernels[str(impl)] = sorted(counts.index, key=lambda k: (-counts[k], k))
    return Palette(roster_of(df, envs), kernels)


def marker(value: float, values: list[float]) -> str:
    """A marker per context length (or batch): the same length gets the same marker within a figure."""
    return MARKERS[sorted(values).index(value) % len(MARKERS)]


def rows_of(df: pd.DataFrame, phase: str, statuses: tuple[str, ...] = ("ok",), plain: bool = True) -> pd.DataFrame:
    """Rows of one phase with the given statuses, `mem_gb` and a `label` per contestant (training: plain steps only,
    no tensor-parallel, checkpointed or compiled rows, unless `plain` is False; the Table 4 table lists those)."""
    df = plain_training(df) if plain else df
    rows = df[(df["phase"] == phase) & df["status"].isin(statuses)] if statuses != ("ok",) else ok_rows(df, phase)
    rows = with_memory(rows)
    return rows.assign(label=contestant_labels(rows))


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


def draw_oom(ax, xs, label: str, pal: Palette, text: str = "OOM") -> None:
    """OOM (or over-budget) points: an 'x' in the contestant's colour at the top of the axes, labelled."""
    trans = ax.get_xaxis_transform()  # x in data, y in axes fraction
    ax.set_ymargin(0.15)  # headroom: the OOM row at the top stays clear of the data
    for x in xs:
        ax.plot([x], [0.96], OOM_MARKER, color=pal.colour(label), ms=8, mew=2, transform=trans, label="_oom",
                clip_on=False)
        ax.annotate(text, (x, 0.96), xycoords=trans, xytext=(0, -11), textcoords="offset points", fontsize=6,
                    ha="center", color=pal.colour(label))


# the legend entry of a tick that marks a contestant's fastest engine setting where it beats the plain bar
FASTEST_SETTING = "fastest engine setting, where faster than the plain step or where that was OOM (Table 4 names it)"
FWD_BWD_LABEL = f"dotted: {FORWARD_BACKWARD_ONLY}"  # the legend entry of a bar that timed no optimizer step


def legend_outside(fig: Figure, axes, pal: Palette, title: str = "contestant (impl (kernel))") -> None:
    """One legend for the figure, right of the axes, in the subject-first order; OOM points are explained."""
    handles: dict[str, object] = {}
    for ax in np.atleast_1d(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    labels = [lab for lab in pal.order([k for k in handles if not k.startswith(("T=", "model weights", "ideal",
                                                                              "measured copy", FASTEST_SETTING,
                                                                              FWD_BWD_LABEL, "every run"))])]
    extra = [k for k in handles if k not in labels]
    # below the axes: outside the data, and clear of the (wrapped) title whatever its length; as many columns as
    # the longest label lets fit in the figure's width (a wide legend is cut at both edges, not wrapped)
    fig.legend([handles[k] for k in labels + extra], labels + extra, loc="outside lower center", fontsize=7,
               title=title, title_fontsize=7, frameon=False, ncols=_legend_columns(fig, labels + extra))


def _legend_columns(fig: Figure, labels: list[str], fontsize: float = 7.0, at_most: int = 4) -> int:
    # a column: the handle and padding (~40 pt) and the longest label at ~0.6 em per character (DejaVu Sans)
    column_pt = 40 + 0.6 * fontsize * max((len(lab) for lab in labels), default=1)
    return max(1, min(at_most, len(labels), int(fig.get_figwidth() * 72 // column_pt)))


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
