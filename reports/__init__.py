"""Report layer: result files (rows.jsonl, env.json, table.csv) -> tables, figures, claims, report.md/.html.

Never imports torch, a model, or retnet_bench.suites (docs/CONTRACTS.md).
"""
from .claims import FRAMINGS, VERDICTS, claims_table, verdict
from .load import ReportInputError, load_runs
from .render import claims_rich_table, render_claims_markdown, write_claims
from .report import write_report

__all__ = [
    "FRAMINGS", "VERDICTS", "ReportInputError", "claims_rich_table", "claims_table", "load_runs",
    "render_claims_markdown", "verdict", "write_claims", "write_report",
]
