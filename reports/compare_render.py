"""Renderings of a :class:`~retnet_bench.reports.compare.CompareResult`: rich table, JSON, GitHub.

Every format lists what regressed first (point, metric, base, head, change), so a failing CI job says why
without scrolling: rich puts a "Regressed" table under the verdict line, JSON a ``regressions`` list at the top,
and ``render_github`` one ``::error`` annotation per regression before the files it wrote. The text helpers of
the comparison live here too: ``parse_threshold`` (the CLI's "5%") and the no-common-points message.

Dashboards in your own GPU CI (github-action-benchmark, tools ``customBiggerIsBetter`` /
``customSmallerIsBetter``; each takes a JSON list of ``{name, unit, value, range?, extra?}``): write one file
per direction with :func:`write_github` (or :func:`to_github`), gate on ``compare``'s exit code, and let the
action only store and chart the head run, since its own alert knows nothing of p10-p90 noise::

    - run: retnet-bench compare results/baseline results/$RUN --format github --out bench/  # exit 1 fails
    - uses: benchmark-action/github-action-benchmark@v1
      if: always()
      with: {name: retnet-bench throughput, tool: customBiggerIsBetter,
             output-file-path: bench/benchmark-bigger.json, fail-on-alert: false, auto-push: true,
             github-token: "${{ secrets.GITHUB_TOKEN }}"}
    - uses: benchmark-action/github-action-benchmark@v1
      if: always()
      with: {name: retnet-bench latency and memory, tool: customSmallerIsBetter,
             output-file-path: bench/benchmark-smaller.json, fail-on-alert: false, auto-push: true,
             github-token: "${{ secrets.GITHUB_TOKEN }}"}

The two steps need different ``name`` inputs: the action keys its stored history by name. Run the GPU job on
one fixed machine type; ``compare`` refuses runs from different GPUs unless told ``allow_mismatch``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .compare import (_STATUS_STYLE, GITHUB_TOOLS, MATCH_COLUMNS, METRICS, VARIANT_COLUMNS, _PASS_COLUMNS,
                      CompareInputError, CompareResult)

REGRESSION_COLUMNS = ["point", "metric", "unit", "base", "head", "change_pct"]


def parse_threshold(text: str | float) -> float:
    """CLI helper: ``"5%"`` or ``"0.05"`` -> 0.05. A bare number >= 1 is refused as ambiguous."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise CompareInputError(f"threshold {text!r}: write a percentage like 5% or a fraction like 0.05") from None
    if not raw.endswith("%") and value >= 1:
        raise CompareInputError(f"threshold {text!r} is ambiguous: write {raw}% or {value / 100:g}")
    if not (math.isfinite(value) and value >= 0):
        raise CompareInputError(f"threshold {text!r} must be >= 0")
    return value


# The columns a no-common-points message names first (what usually differs: another suite, dtype or model)
_TELLING_COLUMNS = ("suite", "dtype", "model", "phase", "impl", "kernel")


def _key_differences(base_rows: pd.DataFrame, head_rows: pd.DataFrame, shown: int = 3) -> str:
    """'suite fig6 / table4, dtype bfloat16 / float32': up to `shown` key columns whose values differ between the
    runs, each with up to `shown` values a side."""
    def values(rows: pd.DataFrame, col: str) -> list[str]:
        present = {v for v in rows[col] if v is not None and not pd.isna(v)}
        try:
            ordered = sorted(present)
        except TypeError:  # mixed types in an object column
            ordered = sorted(present, key=str)
        return [str(v) for v in ordered[:shown]] + (["..."] if len(ordered) > shown else [])

    columns = [*_TELLING_COLUMNS, *(c for c in MATCH_COLUMNS if c not in _TELLING_COLUMNS)]
    parts = [f"{col} {','.join(values(base_rows, col)) or '-'} / {','.join(values(head_rows, col)) or '-'}"
             for col in columns if values(base_rows, col) != values(head_rows, col)]
    if not parts:
        return f"no point matches on all of {', '.join(MATCH_COLUMNS)}"
    return ", ".join(parts[:shown]) + (", ..." if len(parts) > shown else "")


# The key columns that are settings of a run (not a sweep's points, like batch and length): the ones worth naming
_SETTING_COLUMNS = ("dtype", "kernel", "chunk_size", "capacity_budget_gib", *VARIANT_COLUMNS)


def unmatched_reasons(result: CompareResult) -> list[str]:
    """Why points went unmatched, where one key column explains it: 'decode_gemm torch (base) / triton (head): 6
    points'. A default that changed between the runs (decode_gemm's, session 9) or another budget makes the same
    measurement a different point; this names the column, so the user can run one side again with it set."""
    missing, new = result.missing, result.new
    if missing.empty or new.empty:
        return []
    reasons = []
    for col in _SETTING_COLUMNS:
        others = [c for c in MATCH_COLUMNS if c != col]
        pairs = missing[others + [col]].merge(new[others + [col]], on=others, suffixes=("_base", "_head"))
        pairs = pairs[[not _same(a, b) for a, b in zip(pairs[f"{col}_base"], pairs[f"{col}_head"])]]
        if len(pairs):
            seen = pairs.drop_duplicates([f"{col}_base", f"{col}_head"])
            values = "; ".join(f"{_fmt(a)} (base) / {_fmt(b)} (head)"
                               for a, b in zip(seen[f"{col}_base"], seen[f"{col}_head"]))
            many = len(pairs) > 1
            reasons.append(f"{col} {values}: {len(pairs)} point{'s' if many else ''} differ{'' if many else 's'} "
                           "only there")
    return reasons


def _same(a: object, b: object) -> bool:
    return (a is None or pd.isna(a)) and (b is None or pd.isna(b)) or a == b


def _fmt(value: object) -> str:
    if value is None or pd.isna(value):
        return "-"
    if isinstance(value, str):
        return value
    v = float(value)
    if math.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return f"{v:,.0f}" if abs(v) >= 1e6 and v.is_integer() else f"{v:.4g}"


def regressions_frame(result: CompareResult) -> pd.DataFrame:
    """What fails the gate, one row each: metric regressions, then points that were ok and now fail (metric
    'status', base 'ok', head 'oom'/'error')."""
    reg = result.regressions
    metric_rows = pd.DataFrame({"point": reg["point"], "metric": reg["metric"], "unit": reg["unit"],
                                "base": reg["value_base"], "head": reg["value_head"],
                                "change_pct": reg["change_pct"]})
    broken = result.broken
    status_rows = pd.DataFrame({"point": broken["point"], "metric": "status", "unit": "",
                                "base": broken["status_base"], "head": broken["status_head"],
                                "change_pct": float("nan")})
    frames = [f for f in (metric_rows, status_rows) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=REGRESSION_COLUMNS)
    return pd.concat(frames, ignore_index=True)[REGRESSION_COLUMNS]


def regression_lines(result: CompareResult) -> list[str]:
    """One plain line per regression: 'POINT METRIC: BASE -> HEAD UNIT (CHANGE)'."""
    lines = []
    for _, r in regressions_frame(result).iterrows():
        change = "" if pd.isna(r["change_pct"]) else f" ({r['change_pct']:+.1f}%)"
        unit = f" {r['unit']}" if r["unit"] else ""
        lines.append(f"{r['point']} {r['metric']}: {_fmt(r['base'])} -> {_fmt(r['head'])}{unit}{change}")
    return lines


def _summary(result: CompareResult) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
    broken = f", {len(result.broken)} ok -> failing" if len(result.broken) else ""
    return f"{result.base} -> {result.head}: {counts or 'no point ok in both runs'}{broken}"


def render_rich(result: CompareResult) -> Group:
    """Rich renderables (print with ``rich.console.Console().print``): verdict, what regressed, all points,
    missing/new, not compared. Deterministic columns are shown only where they changed."""
    verdict = Text("REGRESSION" if result.regressed else "no regression",
                   style="bold red" if result.regressed else "bold green")
    parts: list[Any] = [Text.assemble(verdict, f"  {_summary(result)}")]
    parts += [Text(f"warning: {w}", style="yellow") for w in result.warnings]
    regressions = regressions_frame(result)
    if len(regressions):
        reg = Table(title="Regressed", title_style="bold red")
        for col in ("point", "metric", "base", "head", "change"):
            reg.add_column(col, justify="right" if col in ("base", "head", "change") else "left", overflow="fold")
        for _, r in regressions.iterrows():
            unit = f" ({r['unit']})" if r["unit"] else ""
            reg.add_row(r["point"], f"{r['metric']}{unit}", _fmt(r["base"]), _fmt(r["head"]),
                        "-" if pd.isna(r["change_pct"]) else f"{r['change_pct']:+.1f}%")
        parts.append(reg)

    table = Table(title="Compared points", show_lines=False)
    for col in ("point", "metric", "base", "head", "change", "base p10-p90", "head p10-p90", "status"):
        table.add_column(col, justify="right" if col in ("base", "head", "change") else "left")
    shown = result.points[(result.points["direction"] != "exact") | (result.points["status"] != "ok")]
    for _, r in shown.iterrows():
        rng = {s: "-" if pd.isna(r[f"lo_{s}"]) else f"{_fmt(r[f'lo_{s}'])}-{_fmt(r[f'hi_{s}'])}"
               for s in ("base", "head")}
        change = "-" if pd.isna(r["change_pct"]) else f"{r['change_pct']:+.1f}%"
        table.add_row(r["point"], f"{r['metric']} ({r['unit']})", _fmt(r["value_base"]), _fmt(r["value_head"]),
                      change, rng["base"], rng["head"], Text(r["status"], style=_STATUS_STYLE[r["status"]]))
    parts.append(table)
    if (result.points["status"] == "not comparable").any():
        parts.append(Text("not comparable: too few repeats or no p10-p90 spread on a side, and the change is "
                          "within the wider threshold such points get", style="cyan"))

    if len(result.missing) or len(result.new):
        unmatched = Table(title="Unmatched points")
        for col in ("point", "only in", "status"):
            unmatched.add_column(col)
        for frame, where in ((result.missing, "base"), (result.new, "head")):
            for point, status in zip(frame["point"], frame["status"]):
                unmatched.add_row(point, where, str(status))
        parts.append(unmatched)
        for reason in unmatched_reasons(result):
            parts.append(Text(f"unmatched: {reason}; run one side again with that setting to compare them",
                              style="yellow"))
    if len(result.not_compared):
        skipped = Table(title="Not compared (status not ok)")
        skipped.add_column("point")
        skipped.add_column("reason")
        for _, r in result.not_compared.iterrows():
            skipped.add_row(r["point"], r["reason"])
        parts.append(skipped)
    return Group(*parts)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))  # NaN and +-inf become null


def to_json(result: CompareResult) -> str:
    """The whole comparison as one JSON document (non-finite numbers as null); ``regressions`` come first."""
    points = result.points.drop(columns=["lo_base", "hi_base", "lo_head", "hi_head"]).assign(
        base_p10_p90=result.points[["lo_base", "hi_base"]].values.tolist(),
        head_p10_p90=result.points[["lo_head", "hi_head"]].values.tolist())
    document = {
        "regressed": result.regressed, "exit_code": result.exit_code,
        "regressions": _records(regressions_frame(result)),
        "base": str(result.base), "head": str(result.head), "counts": result.counts(), "warnings": result.warnings,
        "points": _records(points), "missing": _records(result.missing), "new": _records(result.new),
        "unmatched_reasons": unmatched_reasons(result),
        "not_compared": _records(result.not_compared),
    }
    return json.dumps(document, indent=2)


def to_github(result: CompareResult, direction: Literal["bigger", "smaller"]) -> str:
    """github-action-benchmark input for tool ``customBiggerIsBetter`` ("bigger") or ``customSmallerIsBetter``.

    A JSON list of ``{"name", "unit", "value", "range", "extra"}``, one per (ok head point, metric) whose better
    direction matches: the head run's values (matched and new points), since the action keeps its own history.
    Deterministic columns are left out. See this module's docstring for wiring it into CI.
    """
    if direction not in GITHUB_TOOLS:
        raise ValueError(f"direction must be 'bigger' or 'smaller', got {direction!r}")
    wanted = "higher" if direction == "bigger" else "lower"
    entries = []
    for _, r in result.head_metrics.iterrows():
        metric = METRICS[r["metric"]]
        if metric.direction != wanted:
            continue
        entry = {"name": f"{r['point']}/{r['metric']}", "unit": metric.unit, "value": float(r["value"])}
        if pd.notna(r["lo"]) and pd.notna(r["hi"]):
            entry["range"] = f"{_fmt(r['lo'])} to {_fmt(r['hi'])} (p10-p90)"
        entry["extra"] = "\n".join(f"{c}: {r[c]}" for c in _PASS_COLUMNS if pd.notna(r[c]))
        entries.append(entry)
    return json.dumps(entries, indent=2)


def _markdown_summary(result: CompareResult) -> str:
    head = f"## retnet-bench compare: {'REGRESSION' if result.regressed else 'no regression'}\n\n{_summary(result)}\n"
    lines = regression_lines(result)
    return head + ("\n" + "\n".join(f"- {line}" for line in lines) + "\n" if lines else "")


def write_github(result: CompareResult, directory: Path) -> dict[str, Path]:
    """Write ``benchmark-bigger.json``, ``benchmark-smaller.json`` and ``summary.md`` (regressions first; append it
    to ``$GITHUB_STEP_SUMMARY``) into ``directory``; returns tool (or 'summary') -> path. An unwritable directory
    raises CompareInputError (the CLI's exit 2: a CI job must not read an I/O error as a regression)."""
    directory = Path(directory)
    written = {}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for direction, tool in GITHUB_TOOLS.items():
            path = directory / f"benchmark-{direction}.json"
            path.write_text(to_github(result, direction) + "\n", encoding="utf-8")  # type: ignore[arg-type]
            written[tool] = path
        written["summary"] = directory / "summary.md"
        written["summary"].write_text(_markdown_summary(result), encoding="utf-8")
    except OSError as e:
        raise CompareInputError(f"cannot write GitHub benchmark files to {directory}: "
                                f"{e.strerror or type(e).__name__}") from None
    return written


def render_github(result: CompareResult, directory: Path) -> str:
    """``--format github``: write the files (:func:`write_github`) and return the text to print: one GitHub
    ``::error`` annotation per regression (shown on the job), the verdict line, then the files written."""
    written = write_github(result, directory)
    lines = [f"::error title=retnet-bench regression::{line}" for line in regression_lines(result)]
    lines.append(("REGRESSION: " if result.regressed else "no regression: ") + _summary(result))
    lines += [f"wrote {path}" for path in written.values()]
    return "\n".join(lines)
