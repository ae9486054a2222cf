"""Tables carry the right numbers and the run metadata; the claims render as Markdown and rich."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from reports_fixtures import GPU, known_ratio_rows, write_run  # noqa: E402

from retnet_bench.reports import claims_rich_table, claims_table, load_runs, render_claims_markdown  # noqa: E402
from retnet_bench.reports.tables import all_tables  # noqa: E402


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_runs([write_run(tmp_path_factory.mktemp("t"), known_ratio_rows())])


def test_tables_values_and_meta(loaded):
    df, envs = loaded
    tables = {t.name: t for t in all_tables(df, envs)}
    for t in tables.values():
        assert GPU in t.meta and "bfloat16" in t.meta and "2025-01-02" in t.meta and "run-a" in t.meta
    tps = tables["decode_tokens_per_s_6.7b"].df
    assert tps.loc[("paper-like (bmm-softmax)", 8.0), "T=8192"] == pytest.approx(80.0)
    ratio = tables["ratio_throughput_6.7b"].df
    assert ratio.loc[("static (flash-attn)", 8.0), "T=8192"] == pytest.approx(0.8)
    assert tables["ratio_memory_6.7b"].df.loc[("paper-like (bmm-softmax)", 8.0), "T=8192"] == pytest.approx(48 / 14)
    t4 = tables["table4_training"].df
    assert t4.loc[("1.3b", "transformer (bmm-softmax)"), "paper memory (its GB = GiB)"] == 74.8
    assert t4.loc[("1.3b", "transformer (bmm-softmax)"), "device GB"] == 70.0  # no allocator peak in these rows
    assert t4.loc[("1.3b", "transformer (flash-attn)"), "paper wps (8 GPUs)"] == 63965.2
    assert t4.loc[("1.3b", "retnet-chunkwise (torch)"), "tokens/s"] == 70000.0
    status = tables["status_counts"].df
    assert status.loc[("decode", "paper-like (bmm-softmax)"), "oom"] == 1
    assert status.loc[("capacity (80 GiB)", "retnet-recurrent (torch)"), "over_budget"] == 1
    flat = tables["decode_memory_gb_6.7b"].to_csv_frame()
    assert flat.columns[0] == "meta" and "mem_nvml_delta_gb" in tables["decode_memory_gb_6.7b"].note


def test_no_table_cell_is_the_median_of_two_contestants(tmp_path):
    """MHA and GQA-8 rows of one impl and kernel, fp32- and bf16-state RetNet rows, rows with and without Triton
    projections: each its own table line, and the ratio's RetNet side is the fp32-state row (as in the claims)."""
    from reports_fixtures import decode_row

    rows = [decode_row("6.7b", "retnet-recurrent", "triton", 8, 8192, 10.0, 14.0, state_dtype="float32"),
            decode_row("6.7b", "retnet-recurrent", "triton", 8, 8192, 5.0, 12.0, state_dtype="bfloat16"),
            decode_row("6.7b", "static", "sdpa-cudnn", 8, 8192, 20.0, 28.0, n_kv_heads=32),
            decode_row("6.7b", "static", "sdpa-cudnn", 8, 8192, 12.0, 20.0, n_kv_heads=8),
            decode_row("6.7b", "static", "sdpa-cudnn", 8, 8192, 19.0, 28.0, n_kv_heads=32, decode_gemm="triton")]
    df, envs = load_runs([write_run(tmp_path, rows)])
    tables = {t.name: t for t in all_tables(df, envs)}
    tps = tables["decode_tokens_per_s_6.7b"].df["T=8192"]
    assert tps[("static (sdpa-cudnn)", 8.0)] == pytest.approx(400.0)  # MHA alone, not the mean with GQA-8
    assert tps[("static (sdpa-cudnn), 8 KV heads", 8.0)] == pytest.approx(8000 / 12)
    assert tps[("static (sdpa-cudnn), Triton projections", 8.0)] == pytest.approx(8000 / 19)
    assert tps[("retnet-recurrent (triton), bfloat16 state", 8.0)] == pytest.approx(1600.0)
    ratio = tables["ratio_throughput_6.7b"].df["T=8192"]
    assert ratio[("static (sdpa-cudnn)", 8.0)] == pytest.approx(2.0)  # fp32-state RetNet 800 tok/s over 400
    assert ratio[("static (sdpa-cudnn), 8 KV heads", 8.0)] == pytest.approx(1.2)


def test_ratio_tables_pair_like_projections_with_like(tmp_path):
    """RetNet and a baseline both measured with and without the Triton projections: each baseline line is divided
    by RetNet's row with the same projections; a baseline RetNet has no such row for is divided by RetNet's fastest."""
    from reports_fixtures import decode_row

    rows = [decode_row("6.7b", "retnet-recurrent", "triton", 8, 8192, 10.0, 14.0),
            decode_row("6.7b", "retnet-recurrent", "triton", 8, 8192, 9.5, 14.0, decode_gemm="triton"),
            decode_row("6.7b", "static", "sdpa-cudnn", 8, 8192, 20.0, 28.0),
            decode_row("6.7b", "static", "sdpa-cudnn", 8, 8192, 19.0, 28.0, decode_gemm="triton"),
            decode_row("6.7b", "hf", "sdpa", 8, 8192, 40.0, 30.0)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    ratio = {t.name: t for t in all_tables(df, envs)}["ratio_throughput_6.7b"].df["T=8192"]
    assert ratio[("static (sdpa-cudnn)", 8.0)] == pytest.approx(2.0)  # 20 / 10: both cuBLAS
    assert ratio[("static (sdpa-cudnn), Triton projections", 8.0)] == pytest.approx(2.0)  # 19 / 9.5: both Triton
    assert ratio[("hf (sdpa)", 8.0)] == pytest.approx(4.0)  # hf's own F.linear beside RetNet's cuBLAS row
    only_triton = [r for r in rows if not (r["impl"] == "retnet-recurrent" and r["decode_gemm"] is None)]
    df, envs = load_runs([write_run(tmp_path / "b", only_triton)])
    ratio = {t.name: t for t in all_tables(df, envs)}["ratio_throughput_6.7b"].df["T=8192"]
    assert ratio[("hf (sdpa)", 8.0)] == pytest.approx(40 / 9.5)  # no cuBLAS RetNet row: its fastest


def test_op_level_rows_get_a_table_per_model_and_phase(tmp_path):
    """The kernels suite's rows: ms per call per op (kernel) and length, forward / fwd+bwd / decode apart; a point
    that did not run gives no value."""
    from reports_fixtures import row

    def op(impl, kernel, phase, T, ms, status="ok"):
        return row(model="1.3b", arch="op", impl=impl, kernel=kernel, phase=phase, batch_size=1, seq_len=T,
                   ms_median=ms, status=status, suite="kernels")

    rows = [op("attention", "sdpa-cudnn", "op_fwdbwd", 8192, 1.91), op("attention", "sdpa-cudnn", "op_fwdbwd", 32768, 27.9),
            op("retention-chunkwise", "fla", "op_fwdbwd", 8192, 1.95), op("retention-chunkwise", "fla", "op_fwdbwd", 32768, 7.6),
            op("retention-parallel", "torch", "op_fwdbwd", 32768, None, status="oom"),
            op("retention-recurrent", "triton", "op_decode", 8192, 0.072)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    tables = {t.name: t for t in all_tables(df, envs)}
    fb = tables["op_fwdbwd_ms_1.3b"].df
    assert fb.loc[("retention-chunkwise (fla)", 1.0), "T=32768"] == pytest.approx(7.6)
    assert fb.loc[("attention (sdpa-cudnn)", 1.0), "T=8192"] == pytest.approx(1.91)
    assert "retention-parallel (torch)" not in fb.index.get_level_values(0)
    assert tables["op_decode_ms_1.3b"].df.loc[("retention-recurrent (triton)", 1.0), "T=8192"] == pytest.approx(0.072)
    assert "op_fwd_ms_1.3b" not in tables


def test_claims_render(loaded):
    claims = claims_table(*loaded)
    md = render_claims_markdown(claims)
    assert md.splitlines()[0].startswith("| claim | framing | paper | measured | verdict |")
    assert "| 10.00x | holds |" in md and "Verdict rule" in md
    console = Console(width=220, record=True)
    console.print(claims_rich_table(claims))
    text = console.export_text()
    assert "does not hold" in text and "static (flash-attn)" in text


def test_a_cpu_run_prints_no_verdict_in_two_lines(tmp_path):
    from reports_fixtures import decode_row

    from retnet_bench.reports.render import collapsed_lines

    rows = [decode_row("tiny", impl, kernel, b, 64, ms, None, device="cpu", gpu_name=None, mem_rss_peak_gb=0.5)
            for impl, kernel, ms in (("retnet-recurrent", "torch", 2.0), ("paper-like", "bmm-softmax", 3.0))
            for b in (1, 2)]
    claims = claims_table(*load_runs([write_run(tmp_path, rows)]))
    assert not claims["verdict"].isin(["holds", "partly", "does not hold"]).any()
    lines = collapsed_lines(claims)
    assert lines[0] == "No verdict from these rows: not applicable on cpu/tiny: run fig6 on a GPU."
    assert len(lines) == 2 and "not measured" in lines[1]
    md = render_claims_markdown(claims)
    assert "| holds |" not in md and "No verdict" in md


def test_a_contestant_measured_again_is_taken_from_its_latest_run_only():
    """No line mixes two measurements of one contestant: the later run's rows replace the earlier run's (same suite),
    other suites and other contestants are untouched, and an old row without the variant columns matches its
    schema-2 twin (null state_dtype reads as float32 for our RetNet)."""
    import pandas as pd

    from retnet_bench.reports.load import latest_per_point, normalise_rows

    def row(run, ts, impl, batch, state=None, suite="fig6", arch="retnet"):
        return dict(run_id=run, timestamp=ts, suite=suite, model="6.7b", arch=arch, impl=impl, kernel="triton",
                    n_kv_heads=None, state_dtype=state, dtype="bfloat16", world_size=None, phase="decode",
                    batch_size=batch, seq_len=8192, status="ok", tokens_per_s=float(batch))
    df = normalise_rows(pd.DataFrame([
        row("old", "2026-11-28T10:00:00", "r", 2), row("old", "2026-11-28T10:00:01", "r", 8),
        row("new", "2026-11-28T12:00:00", "r", 8, state="float32"),
        row("new", "2026-11-28T12:00:01", "r", 8, state="bfloat16"),
        row("long", "2026-11-28T13:00:00", "r", 1, state="float32", suite="long"),
        row("old", "2026-11-28T10:00:02", "other", 2),
    ]))
    kept, dropped = latest_per_point(df)
    assert dropped == 2
    got = sorted(zip(kept["run_id"], kept["impl"], kept["batch_size"], kept["state_dtype"].fillna("-")))
    assert got == [("long", "r", 1.0, "float32"), ("new", "r", 8.0, "bfloat16"), ("new", "r", 8.0, "float32"),
                   ("old", "other", 2.0, "-")]


def test_prefill_tables_use_the_prefill_suite_and_retnets_fastest_kernel(tmp_path):
    """Prefill tokens/s per (contestant, batch) x length, and RetNet / each Transformer flavour. The `prefill` suite's
    warmed rows are used when present; the single unwarmed prefill a decode point timed is then left out."""
    from reports_fixtures import decode_row

    def pre(impl, kernel, batch, T, tok_s, suite):
        ms = batch * T * 1000.0 / tok_s
        return decode_row("6.7b", impl, kernel, batch, T, ms, phase="prefill", suite=suite, tokens_per_s=tok_s,
                          role="candidate" if impl.startswith("retnet") else "baseline")

    rows = [pre("retnet-recurrent", "fla", 1, 8192, 42000.0, "prefill"),
            pre("retnet-recurrent", "torch", 1, 8192, 20000.0, "prefill"),   # a slower RetNet kernel: not the ratio
            pre("static", "sdpa-cudnn", 1, 8192, 40000.0, "prefill"),
            pre("static", "sdpa-cudnn", 1, 8192, 10000.0, "fig6"),           # unwarmed: ignored beside the suite
            pre("static", "sdpa-cudnn", 1, 16384, 35000.0, "prefill"),
            pre("retnet-recurrent", "fla", 1, 16384, 42000.0, "prefill")]
    df, envs = load_runs([write_run(tmp_path, rows)])
    tables = {t.name: t for t in all_tables(df, envs)}
    tps = tables["prefill_tokens_per_s_6.7b"].df
    assert tps.loc[("static (sdpa-cudnn)", 1), "T=8192"] == pytest.approx(40000.0)
    assert "prefill suite" in tables["prefill_tokens_per_s_6.7b"].note
    ratio = tables["prefill_ratio_6.7b"].df
    assert ratio.loc[("static (sdpa-cudnn)", 1), "T=8192"] == pytest.approx(42000.0 / 40000.0)
    assert ratio.loc[("static (sdpa-cudnn)", 1), "T=16384"] == pytest.approx(42000.0 / 35000.0)


def test_table4_shows_allocator_retries_when_rows_have_them(tmp_path):
    """A training point that ran at the GPU's memory limit says so (cudaMalloc retries, each a device sync)."""
    from reports_fixtures import train_row

    rows = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10000.0, 111.0, mem_torch_peak_gb=114.7,
                      alloc_retries=2),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 11000.0, 138.0, mem_torch_peak_gb=110.7,
                      alloc_retries=0)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    t4 = {t.name: t for t in all_tables(df, envs)}["table4_training"].df
    assert t4.loc[("6.7b", "retnet-chunkwise (fla)"), "alloc retries"] == 2
    assert t4.loc[("6.7b", "transformer (flash-attn)"), "allocator GiB"] == pytest.approx(110.7e9 / 2**30)


def test_table4_puts_the_papers_numbers_beside_rows_of_its_setting_only(tmp_path):
    """The paper's memory and tokens/s are for T=8192: a row at T=256 (the host's time per step) gets none."""
    from reports_fixtures import train_row

    rows = [train_row("1.3b", "retnet-chunkwise", "fla", 1, seq, 40000.0 if seq == 8192 else 1700.0, 30.0)
            for seq in (8192, 256)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    t4 = {t.name: t for t in all_tables(df, envs)}["table4_training"].df.reset_index().set_index("seq_len")
    assert t4.loc[8192, "paper memory (its GB = GiB)"] == pytest.approx(34.5)
    assert pd.isna(t4.loc[256, "paper memory (its GB = GiB)"]) and pd.isna(t4.loc[256, "paper wps (8 GPUs)"])


def test_table4_says_which_rows_timed_no_optimizer_step(tmp_path):
    """The paper's pipeline (torchscale) times forward + backward only: its bar is dotted, and its Table 4 line says
    so, beside the engine's rows that time the whole AdamW step."""
    from reports_fixtures import train_row

    from retnet_bench.suites.contract import FORWARD_BACKWARD_ONLY

    rows = [train_row("1.3b", "torchscale-retnet", "torchscale", 1, 8192, 24351.0, 43.0, notes=FORWARD_BACKWARD_ONLY),
            train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 46608.0, 41.0)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    t4 = {t.name: t for t in all_tables(df, envs)}["table4_training"].df
    labels = list(t4.index.get_level_values("impl (kernel)"))
    assert labels == ["retnet-chunkwise (fla)", f"torchscale-retnet (torchscale), {FORWARD_BACKWARD_ONLY}"]


@pytest.mark.parametrize("variant, suffix", [({"checkpointing": "full"}, "checkpointed"),
                                             ({"checkpointing": "every-8"}, "checkpointed every 8th block"),
                                             ({"checkpointing": "every-2"}, "checkpointed every 2nd block"),
                                             ({"compile": "blocks"}, "compiled")])
def test_checkpointed_or_compiled_training_rows_are_their_own_lines_out_of_figures_and_slower_ones_change_no_claim(
        tmp_path, variant, suffix):
    """A checkpointed step recomputes blocks' forward, a compiled one runs Inductor's blocks: another measurement
    of the same contestant. Table 4 lists it on its own line; the bars draw the plain steps only (before the
    `checkpointing` column a checkpointed row silently replaced the plain one of its contestant); the claims take a
    setting only where it is a side's fastest (test_reports_claims), so slower ones change nothing."""
    from retnet_bench.reports import claims_table
    from retnet_bench.reports.figures import build_figures
    from reports_fixtures import train_row

    plain = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10000.0, 111.0, mem_torch_peak_gb=114.7),
             train_row("6.7b", "transformer", "flash-attn", 1, 8192, 11000.0, 138.0, mem_torch_peak_gb=110.7)]
    # (plain rows as written before the column: null checkpointing reads "none")
    later = "2099-01-01T00:00:00+00:00"  # a newer run: it would supersede the plain rows were it the same point
    ckpt = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 8900.0, 105.0, mem_torch_peak_gb=103.2,
                      timestamp=later, **variant),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 8900.0, 104.0, mem_torch_peak_gb=101.6,
                      timestamp=later, **variant)]
    # the checkpointed rows in a later run of their own: they are another point, so they supersede nothing
    runs = [load_runs([write_run(tmp_path / "a", plain)]),
            load_runs([write_run(tmp_path / "a", plain), write_run(tmp_path / "b", ckpt, run_id="run-b")])]
    t4 = {t.name: t for t in all_tables(*runs[1])}["table4_training"].df
    assert t4.loc[("6.7b", "retnet-chunkwise (fla)"), "tokens/s"] == pytest.approx(10000.0)
    assert t4.loc[("6.7b", f"retnet-chunkwise (fla), {suffix}"), "tokens/s"] == pytest.approx(8900.0)
    bars = [build_figures(*r)[0]["table4_training_bars"] for r in runs]
    assert [sorted(p.get_height() for p in f.axes[0].patches) for f in bars][0] == \
        [sorted(p.get_height() for p in f.axes[0].patches) for f in bars][1]
    a, b = (claims_table(*r) for r in runs)
    assert a["measured_value"].round(6).fillna(-1).tolist() == b["measured_value"].round(6).fillna(-1).tolist()


def test_tensor_parallel_training_rows_are_labelled_and_named_in_claims(tmp_path):
    """The paper trained 6.7B and 13B with tensor parallelism: such rows are their own lines in Table 4, their own
    points in the claims (which say so), and not drawn as if they were the plain FSDP step."""
    from retnet_bench.reports import claims_table
    from retnet_bench.reports.figures import build_figures
    from reports_fixtures import train_row

    fsdp = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 40000.0, 60.0, world_size=4,
                      tokens_per_s_per_gpu=10000.0, mem_torch_peak_gb=55.0),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 40000.0, 60.0, world_size=4,
                      tokens_per_s_per_gpu=10000.0, mem_torch_peak_gb=50.0)]
    tp = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 48000.0, 50.0, world_size=4, tensor_parallel=2,
                    tokens_per_s_per_gpu=12000.0, mem_torch_peak_gb=45.0)]
    df, envs = load_runs([write_run(tmp_path, fsdp + tp)])
    t4 = {t.name: t for t in all_tables(df, envs)}["table4_training"].df
    assert t4.loc[("6.7b", "retnet-chunkwise (fla), TP x2, 4 GPUs"), "tokens/s"] == pytest.approx(48000.0)
    assert t4.loc[("6.7b", "retnet-chunkwise (fla), 4 GPUs"), "tokens/s"] == pytest.approx(40000.0)
    bars = build_figures(df, envs)[0]["table4_training_bars"]
    assert 48000.0 not in [round(p.get_height()) for ax in bars.axes for p in ax.patches]
    claims = claims_table(df, envs)
    row = claims[claims["claim"].str.contains("throughput vs Transformer\\+FlashAttention \\(6.7b")].iloc[0]
    assert row["measured_value"] == pytest.approx(1.2) and "RetNet tensor parallel x2" in row["conditions"]


def test_joules_per_token_shows_beside_tokens_per_s_and_only_where_measured(tmp_path):
    """Decode, prefill and Table 4 show J/token when rows carry it; runs without an energy counter (all None) get no
    J/token table or column, and a point without a reading gets no number (left out of a pivot, a dash in Table 4)."""
    from reports_fixtures import decode_row, train_row

    from retnet_bench.reports.render import df_to_markdown

    measured = [decode_row("6.7b", "retnet-recurrent", "fla", 8, 8192, 10.0, 14.0, joules_per_token=0.25),
                decode_row("6.7b", "static", "sdpa-cudnn", 8, 8192, 20.0, 28.0, joules_per_token=None),
                decode_row("6.7b", "static", "sdpa-cudnn", 8, 8192, 900.0, phase="prefill", joules_per_token=0.002),
                train_row("1.3b", "retnet-chunkwise", "fla", 4, 8192, 70000.0, 30.0, joules_per_token=0.01),
                train_row("1.3b", "transformer", "sdpa-cudnn", 4, 8192, 72000.0, 31.0)]
    df, envs = load_runs([write_run(tmp_path / "on", measured)])
    tables = {t.name: t for t in all_tables(df, envs)}
    jpt = tables["decode_joules_per_token_6.7b"]
    assert jpt.df.loc[("retnet-recurrent (fla)", 8), "T=8192"] == pytest.approx(0.25)
    assert "NVML" in jpt.note and ("static (sdpa-cudnn)", 8) not in jpt.df.index  # static's point has no reading
    assert tables["prefill_joules_per_token_6.7b"].df.loc[("static (sdpa-cudnn)", 8), "T=8192"] == 0.002
    t4 = tables["table4_training"]
    assert t4.df.loc[("1.3b", "retnet-chunkwise (fla)"), "J/token"] == 0.01 and "J/token" in t4.note
    assert list(t4.df.columns).index("J/token") == list(t4.df.columns).index("tokens/s") + 1
    assert "| 72000 | — |" in df_to_markdown(t4.df)  # the Transformer's step has no reading

    unmeasured = [dict(r, joules_per_token=None) for r in measured]
    df, envs = load_runs([write_run(tmp_path / "off", unmeasured)])
    tables = {t.name: t for t in all_tables(df, envs)}
    assert not [name for name in tables if "joules" in name]
    assert "J/token" not in tables["table4_training"].df.columns and "J/token" not in tables["table4_training"].note
    assert "decode_tokens_per_s_6.7b" in tables and "prefill_tokens_per_s_6.7b" in tables
