"""write_report: one page (report.md + a self-contained report.html) with claims, tables and figures.

The HTML embeds figures as base64 PNG and styles inline; it references no external URL.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import paper_values as pv
from .claims import claims_table
from .figure_style import DPI
from .figures import build_figures
from .load import load_runs
from .render import VERDICT_RULE, claims_display_frame, df_to_markdown, fmt, write_claims
from .tables import Table, all_tables

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f3f3f3} td.text,th.text{text-align:left}
.caption{color:#555;font-size:12px;margin:0 0 0.3em} .note{color:#8a5a00}
.holds{background:#d9f2d9} .partly{background:#fff3c4} .does-not-hold{background:#f8d0d0}
.not-measured{color:#888} img{max-width:100%;border:1px solid #eee}
"""


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
        items.append(f"{run_id}: GPU {env.get('gpu_name') or env.get('device') or '?'}, driver {env.get('driver')}, "
                     f"CUDA {env.get('cuda')}, torch {torch_v}, dtype {env.get('dtype')}, created {env.get('created')},"
                     f" git {str(env.get('git_sha'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}, peak copy "
                     f"{fmt(env.get('peak_copy_gbps'))} GB/s, suite {env.get('suite') or env.get('suite_name')}")
    return items


def build_blocks(run_dirs: list[Path], out_dir: Path) -> tuple[list[Block], pd.DataFrame, list[Table], dict]:
    df, envs = load_runs(run_dirs)
    claims = claims_table(df, envs)
    tables = all_tables(df, envs)
    figures, skipped = build_figures(df, envs)
    blocks = [Block("h1", "RetNet vs KV-cache Transformer: does the paper hold on this GPU?"),
              Block("list", items=tuple(_run_summary(envs))),
              Block("p", f"{len(df)} rows, {int((df['status'] == 'ok').sum())} ok; rows with another status are "
                         "counted below but never used as values."),
              Block("h2", "Paper claims under three framings"),
              Block("p", "1 = the paper's pipeline (cat-grown KV cache; Table 4's vanilla/FlashAttention); "
                         "2 = same batch and length against the fastest Transformer flavour measured; "
                         "3 = equal memory budget, each model at its largest batch that fits. "
                         "'baseline % of peak BW' is the baseline's achieved bandwidth over the measured copy "
                         "bandwidth: a baseline far below 100% is a weak baseline."),
              Block("table", frame=claims_display_frame(claims)),
              Block("p", VERDICT_RULE),
              Block("p", "Memory: claims use the GPU memory the process holds (NVML peak minus the idle baseline, "
                         "else torch's reserved peak); tables and figures fall back to torch allocated peak, then "
                         "process RSS (CPU runs), and name the source."),
              Block("h2", "What we could not confirm in the paper"),
              Block("list", items=pv.UNCONFIRMED)]
    blocks.append(Block("h2", "Figures"))
    for name, fig in figures.items():
        png = _png(fig)
        rel = f"figures/{name}.png"
        (out_dir / rel).write_bytes(png)
        blocks.append(Block("figure", text=fig.axes[0].get_title() or fig.get_suptitle(), png=png, path=rel))
    for name, why in skipped.items():
        blocks.append(Block("note", f"Figure {name} skipped: {why}"))
    blocks.append(Block("h2", "Tables"))
    blocks += [Block("table", table=t) for t in tables]
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
            out.append("\n".join(f"- {i}" for i in b.items))
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
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
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


def write_report(run_dirs: list[Path], out_dir: Path | None = None) -> dict[str, Path]:
    """Write report.md, report.html, figures/*.png, tables/*.csv, claims.csv/.md into out_dir (default: the first
    run's folder). Returns name -> path of everything written."""
    run_dirs = [Path(p) for p in run_dirs]
    out_dir = Path(out_dir) if out_dir is not None else (run_dirs[0] if run_dirs else Path("."))
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    blocks, claims, tables, _ = build_blocks(run_dirs, out_dir)
    paths = {"report_md": out_dir / "report.md", "report_html": out_dir / "report.html"}
    paths["report_md"].write_text(_md(blocks), encoding="utf-8")
    paths["report_html"].write_text(_html(blocks), encoding="utf-8")
    for b in blocks:
        if b.kind == "figure":
            paths[f"figure:{Path(b.path).stem}"] = out_dir / b.path
    for t in tables:
        p = out_dir / "tables" / f"{t.name}.csv"
        t.to_csv_frame().to_csv(p, index=False)
        paths[f"table:{t.name}"] = p
    paths.update(write_claims(claims, out_dir))
    return paths
