"""The report's table of one training point in several runs: the pairs, the ratios, the range, and what is left out."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reports_fixtures import train_row, write_run  # noqa: E402

from retnet_bench.reports import load_runs  # noqa: E402
from retnet_bench.reports.contestants import roster_of  # noqa: E402
from retnet_bench.reports.repeats import training_pairs, training_repeats  # noqa: E402
from retnet_bench.reports.report import write_report  # noqa: E402
from retnet_bench.suites.contract import FORWARD_BACKWARD_ONLY  # noqa: E402


def _run(root: Path, run_id: str, retnet: float, base: float, stamp: str, boot: str | None = None, **extra) -> Path:
    rows = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, retnet, 40.0, timestamp=stamp, world_size=1,
                      **extra),
            train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, base, 38.0, timestamp=stamp, world_size=1,
                      n_kv_heads=16, **extra)]
    return write_run(root, rows, run_id, env={"boot_id": boot} if boot else None)


def test_one_line_per_run_with_its_own_ratio_and_the_range(tmp_path):
    runs = [_run(tmp_path, "a", 46000, 45000, "2025-01-02T03:00:00+00:00", boot="aaaa1111-x"),
            _run(tmp_path, "b", 39000, 45000, "2025-01-02T04:00:00+00:00", boot="aaaa1111-x"),
            _run(tmp_path, "c", 45500, 44500, "2025-01-02T05:00:00+00:00")]
    df, envs = load_runs(runs, latest=False)
    pairs = training_pairs(df, roster_of(df, envs))
    assert list(pairs["run_id"]) == ["a", "b", "c"]  # in time order
    assert list(pairs["ratio"]) == pytest.approx([46000 / 45000, 39000 / 45000, 45500 / 44500])
    table = training_repeats(df, envs)
    frame = table.df.reset_index()
    assert list(frame["RetNet / Transformer"]) == [1.022, 0.867, 1.022]
    assert list(frame["machine (boot)"]) == ["aaaa1111", "aaaa1111", ""]
    assert "0.87-1.02x over 3 runs (median 1.02x)" in table.note
    # the latest-run loader keeps only run c: the table needs every run's rows
    latest, _ = load_runs(runs)
    assert training_repeats(latest, envs) is None
    assert "RetNet T=256 step ms" not in frame and "T=256 step ms:" not in table.note  # runs from before the column


def test_each_run_shows_its_host_time_per_step_where_the_rows_have_it(tmp_path):
    """short_step_ms per side and run: a slow RetNet draw beside a slow host (its T=256 step near the 8k step)."""
    runs = [_run(tmp_path, "a", 46000, 45000, "2025-01-02T03:00:00+00:00", short_step_ms=110.0),
            _run(tmp_path, "b", 39000, 45000, "2025-01-02T04:00:00+00:00", short_step_ms=205.0)]
    df, envs = load_runs(runs, latest=False)
    table = training_repeats(df, envs)
    frame = table.df.reset_index()
    assert list(frame["RetNet T=256 step ms"]) == [110.0, 205.0]
    assert list(frame["Transformer T=256 step ms"]) == [110.0, 205.0]
    assert "tells a slow host from a slow GPU" in table.note


def test_a_point_in_one_run_only_and_steps_without_an_optimizer_are_left_out(tmp_path):
    once = _run(tmp_path, "a", 46000, 45000, "2025-01-02T03:00:00+00:00")
    paper = [_run(tmp_path, f"p{i}", 20000, 10000, f"2025-01-02T0{4 + i}:00:00+00:00",
                  notes=f"torchscale's pipeline, {FORWARD_BACKWARD_ONLY}") for i in range(2)]
    df, envs = load_runs([once, *paper], latest=False)
    assert training_pairs(df, roster_of(df, envs)).empty and training_repeats(df, envs) is None


def test_pairs_stay_within_a_run_and_a_point(tmp_path):
    """A RetNet row is never divided by another run's Transformer, nor by another length's: three runs, each with one
    side at 8k missing or at another length, so any cross pairing would survive the two-runs filter."""
    def r(impl, kernel, seq, tps):
        return train_row("1.3b", impl, kernel, 1, seq, tps, 40.0, world_size=1)

    a = write_run(tmp_path, [r("retnet-chunkwise", "fla", 8192, 40000), r("transformer", "sdpa-cudnn", 4096, 80000)],
                  "a")
    b = write_run(tmp_path, [r("transformer", "sdpa-cudnn", 8192, 44000), r("retnet-chunkwise", "fla", 4096, 70000)],
                  "b")
    c = write_run(tmp_path, [r("retnet-chunkwise", "fla", 8192, 41000), r("transformer", "sdpa-cudnn", 4096, 81000)],
                  "c")
    df, envs = load_runs([a, b, c], latest=False)
    assert training_pairs(df, roster_of(df, envs)).empty


def test_other_gpus_kv_heads_variants_and_retries_are_kept_apart(tmp_path):
    """Two GPUs, a GQA baseline, a compiled step: each its own point or pair; a retried point in one run counts once
    (its latest row), and a row without tokens/s is left out."""
    runs = [_run(tmp_path, "a", 46000, 45000, "2025-01-02T03:00:00+00:00"),
            _run(tmp_path, "b", 44000, 45000, "2025-01-02T04:00:00+00:00")]
    retry = train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 10000, 40.0, world_size=1,
                      timestamp="2025-01-02T03:30:00+00:00")  # b's retry of its RetNet point, later than b's first
    broken = train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, 1.0, 38.0, world_size=1, n_kv_heads=16,
                       timestamp="2025-01-02T04:30:00+00:00")
    broken["tokens_per_s"] = None
    b_rows = [json.loads(x) for x in (runs[1] / "rows.jsonl").read_text().splitlines()]
    write_run(tmp_path, b_rows + [{**retry, "timestamp": "2025-01-02T04:10:00+00:00"}, broken], "b")
    other = [_run(tmp_path, f"g{i}", 30000, 20000, "2025-01-02T05:00:00+00:00", gpu_name="Other GPU")
             for i in range(2)]
    gqa = [write_run(tmp_path, [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 46000, 40.0, world_size=1),
                                train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, 50000, 30.0, world_size=1,
                                          n_kv_heads=4)], f"q{i}") for i in range(2)]
    compiled = [_run(tmp_path, f"c{i}", 30000, 40000, "2025-01-02T06:00:00+00:00", compile="blocks")
                for i in range(2)]
    df, envs = load_runs(runs + other + gqa + compiled, latest=False)
    table = training_repeats(df, envs)
    assert table.note.count("over 2 runs") == 4, table.note  # H200-like MHA, other GPU, GQA, compiled
    frame = table.df.reset_index()
    b_line = frame[frame["run"] == "b"]
    assert len(b_line) == 1 and b_line["RetNet tokens/s"].item() == 10000  # the retry, once
    assert b_line["Transformer tokens/s"].item() == 45000  # the row without tokens/s is not the latest kept
    assert any("4 KV heads" in p for p in frame["pair"]) and any("compiled" in p for p in frame["point"])
    assert any("Other GPU" in p for p in frame["point"])


def test_the_report_shows_the_table(tmp_path):
    runs = [_run(tmp_path / "runs", r, t, 45000, f"2025-01-02T0{i + 3}:00:00+00:00")
            for i, (r, t) in enumerate([("a", 46000), ("b", 40000)])]
    paths = write_report(runs, tmp_path / "report", guard_reference=False)
    md = Path(paths["md"]).read_text() if "md" in paths else (tmp_path / "report" / "report.md").read_text()
    assert "one point in several runs" in md and "| 0.889 |" in md and "| 1.02 |" in md
    assert (tmp_path / "report" / "tables" / "training_repeats.csv").exists()


def test_runs_given_with_repeats_from_only_add_lines_to_that_table(tmp_path):
    """`report RUN --repeats-from OTHER`: Table 4 and the claims read RUN only; OTHER adds its pair to the run-to-run
    table. A missing --repeats-from folder is one line and exit 2."""
    from typer.testing import CliRunner

    from retnet_bench.cli import app

    main = _run(tmp_path / "runs", "main", 46000, 45000, "2025-01-02T03:00:00+00:00")
    later = _run(tmp_path / "runs", "later", 40000, 45000, "2025-01-02T04:00:00+00:00")  # newer: would win Table 4
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["report", str(main), "--repeats-from", str(later), "--repeats-from", str(main),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    table4 = (out / "tables" / "table4_training.csv").read_text()
    assert "46000" in table4 and "40000" not in table4
    repeats = (out / "tables" / "training_repeats.csv").read_text()
    assert "main" in repeats and "later" in repeats and repeats.count("\n") == 3  # header + 2 lines: main once
    assert "main,the report," in repeats and "later,this table," in repeats
    md = (out / "report.md").read_text()
    runs = md[md.index("## Runs"):]
    assert runs.index("- main:") < runs.index("--repeats-from") < runs.index("- later:")
    bad = CliRunner().invoke(app, ["report", str(main), "--repeats-from", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 2 and "run folder not found" in bad.output and "Traceback" not in bad.output


def test_two_suites_at_one_point_are_kept_apart(tmp_path):
    """The same model, length and batch in two suites of one run: two pairs, never RetNet of one suite over the
    Transformer of the other."""
    def run(run_id, ret, base):
        rows = []
        for suite, scale in (("table4", 1.0), ("long", 2.0)):
            rows += [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, ret * scale, 40.0, world_size=1, suite=suite),
                     train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, base, 38.0, world_size=1, suite=suite,
                               n_kv_heads=16)]
        return write_run(tmp_path, rows, run_id)

    df, envs = load_runs([run("a", 40000, 40000), run("b", 44000, 40000)], latest=False)
    pairs = training_pairs(df, roster_of(df, envs))
    assert len(pairs) == 4
    assert sorted(pairs["ratio"].round(2)) == [1.0, 1.1, 2.0, 2.2]
