"""Figures render headless from synthetic rows, with the expected titles and axis labels; the report is
self-contained (no external URL for scripts, styles or images); missing data skips a figure, never crashes."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reports_fixtures import GPU, decode_row, known_ratio_rows, write_run  # noqa: E402

from retnet_bench.reports import load_runs, write_report  # noqa: E402
from retnet_bench.reports.figures import FigureSkipped, build_figures  # noqa: E402
from retnet_bench.reports import figures as F  # noqa: E402


def _smoke_rows() -> list[dict]:
    """What a CPU smoke run looks like: tiny model, a few points, RSS memory only, no roofline/capacity/train."""
    rows = []
    for impl, kernel, ms in (("retnet-recurrent", "torch", 2.0), ("paper-like", "bmm-softmax", 3.0),
                             ("static", "sdpa", 2.5)):
        for b in (1, 2):
            for T in (64, 128):
                r = decode_row("tiny", impl, kernel, b, T, ms * (1 + (T / 512 if impl != "retnet-recurrent" else 0)),
                               None, mem_rss_peak_gb=0.5 + T / 1e4, device="cpu", gpu_name=None)
                rows.append(r)
    return rows


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("full"), known_ratio_rows())
    return load_runs([run])


EXPECTED = {
    "fig6a_memory_vs_length": ("Fig. 6a", "context length T (tokens)", "memory (GB"),
    "fig6b_throughput_vs_length": ("Fig. 6b", "context length T (tokens)", "throughput (tokens/s)"),
    "fig6c_latency_vs_batch": ("Fig. 6c", "batch size (sequences)", "latency (ms"),
    "roofline": ("Roofline", "tokens held in cache/state (batch x T)", "% of peak copy GB/s"),
    "capacity": ("Capacity", "context length T (tokens)", "throughput at max batch (tokens/s)"),
}


def test_figures_titles_labels_legends(full):
    df, envs = full
    figs, skipped = build_figures(df, envs)
    assert skipped == {}
    for name, (title, xlabel, ylabel) in EXPECTED.items():
        ax = figs[name].axes[0]
        assert ax.get_title().startswith(title), name
        assert GPU in ax.get_title() and "2025-01-02" in ax.get_title() and "run-a" in ax.get_title()
        assert ax.get_xlabel() == xlabel
        assert ylabel in ax.get_ylabel()
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("retnet-recurrent (torch)" in t for t in legend), (name, legend)
    a = figs["fig6a_memory_vs_length"].axes[0]
    assert any(t.get_text().startswith("model weights (13.40 GB)") for t in a.get_legend().get_texts())
    bars = figs["table4_training_bars"]
    assert bars.get_suptitle().startswith("Table 4") and GPU in bars.get_suptitle()
    assert [ax.get_ylabel() for ax in bars.axes] == ["memory (GB)", "throughput (tokens/s)"]
    legend = [t.get_text() for t in bars.axes[0].get_legend().get_texts()]
    assert legend == ["retnet-chunkwise (torch)", "transformer (bmm-softmax)", "transformer (flash-attn)"]


def test_fig6a_lines_are_the_data(full):
    df, envs = full
    ax = F.fig_memory_vs_length(df, envs).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    paper_like = lines["paper-like (bmm-softmax)"]
    assert list(paper_like.get_xdata()) == [2048, 8192] and list(paper_like.get_ydata()) == [24.0, 48.0]


def test_smoke_run_skips_missing_figures_with_a_note(tmp_path):
    df, envs = load_runs([write_run(tmp_path, _smoke_rows(), run_id="smoke")])
    figs, skipped = build_figures(df, envs)
    assert set(figs) == {"fig6a_memory_vs_length", "fig6b_throughput_vs_length", "fig6c_latency_vs_batch"}
    assert set(skipped) == {"table4_training_bars", "roofline", "capacity"}
    assert "mem_rss_peak_gb" in figs["fig6a_memory_vs_length"].axes[0].get_ylabel()
    with pytest.raises(FigureSkipped):
        F.fig_roofline(df, envs)


def test_write_report_self_contained(tmp_path):
    run = write_run(tmp_path, known_ratio_rows())
    out = tmp_path / "out"
    paths = write_report([run], out)
    html = paths["report_html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", html, re.I)
    assert not re.search(r"<script|<link", html, re.I)
    assert html.count('src="data:image/png;base64,') == 6
    md = paths["report_md"].read_text()
    for name in EXPECTED:
        assert f"figures/{name}.png" in md and (out / "figures" / f"{name}.png").stat().st_size > 1000
    assert "does not hold" in md and "2307.08621" in md and GPU in md
    csvs = sorted(p.name for p in (out / "tables").glob("*.csv"))
    assert "table4_training.csv" in csvs and "decode_tokens_per_s_6.7b.csv" in csvs
    assert (out / "claims.csv").is_file() and (out / "claims.md").is_file()
    table4 = (out / "tables" / "table4_training.csv").read_text()
    assert "74.8" in table4 and "run-a" in table4  # the paper's value beside ours, and the run named


def test_write_report_defaults_to_first_run_and_notes_skips(tmp_path):
    run = write_run(tmp_path, _smoke_rows(), run_id="smoke")
    paths = write_report([run])
    assert paths["report_md"].parent == run
    md = paths["report_md"].read_text()
    assert "Figure roofline skipped" in md and "Figure capacity skipped" in md
