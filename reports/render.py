"""Text renderings: Markdown tables (no tabulate dependency), the claims table as Markdown and as rich, CSV."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.table import Table as RichTable

from .claims import FOLD_TOLERANCE, SPREAD_HOLDS, SPREAD_PARTLY, UPPER_PARTLY, UPPER_SLACK

VERDICT_STYLE = {"holds": "green", "partly": "yellow", "does not hold": "red", "not measured": "dim"}
CLAIMS_SHOWN = ["claim", "framing", "paper_value", "measured_value", "verdict", "baseline", "baseline_pct_roofline",
                "conditions", "source"]

VERDICT_RULE = (
    f"Verdict rule. x-fold claims (larger favours RetNet): holds if measured >= {FOLD_TOLERANCE} x paper and > 1; "
    f"partly if 1 < measured < {FOLD_TOLERANCE} x paper; does not hold if measured <= 1. Invariance claims "
    f"(max/min over the sweep): holds if <= {SPREAD_HOLDS}, partly if <= {SPREAD_PARTLY}, else does not hold. "
    f"Overhead claim (RetNet GB / weights GB - 1): holds if <= paper + {UPPER_SLACK}, partly if <= {UPPER_PARTLY}. "
    "A missing measurement is 'not measured'."
)


def fmt(value: object, digits: int = 3) -> str:
    """Compact cell text: floats to `digits` significant digits, missing as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _claim_value(row: pd.Series, col: str) -> str:
    v = row[col]
    if col in ("paper_value", "measured_value") and row.get("kind") == "fold" and isinstance(v, float) \
            and not math.isnan(v):
        return f"{v:.2f}x"
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


def claims_display_frame(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims with values formatted for people (x-folds as '3.40x', overhead as '+3.0%')."""
    out = pd.DataFrame({c: [_claim_value(r, c) for _, r in claims.iterrows()] for c in CLAIMS_SHOWN})
    return out.rename(columns={"paper_value": "paper", "measured_value": "measured",
                               "baseline_pct_roofline": "baseline % of peak BW"})


def render_claims_markdown(claims: pd.DataFrame) -> str:
    """The claims table as Markdown, followed by the verdict rule."""
    return df_to_markdown(claims_display_frame(claims), index=False) + "\n\n" + VERDICT_RULE + "\n"


def claims_rich_table(claims: pd.DataFrame) -> RichTable:
    """The claims table as a rich Table (verdicts coloured); the CLI prints it."""
    shown = claims_display_frame(claims).drop(columns=["source"])
    table = RichTable(title="RetNet paper claims vs this run", show_lines=True, caption=VERDICT_RULE)
    for col in shown.columns:
        table.add_column(col, overflow="fold", max_width=48 if col == "conditions" else None)
    for _, row in shown.iterrows():
        style = VERDICT_STYLE.get(row["verdict"], "")
        table.add_row(*[f"[{style}]{v}[/]" if c == "verdict" and style else v for c, v in row.items()])
    return table


def write_claims(claims: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """claims.csv (raw values) and claims.md (formatted) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"claims_csv": out_dir / "claims.csv", "claims_md": out_dir / "claims.md"}
    claims.to_csv(paths["claims_csv"], index=False)
    paths["claims_md"].write_text("# Paper claims\n\n" + render_claims_markdown(claims), encoding="utf-8")
    return paths
