"""Figures render headless from synthetic rows with the structure a paper figure needs: a series per contestant
in a colour fixed across figures, integer ticks, OOM points drawn and labelled, legends outside the axes,
titles that name GPU, date and run; missing data skips a figure with a note, never crashes."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reports_fixtures import GPU, decode_row, gqa_rows, known_ratio_rows, train_row, write_run  # noqa: E402

from retnet_bench.reports import load_runs, write_report  # noqa: E402
from retnet_bench.reports import figures as F  # noqa: E402
from retnet_bench.reports.figure_style import GQA_SHADES, SUBJECT_COLOUR  # noqa: E402
from retnet_bench.reports.figures import FigureSkipped, build_figures  # noqa: E402


def _smoke_rows() -> list[dict]:
    """What a CPU smoke run looks like: tiny model, a few points, RSS memory only, no roofline/capacity/train."""
    rows = []
    for impl, kernel, ms in (("retnet-recurrent", "torch", 2.0), ("paper-like", "bmm-softmax", 3.0),
                             ("static", "sdpa", 2.5)):
        for b in (1, 2):
            for T in (64, 128):
                rows.append(decode_row("tiny", impl, kernel, b, T, ms * (1 + (T / 512 if impl != "retnet-recurrent"
                                                                                else 0)),
                                       None, mem_rss_peak_gb=0.5 + T / 1e4, device="cpu", gpu_name=None))
    return rows


def _extra_rows() -> list[dict]:
    """OOM decode points, a `long` sweep, OOM training points and a 1/2/4-GPU training sweep."""
    rows = [decode_row("6.7b", "paper-like", "bmm-softmax", 8, 16384, None, status="oom", error="OOM")]
    for T in (8192, 32768, 131072):
        rows.append(decode_row("6.7b", "retnet-recurrent", "torch", 1, T, 5.0, 14.0, suite="long"))
        if T < 131072:
            rows.append(decode_row("6.7b", "static", "sdpa-cudnn", 1, T, 5.0 * T / 8192, 14.0 + T / 2048,
                                   suite="long"))
    rows.append(decode_row("6.7b", "static", "sdpa-cudnn", 1, 131072, None, suite="long", status="oom", error="x"))
    rows.append(dict(train_row("2.7b", "transformer", "bmm-softmax", 4, 8192, 1.0, None), status="oom",
                     error="OOM", tokens_per_s=None, ms_median=None))
    rows.append(train_row("2.7b", "retnet-chunkwise", "torch", 4, 8192, 40000.0, 40.0))
    for T, retnet, trm in ((16384, 90000.0, 60000.0), (32768, 95000.0, None)):  # table4-long: the crossover
        rows.append(train_row("1.3b", "retnet-chunkwise", "torch", 4, T, retnet, 35.0, suite="table4-long"))
        trm_row = train_row("1.3b", "transformer", "flash-attn", 4, T, trm or 1.0, 50.0, suite="table4-long")
        rows.append(trm_row if trm else dict(trm_row, status="oom", error="OOM", tokens_per_s=None, ms_median=None))
    for ws, per_gpu in ((1, 10000.0), (2, 9500.0), (4, 9000.0)):
        rows.append(train_row("6.7b", "retnet-chunkwise", "torch", 1, 8192, per_gpu * ws, 30.0, world_size=ws,
                              tokens_per_s_per_gpu=per_gpu, suite="scaling"))
    return rows


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("full"), known_ratio_rows() + gqa_rows() + _extra_rows())
    return load_runs([run])


@pytest.fixture(scope="module")
def figs(full):
    built, skipped = build_figures(*full)
    assert skipped == {}
    return built


def _series(ax) -> dict[str, object]:
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def _legend(fig) -> list[str]:
    assert fig.legends, "one figure legend, outside the axes"
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _oom_texts(ax) -> int:
    return sum(t.get_text() == "OOM" for t in ax.texts)


def test_every_figure_names_gpu_date_run_and_renders_at_150_dpi(figs):
    for name, fig in figs.items():
        title = fig.get_suptitle()
        assert GPU in title and "2025-01-02" in title and "run-a" in title, name
        assert fig.dpi >= 150, name


def test_contestants_a_reader_compares_never_share_a_colour(tmp_path):
    """Two kernels of one baseline, MHA or GQA-8, the bf16-state RetNet and the official RetNet peer: each its own
    colour (an audit found two near-identical blues, one teal for both GQA kernels, one salmon for two RetNets)."""
    from retnet_bench.reports.figure_style import palette

    rows = [decode_row("6.7b", "retnet-recurrent", "triton", 8, 8192, 10.0, 14.0),
            decode_row("6.7b", "retnet-recurrent", "triton", 8, 8192, 9.0, 13.0, state_dtype="bfloat16"),
            decode_row("6.7b", "torchscale-retnet", "torchscale", 8, 8192, 30.0, 20.0)]
    for kernel in ("sdpa-cudnn", "flash-attn-4"):
        rows += [decode_row("6.7b", "static", kernel, 8, 8192, 20.0, 28.0, n_kv_heads=32),
                 decode_row("6.7b", "static", kernel, 8, 8192, 12.0, 20.0, n_kv_heads=8)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    pal = palette(df, envs)
    labels = ["retnet-recurrent (triton)", "retnet-recurrent (triton), bfloat16 state", "torchscale-retnet (torchscale)",
              "static (sdpa-cudnn)", "static (flash-attn-4)", "static (sdpa-cudnn), 8 KV heads",
              "static (flash-attn-4), 8 KV heads"]
    colours = [pal.colour(label) for label in labels]
    assert len(set(colours)) == len(labels), dict(zip(labels, colours))


def test_table4_bars_of_forward_backward_only_steps_are_dotted_and_named(tmp_path):
    """An official-code peer's training row times forward + backward only: its bars are dotted and the legend says
    what that means; a real AdamW step's bars are not."""
    from retnet_bench.reports.figures_train import FWD_BWD_LABEL
    from retnet_bench.suites.contract import FORWARD_BACKWARD_ONLY

    rows = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 43000.0, 31.0),
            train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, 44000.0, 30.0),
            train_row("1.3b", "torchscale-retnet", "torchscale", 1, 8192, 10800.0, 35.0, notes=FORWARD_BACKWARD_ONLY)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    fig = F.fig_table4(df, envs)
    assert FWD_BWD_LABEL in _legend(fig)
    hatched = {c.get_label() for ax in fig.axes for c in ax.containers
               if c.patches and c.patches[0].get_hatch() == "..."}
    assert "torchscale-retnet (torchscale)" in hatched and "retnet-chunkwise (fla)" not in hatched


def test_the_two_projection_variants_of_a_contestant_are_told_apart(tmp_path):
    rows = [decode_row("6.7b", "static", "sdpa-cudnn", 8, T, 20.0, 28.0, **extra)
            for T in (2048, 8192) for extra in ({}, {"decode_gemm": "triton"})]
    rows += [decode_row("6.7b", "retnet-recurrent", "triton", 8, T, 10.0, 14.0) for T in (2048, 8192)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    lines = _series(F.fig_throughput_vs_length(df, envs).axes[0])
    plain, triton = lines["static (sdpa-cudnn)"], lines["static (sdpa-cudnn), Triton projections"]
    assert plain.get_color() == triton.get_color() and plain.get_marker() != triton.get_marker()


def test_a_legend_of_long_labels_stays_inside_the_figure(tmp_path):
    """Fifteen contestants with labels like "retnet-recurrent (triton), Triton projections, bfloat16 state": the
    legend takes fewer columns rather than running off both edges (report s10's Fig. 6b did before)."""
    rows = []
    for T in (2048, 8192):
        for extra in ({}, {"decode_gemm": "triton"}):
            for state in ("float32", "bfloat16"):
                rows.append(decode_row("6.7b", "retnet-recurrent", "triton", 8, T, 10.0, 14.0, state_dtype=state,
                                       **extra))
            for kernel in ("sdpa-cudnn", "flash-attn-4", "flash-attn"):
                for heads in (32, 8):
                    rows.append(decode_row("6.7b", "static", kernel, 8, T, 20.0, 28.0, n_kv_heads=heads, **extra))
    df, envs = load_runs([write_run(tmp_path, rows)])
    fig = F.fig_throughput_vs_length(df, envs)
    fig.canvas.draw()
    box, width = fig.legends[0].get_window_extent(), fig.get_figwidth() * fig.dpi
    assert len(fig.legends[0].get_texts()) >= 15 and box.x0 >= 0 and box.x1 <= width, (box, width)


def test_fig6a_lines_are_the_data_and_colours_are_fixed(figs):
    fig = figs["fig6a_memory_vs_length"]
    alloc_ax, ax = fig.axes  # the paper's measure (allocator GiB) first, device memory (GB) beside it
    assert "allocator peak (GiB" in alloc_ax.get_ylabel() and "GB" in ax.get_ylabel()
    lines = _series(ax)
    paper_like = lines["paper-like (bmm-softmax)"]
    assert list(paper_like.get_xdata()) == [2048, 8192] and list(paper_like.get_ydata()) == [24.0, 48.0]
    alloc = _series(alloc_ax)["paper-like (bmm-softmax)"]  # only the 8k row has an allocator peak: 36 GB
    assert list(alloc.get_xdata()) == [8192] and alloc.get_ydata()[0] == pytest.approx(36e9 / 2**30)
    assert lines["retnet-recurrent (torch)"].get_color() == SUBJECT_COLOUR
    assert lines["static (sdpa-cudnn), 8 KV heads"].get_color() in GQA_SHADES
    legend = _legend(fig)
    assert legend[0] == "retnet-recurrent (torch)" and any(t.startswith("model weights (13.40 GB)") for t in legend)
    assert any(t.startswith("model weights (12.48 GiB)") for t in legend)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2048", "4096", "8192", "16384"]  # integer ticks
    assert _oom_texts(ax) == 1  # paper-like at 16k, batch 8
    for name in ("fig6b_throughput_vs_length", "fig6c_latency_vs_batch", "roofline"):  # same colour everywhere
        for ax2 in figs[name].axes:
            for label, line in _series(ax2).items():
                if label == "retnet-recurrent (torch)":
                    assert line.get_color() == SUBJECT_COLOUR


def test_fig6b_goes_log_when_values_span_decades(figs):
    ax = figs["fig6b_throughput_vs_length"].axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert ax.get_ylabel() == "throughput (tokens/s)"


def test_fig6c_is_small_multiples_one_panel_per_length(figs):
    fig = figs["fig6c_latency_vs_batch"]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["T = 2048", "T = 4096", "T = 8192", "T = 16384"]
    panel = fig.axes[2]  # T = 8192: RetNet (fp32 and bf16 state), paper-like, two static MHA, two GQA flavours
    assert set(_series(panel)) == {"retnet-recurrent (torch)", "retnet-recurrent (torch), bfloat16 state",
                                   "paper-like (bmm-softmax)", "static (sdpa-cudnn)", "static (flash-attn)",
                                   "static (sdpa-cudnn), 8 KV heads", "hf (sdpa), 8 KV heads"}
    assert [t.get_text() for t in panel.get_xticklabels()] == ["1", "8", "16", "64"]
    assert _oom_texts(fig.axes[3]) == 1 and panel.get_xlabel() == "batch size (sequences)"


def test_roofline_is_percent_of_copy_bandwidth_per_batch_at_8k(figs):
    fig = figs["roofline"]
    ax = fig.axes[0]
    assert "T=8192" in fig.get_suptitle() and ax.get_xlabel() == "batch size (sequences)"
    lines = _series(ax)
    assert list(lines["retnet-recurrent (torch)"].get_ydata()) == [45.0]
    assert "measured copy bandwidth (100%)" in lines


def test_capacity_is_bars_of_batch_and_throughput(figs):
    fig = figs["capacity"]
    batch_ax, tps_ax = fig.axes
    labels = [t.get_text() for t in batch_ax.get_yticklabels()]
    assert labels[0] == "static (sdpa-cudnn), 8 KV heads" or "retnet-recurrent (torch)" in labels
    assert labels[-1] == "retnet-recurrent (torch)"  # drawn bottom-up: the subject on top
    widths = {lab: p.get_width() for lab, p in zip(labels, batch_ax.patches)}
    assert widths["retnet-recurrent (torch)"] == 64 and widths["static (sdpa-cudnn), 8 KV heads"] == 40
    assert {lab: p.get_width() for lab, p in zip(labels, tps_ax.patches)}["retnet-recurrent (torch)"] == 3200


def test_table4_bars_show_oom(figs):
    fig = figs["table4_training_bars"]
    # the fixture's training rows carry device memory only: the fallback, labelled as such
    assert [ax.get_ylabel() for ax in fig.axes] == ["device memory per GPU (GB)", "throughput (tokens/s)"]
    assert _legend(fig)[0] == "retnet-chunkwise (torch)"
    for ax in fig.axes:
        assert _oom_texts(ax) == 1
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1.3b", "2.7b", "6.7b"]


def test_long_context_figure(figs):
    fig = figs["long_context"]
    thr, mem = fig.axes
    assert set(_series(thr)) == {"retnet-recurrent (torch)", "static (sdpa-cudnn)"}
    assert [t.get_text() for t in thr.get_xticklabels()] == ["8192", "32768", "131072"]
    assert _oom_texts(thr) == 1 and _oom_texts(mem) == 1 and mem.get_ylabel().startswith("memory (GB; device")


def test_scaling_figure_has_the_ideal_line(figs):
    fig = figs["scaling"]
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines()]
    measured = [ln for ln in lines if ln.get_label() == "retnet-chunkwise (torch)"][0]
    ideal = [ln for ln in lines if ln.get_label().startswith("ideal")][0]
    assert list(measured.get_xdata()) == [1, 2, 4] and list(measured.get_ydata()) == [10000, 9500, 9000]
    assert list(ideal.get_ydata()) == [10000] * 3 and ax.get_ylabel() == "tokens/s per GPU"
    assert [t.get_text() for t in ax.texts] == ["95%", "90%"]  # each point's efficiency against one GPU's rate


def test_smoke_run_skips_missing_figures_with_a_note(tmp_path):
    df, envs = load_runs([write_run(tmp_path, _smoke_rows(), run_id="smoke")])
    figs, skipped = build_figures(df, envs)
    assert set(figs) == {"fig6a_memory_vs_length", "fig6b_throughput_vs_length", "fig6c_latency_vs_batch"}
    assert set(skipped) == {"table4_training_bars", "roofline", "capacity", "long_context", "scaling",
                            "training_vs_length"}
    assert "process RSS" in figs["fig6a_memory_vs_length"].axes[0].get_ylabel()
    with pytest.raises(FigureSkipped):
        F.fig_roofline(df, envs)


def test_write_report_self_contained(tmp_path):
    runtime = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "OMP_NUM_THREADS": "8"}
    run = write_run(tmp_path, known_ratio_rows(), env={"runtime_env": runtime})
    out = tmp_path / "out"
    paths = write_report([run], out)
    html = paths["report_html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", html, re.I)
    assert not re.search(r"<script|<link", html, re.I)
    assert html.count('src="data:image/png;base64,') == 6
    md = paths["report_md"].read_text()
    for name in ("fig6a_memory_vs_length", "fig6b_throughput_vs_length", "fig6c_latency_vs_batch", "roofline",
                 "capacity", "table4_training_bars"):
        assert f"figures/{name}.png" in md and (out / "figures" / f"{name}.png").stat().st_size > 1000
    assert "does not hold" in md and "2307.08621" in md and GPU in md
    # a measure-changing variable the run was made with is named beside the run; an ordinary one is not
    assert "with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in md and "OMP_NUM_THREADS" not in md
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


def test_colours_follow_the_contestants_table_not_names(tmp_path):
    """Colour families come from (role, source, pipeline) in the env's contestants table: renaming nothing but
    the table's entries moves a contestant into another family."""
    from reports_fixtures import contestants_table, known_ratio_rows

    from retnet_bench.reports.figure_style import FAMILIES, palette

    rows = known_ratio_rows()
    df, envs = load_runs([write_run(tmp_path, rows, "run-a")])
    pal = palette(df, envs)
    assert pal.colour("retnet-recurrent (torch)") == SUBJECT_COLOUR and pal.is_subject("retnet-recurrent (torch)")
    assert pal.colour("paper-like (bmm-softmax)") in FAMILIES["paper pipeline"]
    assert pal.colour("static (sdpa-cudnn)") != pal.colour("static (flash-attn)")  # a shade per kernel
    table = contestants_table({r["impl"] for r in rows})
    table["paper-like"] = {**table["paper-like"], "pipeline": "", "source": "official"}
    df, envs = load_runs([write_run(tmp_path, rows, "run-b", {"contestants": table})])
    assert palette(df, envs).colour("paper-like (bmm-softmax)") in FAMILIES["official baseline"]


def test_a_quantized_kv_cache_is_labelled_as_a_cache_and_a_retnet_state_as_a_state():
    from retnet_bench.reports.load import contestant_label as contestant

    assert contestant("static", "flash-attn-4", 8, "float8_e4m3fn", True) == \
        "static (flash-attn-4), 8 KV heads, float8_e4m3fn KV cache"
    assert contestant("retnet-recurrent", "triton", None, "bfloat16") == "retnet-recurrent (triton), bfloat16 state"
    assert contestant("retnet-recurrent", "triton", None, "float32") == "retnet-recurrent (triton)"


def test_training_vs_length_shows_the_crossover_with_oom_points(figs):
    fig = figs["training_vs_length"]
    assert "1.3b" in fig.get_suptitle() and "one GPU" in fig.get_suptitle()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "sequence length T (tokens)"
    series = _series(ax)  # the vanilla Transformer was measured at 8k only: a single point
    assert set(series) == {"retnet-chunkwise (torch)", "transformer (flash-attn)", "transformer (bmm-softmax)"}
    assert list(series["retnet-chunkwise (torch)"].get_xdata()) == [8192, 16384, 32768]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8192", "16384", "32768"]
    assert _oom_texts(ax) == 1 and _oom_texts(fig.axes[1]) == 1  # the Transformer at 32k: drawn, not dropped


def test_the_prefill_suites_brief_decode_rows_feed_no_decode_figure_or_claim(tmp_path):
    """The `prefill` suite decodes a few steps after each timed prefill. Its decode rows, at more lengths than the
    fig6 sweep and at batch 4, would make Fig. 6 pick batch 4 and would be averaged into a claim's point."""
    from retnet_bench.reports import claims_table

    base = known_ratio_rows()
    brief = [decode_row("6.7b", impl, kernel, b, T, 1.0, 99.0, suite="prefill")
             for impl, kernel in (("retnet-recurrent", "torch"), ("static", "flash-attn"))
             for b in (4, 8) for T in (1024, 2048, 4096, 8192, 16384)]
    runs = [load_runs([write_run(tmp_path / name, rows)]) for name, rows in (("a", base), ("b", base + brief))]
    (fig_a, _), (fig_b, _) = build_figures(*runs[0]), build_figures(*runs[1])
    title = fig_b["fig6b_throughput_vs_length"].get_suptitle()
    assert "batch 8" in title and title == fig_a["fig6b_throughput_vs_length"].get_suptitle()
    a, b = (claims_table(*r) for r in runs)
    assert a["measured_value"].round(6).fillna(-1).tolist() == b["measured_value"].round(6).fillna(-1).tolist()
    assert a["verdict"].tolist() == b["verdict"].tolist()


def test_training_memory_is_the_allocator_peak_in_gib_when_every_row_has_it(tmp_path):
    """Table 4's memory is what the paper measured (allocator peak, GiB) and what the claims judge; device memory
    near a GPU's capacity is the caching allocator's reservation (an H200 at 6.7B: 138 GB held for 111 allocated)."""
    rows = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10000.0, 111.0, mem_torch_peak_gb=114.7),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 11000.0, 138.0, mem_torch_peak_gb=110.7)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    fig = F.build_figures(df, envs)[0]["table4_training_bars"]
    mem_ax = fig.axes[0]
    assert mem_ax.get_ylabel() == "allocator peak per GPU (GiB)"
    heights = sorted(round(p.get_height(), 2) for p in mem_ax.patches)
    assert heights == [round(110.7e9 / 2**30, 2), round(114.7e9 / 2**30, 2)]


def test_table4_bars_say_when_a_step_ran_at_the_memory_limit(tmp_path):
    """A throughput bar whose step had cudaMalloc retries carries the count (its time includes allocator stalls)."""
    rows = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 9965.0, 111.0, mem_torch_peak_gb=114.7,
                      alloc_retries=24),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 10771.0, 138.0, mem_torch_peak_gb=110.7,
                      alloc_retries=0)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    fig = F.build_figures(df, envs)[0]["table4_training_bars"]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("24 alloc\nretries") == 1 and not any(t.startswith("0 alloc") for t in texts)


def test_table4_bars_mark_a_faster_engine_setting_and_no_slower_one(tmp_path):
    """The bars are plain steps; a contestant whose checkpointed-every-8th-block step beats its plain one (RetNet
    at 6.7B on one H200) gets a black tick at that step's tokens/s, the one the strongest framing's claim takes;
    a slower setting (the Transformer's) gets none."""
    from retnet_bench.reports.figure_style import FASTEST_SETTING

    rows = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10000.0, 111.0, alloc_retries=24),
            train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10700.0, 111.0, checkpointing="every-8"),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 11000.0, 138.0),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 10800.0, 135.0, checkpointing="every-8")]
    df, envs = load_runs([write_run(tmp_path, rows)])
    fig = F.build_figures(df, envs)[0]["table4_training_bars"]
    ticks = [c for ax in fig.axes for c in ax.collections if c.get_label() == FASTEST_SETTING]
    assert len(ticks) == 1 and ticks[0].get_segments()[0][0][1] == pytest.approx(10700.0)
    assert sorted(round(p.get_height()) for p in fig.axes[1].patches) == [10000, 11000]  # the plain bars
    retries = [t for t in fig.axes[1].texts if t.get_text() == "24 alloc\nretries"]
    assert retries[0].get_position()[1] == pytest.approx(10700.0)  # above the tick, not through it

