"""Text renderings: Markdown tables (no tabulate dependency), the claims table as Markdown and as rich, CSV."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.table import Table as RichTable

from .claims import FOLD_TOLERANCE, SPREAD_HOLDS, SPREAD_PARTLY, UPPER_PARTLY, UPPER_SLACK
from .claims_select import MEASURE_ALLOCATOR
from .load import ReportInputError
from . import paper_values as pv

VERDICT_STYLE = {"holds": "green", "partly": "yellow", "does not hold": "red", "not measured": "dim",
                 "not applicable": "dim"}
UNJUDGED = ("not measured", "not applicable")  # collapsed into one line per claim
CLAIMS_SHOWN = ["claim", "framing", "paper_value", "measured_value", "verdict", "baseline", "baseline_pct_roofline",
                "conditions", "source"]

VERDICT_RULE = (
    f"Verdict rule. x-fold claims (larger favours RetNet): holds if measured >= {FOLD_TOLERANCE} x paper and > 1; "
    f"partly if 1 < measured < {FOLD_TOLERANCE} x paper; does not hold if measured <= 1. Parity claims (a paper "
    f"ratio within {pv.PARITY_BAND:g} of 1: no advantage claimed): holds if measured >= {1 - pv.PARITY_BAND:g}, "
    f"partly if >= {FOLD_TOLERANCE} x paper. "
    "Invariance claims "
    f"(max/min over the sweep): holds if <= {SPREAD_HOLDS}, partly if <= {SPREAD_PARTLY}, else does not hold. "
    f"Overhead claim (RetNet GB / weights GB - 1): holds if <= paper + {UPPER_SLACK}, partly if <= {UPPER_PARTLY}. "
    "A missing measurement is 'not measured'; rows not under the paper's conditions (a CUDA GPU and a paper-size "
    "model) are 'not applicable' and get no verdict. Memory claims: the verdict uses the allocator peak (what the "
    "paper reported); the device-memory ratio (what limits a batch) is shown beside it. Where a speed ratio's "
    "verdict would change with either side's step time anywhere in its p10-p90 range, the measured value shows that "
    "range: the verdict lies within the run's own spread."
)


def fmt(value: object, digits: int = 3) -> str:
    """Compact cell text: floats to `digits` significant digits, missing as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{digits}g}" if abs(value) < 1e3 else f"{value:,.0f}"  # 1,320 tokens/s, not 1.32e+03
    return str(value)


def _claim_value(row: pd.Series, col: str) -> str:
    v = row[col]
    if col == "measured_value" and row.get("metric") == "memory" and row.get("kind") in pv.RATIO_KINDS \
            and isinstance(v, float) and not math.isnan(v):
        other = row.get("memory_device_x") if row.get("memory_measure") == MEASURE_ALLOCATOR else None
        used = "allocated" if row.get("memory_measure") == MEASURE_ALLOCATOR else "device"
        tail = f"; device {other:.2f}x" if isinstance(other, float) and not math.isnan(other) else ""
        return f"{v:.2f}x ({used}{tail})"
    if col == "measured_value" and row.get("kind") in pv.RATIO_KINDS and row.get("verdict_within_band") is True:
        # a verdict boundary lies inside the steps' own spread: show how far the ratio moves
        return f"{v:.2f}x (p10-p90 steps: {row['band_low']:.2f}-{row['band_high']:.2f}x)"
    if col in ("paper_value", "measured_value") and row.get("kind") in pv.RATIO_KINDS and isinstance(v, float) \
            and not math.isnan(v):
        return f"{v:.2f}x (parity)" if col == "paper_value" and row.get("kind") == "parity" else f"{v:.2f}x"
    if col in ("paper_value", "measured_value") and row.get("kind") == "upper" and isinstance(v, float) \
            and not math.isnan(v):
        return f"+{100 * v:.1f}%"
    if col == "baseline_pct_roofline" and isinstance(v, float) and not math.isnan(v):
        return f"{v:.0f}%"
    return fmt(v)


def df_to_markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table (index levels become leading columns)."""
    flat = df.reset_index() if index else df
    cols = [" ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c) for c in flat.columns]
    esc = [c.replace("|", "\\|") for c in cols]
    lines = ["| " + " | ".join(esc) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for _, row in flat.iterrows():
        lines.append("| " + " | ".join(fmt(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |")
    return "\n".join(lines)


def claims_display_frame(claims: pd.DataFrame, collapse: bool = False) -> pd.DataFrame:
    """The claims with values formatted for people (x-folds as '3.40x', overhead as '+3.0%'); collapse=True
    leaves out the unjudged rows (see collapsed_lines)."""
    if collapse:
        claims = claims[~claims["verdict"].isin(UNJUDGED)]
    out = pd.DataFrame({c: [_claim_value(r, c) for _, r in claims.iterrows()] for c in CLAIMS_SHOWN},
                       columns=CLAIMS_SHOWN)
    return out.rename(columns={"paper_value": "paper", "measured_value": "measured",
                               "baseline_pct_roofline": "baseline % of peak BW"})


def collapsed_lines(claims: pd.DataFrame) -> list[str]:
    """One line per claim for its 'not measured' / 'not applicable' framings (and one line in all when every
    claim is not applicable for the same reason, as on a CPU)."""
    rest = claims[claims["verdict"].isin(UNJUDGED)]
    if rest.empty:
        return []
    na = rest[rest["verdict"] == "not applicable"]
    lines = []
    if len(rest) == len(claims) and len(na):  # nothing judged (a CPU or tiny-model run): say why in a line or two
        reasons = list(dict.fromkeys(c.split(" (")[0] for c in na["conditions"]))
        lines = [f"No verdict from these rows: {r}." for r in reasons]
        if len(rest) > len(na):
            lines.append(f"The other {len(rest) - len(na)} claim rows are not measured (no rows for them).")
        return lines
    for claim, g in rest.groupby("claim", sort=False):
        parts = []
        for v, gv in g.groupby("verdict", sort=False):
            framings = ", ".join(str(f).split(" ")[0] for f in gv["framing"])
            reason = str(gv["conditions"].iloc[0]).split(";")[0].split(" (")[0]
            parts.append(f"{v} under framing {framings} ({reason})")
        lines.append(f"{claim}: " + "; ".join(parts))
    return lines


def render_claims_markdown(claims: pd.DataFrame) -> str:
    """The judged claims as Markdown, the unjudged ones collapsed below, then the verdict rule."""
    lines = collapsed_lines(claims)
    text = df_to_markdown(claims_display_frame(claims, collapse=True), index=False)
    if lines:
        text += "\n\nNot judged:\n\n" + "\n".join(f"- {line}" for line in lines)
    return text + "\n\n" + VERDICT_RULE + "\n"


def claims_rich_table(claims: pd.DataFrame) -> RichTable:
    """The judged claims as a rich Table (verdicts coloured), the unjudged ones collapsed into the caption;
    the CLI prints it."""
    shown = claims_display_frame(claims, collapse=True).drop(columns=["source"])
    caption = "\n".join(["Not judged: " + line for line in collapsed_lines(claims)] + [VERDICT_RULE])
    table = RichTable(title="RetNet paper claims vs this run", show_lines=True, caption=caption)
    for col in shown.columns:
        table.add_column(col, overflow="fold", max_width=48 if col == "conditions" else None)
    for _, row in shown.iterrows():
        style = VERDICT_STYLE.get(row["verdict"], "")
        table.add_row(*[f"[{style}]{v}[/]" if c == "verdict" and style else v for c, v in row.items()])
    return table


def write_claims(claims: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """claims.csv (raw values, every row) and claims.md (formatted) into out_dir. An unwritable out_dir raises
    ReportInputError (one line; the CLI exits 2)."""
    out_dir = Path(out_dir)
    paths = {"claims_csv": out_dir / "claims.csv", "claims_md": out_dir / "claims.md"}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        claims.to_csv(paths["claims_csv"], index=False)
        paths["claims_md"].write_text("# Paper claims\n\n" + render_claims_markdown(claims), encoding="utf-8")
    except OSError as e:
        raise ReportInputError(f"cannot write claims to {out_dir}: {e.strerror or type(e).__name__}") from None
    return paths
