"""write_report: one page (report.md + a self-contained report.html) that leads with the answer.

Order: title, a six-line verdict summary (claim, framing, measured, verdict), the headline figures, the full
claims table (unjudged claims collapsed to one line each), the other figures, then the tables and the runs.
The HTML embeds figures as base64 PNG and styles inline; it references no external URL.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from retnet_bench.suites.contract import RowsError, measure_changing, read_rows

from . import paper_values as pv
from .claims import (FRAMING_CAPACITY, FRAMING_MODERN, FRAMING_PAPER, FRAMING_STRONGEST, claims_table)
from .claims_select import MEMORY_MEASURE_WHY
from .figure_style import DPI
from .figures import HEADLINE, build_figures
from .contestants import roster_of
from .load import GIB, RUN_FILES, ReportInputError, load_runs
from .repeats import training_repeats
from .render import (UNJUDGED, VERDICT_RULE, claims_display_frame, collapsed_lines, df_to_markdown, fmt,
                     write_claims)
from .tables import Table, all_tables

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f3f3f3} td.text,th.text{text-align:left}
.caption{color:#555;font-size:12px;margin:0 0 0.3em} .note{color:#8a5a00}
.holds{background:#d9f2d9} .partly{background:#fff3c4} .does-not-hold{background:#f8d0d0}
.not-measured,.not-applicable{color:#888} img{max-width:100%;border:1px solid #eee}
#summary table{font-size:15px} #summary td,#summary th{text-align:left}
"""
# The headline claims, in this order when judged (claim_id, framing); other judged rows fill the gaps. Training
# (the paper's other half) gets one line: throughput against Transformer+FlashAttention, each side at its fastest,
# at the largest size judged (SUMMARY_TRAIN is largest first; only its first judged entry is taken).
SUMMARY_DECODE = (("decode_throughput", FRAMING_STRONGEST), ("decode_memory", FRAMING_STRONGEST),
                  ("decode_throughput", FRAMING_CAPACITY), ("decode_throughput", FRAMING_MODERN))
SUMMARY_TRAIN = tuple((c.claim_id, FRAMING_STRONGEST) for c in reversed(pv.TRAIN_CLAIMS)
                      if c.metric == "throughput" and c.baseline == "flash")
SUMMARY_TAIL = (("decode_throughput", FRAMING_PAPER), ("decode_memory", FRAMING_PAPER))
SUMMARY_LINES = 6


@dataclass
class Block:
    kind: str            # "h2", "p", "note", "table", "figure", "list"
    text: str = ""
    table: Table | None = None
    frame: pd.DataFrame | None = None
    png: bytes = b""
    path: str = ""
    items: tuple[str, ...] = ()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _run_summary(envs: dict[str, dict]) -> list[str]:
    items = []
    for run_id, env in envs.items():
        versions = env.get("versions") or {}
        torch_v = env.get("torch") or versions.get("torch")
        where = f"GPU {env['gpu_name']}, driver {env.get('driver')}, CUDA {env.get('cuda')}" if env.get("gpu_name") \
            else f"device {env.get('device') or 'cpu'} (no GPU)"
        items.append(f"{run_id}: {where}, torch {torch_v}, dtype {env.get('dtype')}, created {env.get('created')},"
                     f" git {str(env.get('git_sha'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}, peak copy "
                     f"{fmt(env.get('peak_copy_gbps'))} GB/s, suite {env.get('suite') or env.get('suite_name')}"
                     + (f", boot {str(env['boot_id'])[:8]}" if env.get("boot_id") else "")
                     + _measure_changing(env) + _converted(env))
    return items


def _converted(env: dict) -> str:
    """What the loader converted in this run's rows (reports/load.convert_engine_gib), so that a reader comparing
    with a report made before the conversion knows why its training memory differs."""
    n = env.get("engine_rows_from_gib") or 0
    return (f", training memory of its {n} engine row(s) read from GiB (written before schema 3; earlier reports "
            f"showed it {100 * (1 - 1e9 / GIB):.1f}% low)") if n else ""


def _measure_changing(env: dict) -> str:
    """", with PYTORCH_CUDA_ALLOC_CONF=..." for each measure-changing variable the run was made with."""
    changing = measure_changing(env.get("runtime_env") or {})
    return "".join(f", with {name}={value}" for name, value in changing.items())


def _title(df: pd.DataFrame) -> str:
    gpus = sorted(df["gpu_name"].dropna().astype(str).unique()) if len(df) else []
    if gpus:
        return f"RetNet vs KV-cache Transformer: does the paper hold on {' / '.join(gpus)}?"
    devices = "/".join(sorted(df["device"].dropna().astype(str).unique())) or "cpu"
    return f"RetNet vs KV-cache Transformer: a {devices} run (no GPU, so no verdict on the paper's claims)"


def summary_frame(claims: pd.DataFrame) -> pd.DataFrame:
    """Up to SUMMARY_LINES judged claims (claim, framing, paper, measured, verdict), headline ones first."""
    judged = claims[~claims["verdict"].isin(UNJUDGED)]
    keyed = {(r.claim_id, r.framing): i for i, r in zip(judged.index, judged.itertuples())}
    train = [keyed[k] for k in SUMMARY_TRAIN if k in keyed][:1]
    picked = [keyed[k] for k in SUMMARY_DECODE if k in keyed] + train + [keyed[k] for k in SUMMARY_TAIL if k in keyed]
    picked += [i for i in judged.index if i not in picked]
    shown = claims_display_frame(judged.loc[picked[:SUMMARY_LINES]])
    return shown[["claim", "framing", "paper", "measured", "verdict"]]


def build_blocks(run_dirs: list[Path], out_dir: Path, repeat_dirs: list[Path] = ()
                 ) -> tuple[list[Block], pd.DataFrame, list[Table], dict]:
    """`repeat_dirs`: runs that only add lines to the run-to-run table (training_repeats), never values elsewhere."""
    df, envs = load_runs(run_dirs)
    claims = claims_table(df, envs)
    given = {Path(d).resolve() for d in run_dirs}
    every, every_env = load_runs(list(run_dirs) + [d for d in repeat_dirs if Path(d).resolve() not in given],
                                 latest=False)
    repeats = training_repeats(every, every_env, main_runs=set(envs))  # every run's rows, not the latest only
    tables = all_tables(df, envs) + ([repeats] if repeats is not None else [])
    figures, skipped = build_figures(df, envs, every)
    summary = summary_frame(claims)
    blocks = [Block("h1", _title(df)), Block("h2", "Verdict summary")]
    if len(summary):
        blocks.append(Block("summary", frame=summary))
    else:
        blocks.append(Block("summary", text=" ".join(collapsed_lines(claims)) or "No claim could be judged."))
    blocks.append(Block("p", f"{len(df)} rows, {int((df['status'] == 'ok').sum())} ok, from "
                             f"{len(envs)} run(s); rows with another status are counted in the tables, never used "
                             "as values." + (f" {df.attrs['superseded_rows']} row(s) of contestants measured again in a later "
                                             "run of the same suite were left out (each contestant's latest run is "
                                             "used, never a mix of two)."
                                             if df.attrs.get("superseded_rows") else "")
                             + " Full claims table, method and runs below."))
    roster_note = roster_of(df, envs).note()
    if roster_note:
        blocks.append(Block("note", roster_note))
    fig_blocks = {}
    for name, fig in figures.items():
        rel = f"figures/{name}.png"
        png = _png(fig)
        try:
            (out_dir / rel).write_bytes(png)
        except OSError as e:
            raise ReportInputError(f"cannot write {out_dir / rel}: {e.strerror or type(e).__name__}") from None
        fig_blocks[name] = Block("figure", text=fig.get_suptitle() or fig.axes[0].get_title(), png=png, path=rel)
    headline = [n for n in HEADLINE if n in fig_blocks]
    if headline:
        blocks.append(Block("h2", "Headline figures"))
        blocks += [fig_blocks[n] for n in headline]
    blocks += [Block("h2", "Paper claims under four framings"),
               Block("p", "1 = the paper's pipeline (cat-grown KV cache; Table 4's vanilla/FlashAttention); "
                          "2 = same batch and length against the fastest full-attention Transformer measured; "
                          "3 = equal memory budget, each model at its largest batch that fits; "
                          "4 = the baseline deployed today, grouped-query attention with 8 KV heads (4a equal "
                          "batch, 4b equal memory). The baseline column names each baseline's KV heads; "
                          "'baseline % of peak BW' is its achieved bandwidth over the measured copy bandwidth: "
                          "a baseline far below 100% is a weak baseline."),
               Block("table", frame=claims_display_frame(claims, collapse=True))]
    lines = collapsed_lines(claims)
    if lines:
        blocks.append(Block("list", text="Not judged (one line per claim)", items=tuple(lines)))
    blocks += [Block("p", VERDICT_RULE), Block("p", MEMORY_MEASURE_WHY),
               Block("h2", "What we could not confirm in the paper"), Block("list", items=pv.UNCONFIRMED)]
    others = [n for n in fig_blocks if n not in headline]
    if others or skipped:
        blocks.append(Block("h2", "More figures"))
    blocks += [fig_blocks[n] for n in others]
    for name, why in skipped.items():
        blocks.append(Block("note", f"Figure {name} skipped: {why}"))
    blocks.append(Block("h2", "Tables"))
    blocks += [Block("table", table=t) for t in tables]
    extra = {r: e for r, e in every_env.items() if r not in envs}
    blocks += [Block("h2", "Runs"), Block("list", items=tuple(_run_summary(envs)))]
    if extra:
        blocks += [Block("p", "Given with --repeats-from (lines of the run-to-run training table only):"),
                   Block("list", items=tuple(_run_summary(extra)))]
    return blocks, claims, tables, envs


def _md(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "note":
            out.append(f"> **Note:** {b.text}")
        elif b.kind == "list":
            out.append((f"**{b.text}**\n\n" if b.text else "") + "\n".join(f"- {i}" for i in b.items))
        elif b.kind == "summary":
            out.append(df_to_markdown(b.frame, index=False) if b.frame is not None else f"**{b.text}**")
        elif b.kind == "figure":
            out.append(f"![{b.text.splitlines()[0]}]({b.path})\n\n*{b.text.replace(chr(10), ' — ')}*")
        elif b.kind == "table" and b.table is not None:
            t = b.table
            out.append(f"### {t.title}\n\n*{t.meta}*" + (f" — {t.note}" if t.note else "") + "\n\n"
                       + df_to_markdown(t.df))
        elif b.kind == "table":
            out.append(df_to_markdown(b.frame, index=False))
    return "\n\n".join(out) + "\n"


def _html_table(frame: pd.DataFrame, index: bool) -> str:
    flat = frame.reset_index() if index else frame
    head = "".join(f"<th>{html.escape(' '.join(map(str, c)) if isinstance(c, tuple) else str(c))}</th>"
                   for c in flat.columns)
    body = []
    for _, row in flat.iterrows():
        cells = []
        for col, v in row.items():
            text = fmt(v)
            cls = "text" if not isinstance(v, (int, float)) or isinstance(v, bool) else ""
            if col == "verdict":
                cls += " " + text.replace(" ", "-")
            cells.append(f'<td class="{cls.strip()}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "note":
            out.append(f'<p class="note"><b>Note:</b> {html.escape(b.text)}</p>')
        elif b.kind == "list":
            out.append((f"<p><b>{html.escape(b.text)}</b></p>" if b.text else "")
                       + "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "summary":
            inner = _html_table(b.frame, False) if b.frame is not None else f"<p><b>{html.escape(b.text)}</b></p>"
            out.append(f'<section id="summary">{inner}</section>')
        elif b.kind == "figure":
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(b.text.splitlines()[0])}" src="data:image/png;base64,'
                       f'{data}"><figcaption class="caption">{html.escape(b.text)}</figcaption></figure>')
        elif b.kind == "table" and b.table is not None:
            t = b.table
            out.append(f"<h3>{html.escape(t.title)}</h3><p class=\"caption\">{html.escape(t.meta)}"
                       + (f" — {html.escape(t.note)}" if t.note else "") + "</p>" + _html_table(t.df, True))
        elif b.kind == "table":
            out.append(_html_table(b.frame, False))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>retnet-bench report</title>"
            f"<style>{CSS}</style></head><body>{''.join(out)}</body></html>\n")


# A folder under results/reference/ holds a committed run: a report without an explicit out_dir would be written
# into it
REFERENCE_PARTS = ("results", "reference")


def _is_reference(path: Path) -> bool:
    parts = path.resolve().parts
    return any(parts[i:i + 2] == REFERENCE_PARTS for i in range(len(parts) - 1))


def check_run_folders(run_dirs: list[Path], out_dir: Path | None, what: str = "report",
                      guard_reference: bool = True) -> list[Path]:
    """The run folders of a report or claims table, checked before anything is created, written or printed:
    ReportInputError (one line; the CLI exits 2) for a missing path, a file, a folder without rows, an empty run, an
    out_dir that is a file, or (guard_reference, no out_dir) a committed reference run as the destination."""
    if not run_dirs:
        raise ReportInputError("no run folders given")
    folders = []
    for given in map(Path, run_dirs):
        d = given.parent if given.is_file() and given.name in RUN_FILES else given
        if not d.exists():
            raise ReportInputError(f"{d}: run folder not found")
        if not d.is_dir():
            raise ReportInputError(f"{d} is not a run folder")
        if (d / "rows.jsonl").is_file():
            try:
                empty = not read_rows(d / "rows.jsonl", warn=False)
            except RowsError as e:
                raise ReportInputError(f"unreadable rows: {e}") from None
            if empty:
                raise ReportInputError(f"{d}: the run has no rows yet (nothing to {what})")
        elif not (d / "table.csv").is_file():
            raise ReportInputError(f"{d} is not a run folder (no rows.jsonl or table.csv)")
        folders.append(d)
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ReportInputError(f"--out {out_dir} is a file, not a folder")
    if out_dir is None and guard_reference and _is_reference(folders[0]):
        raise ReportInputError(f"{folders[0]} is a committed reference run: give --out DIR for the {what}")
    return folders


def write_report(run_dirs: list[Path], out_dir: Path | None = None, guard_reference: bool = True,
                 repeat_dirs: list[Path] = ()) -> dict[str, Path]:
    """Write report.md, report.html, figures/*.png, tables/*.csv, claims.csv/.md into out_dir (default: the first
    run's folder, never a committed reference run's unless guard_reference is off). `repeat_dirs`: more runs for the
    run-to-run table only (the figures, Table 4 and the claims read `run_dirs`). Returns name -> path of
    everything written. Bad input (check_run_folders, checked before any folder is made) or an unwritable out_dir
    raises ReportInputError (one line; the CLI exits 2)."""
    run_dirs = check_run_folders(run_dirs, out_dir, "report", guard_reference)
    repeat_dirs = check_run_folders(list(repeat_dirs), out_dir, "report", False) if repeat_dirs else []
    out_dir = Path(out_dir) if out_dir is not None else run_dirs[0]
    try:
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportInputError(f"cannot write the report to {out_dir}: {e.strerror or type(e).__name__}") from None
    blocks, claims, tables, _ = build_blocks(run_dirs, out_dir, repeat_dirs)
    paths = {"report_md": out_dir / "report.md", "report_html": out_dir / "report.html"}
    try:
        paths["report_md"].write_text(_md(blocks), encoding="utf-8")
        paths["report_html"].write_text(_html(blocks), encoding="utf-8")
        for t in tables:
            p = out_dir / "tables" / f"{t.name}.csv"
            t.to_csv_frame().to_csv(p, index=False)
            paths[f"table:{t.name}"] = p
    except OSError as e:
        raise ReportInputError(f"cannot write the report to {out_dir}: {e.strerror or type(e).__name__}") from None
    for b in blocks:
        if b.kind == "figure":
            paths[f"figure:{Path(b.path).stem}"] = out_dir / b.path
    paths.update(write_claims(claims, out_dir))
    return paths
