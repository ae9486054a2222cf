"""The report's table of one training point in several runs: the pairs, the ratios, the range, and what is left out."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reports_fixtures import train_row, write_run  # noqa: E402

from retnet_bench.reports import load_runs  # noqa: E402
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
    pairs = training_pairs(df)
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


def test_a_point_in_one_run_only_and_steps_without_an_optimizer_are_left_out(tmp_path):
    once = _run(tmp_path, "a", 46000, 45000, "2025-01-02T03:00:00+00:00")
    paper = [_run(tmp_path, f"p{i}", 20000, 10000, f"2025-01-02T0{4 + i}:00:00+00:00",
                  notes=f"torchscale's pipeline, {FORWARD_BACKWARD_ONLY}") for i in range(2)]
    df, envs = load_runs([once, *paper], latest=False)
    assert training_pairs(df).empty and training_repeats(df, envs) is None


def test_pairs_stay_within_a_run_and_a_point(tmp_path):
    """A RetNet row is never divided by another run's Transformer, nor by another length's."""
    a = write_run(tmp_path, [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 40000, 40.0, world_size=1),
                             train_row("1.3b", "transformer", "sdpa-cudnn", 1, 4096, 80000, 38.0, world_size=1)], "a")
    b = write_run(tmp_path, [train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, 44000, 38.0, world_size=1)], "b")
    df, _ = load_runs([a, b], latest=False)
    assert training_pairs(df).empty


def test_the_report_shows_the_table(tmp_path):
    runs = [_run(tmp_path / "runs", r, t, 45000, f"2025-01-02T0{i + 3}:00:00+00:00")
            for i, (r, t) in enumerate([("a", 46000), ("b", 40000)])]
    paths = write_report(runs, tmp_path / "report", guard_reference=False)
    md = Path(paths["md"]).read_text() if "md" in paths else (tmp_path / "report" / "report.md").read_text()
    assert "one point in several runs" in md and "| 0.889 |" in md and "| 1.02 |" in md
    assert (tmp_path / "report" / "tables" / "training_repeats.csv").exists()
