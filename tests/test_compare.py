"""retnet_bench.reports.compare on synthetic run folders (no torch, no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from retnet_bench.reports.compare import (
    CompareInputError, compare_deterministic, compare_runs, parse_threshold, regression_lines, render_github,
    render_rich, to_github, to_json, write_github,
)


def decode_row(ms: float = 10.0, spread: float = 0.1, batch: int = 8, **overrides) -> dict:
    """A full decode row at step time ``ms`` with p10/p90 at ms -/+ spread; throughput follows from ms."""
    row = dict(
        run_id="r", suite="decode", model="tiny", arch="retnet", impl="retnet-recurrent", kernel="torch",
        phase="decode", batch_size=batch, seq_len=1024, chunk_size=None, dtype="bfloat16", status="ok", error=None,
        ms_median=ms, ms_p10=ms - spread, ms_p90=ms + spread, n_repeats=50, tokens_per_s=batch / ms * 1e3,
        ms_per_token=ms, mem_nvml_peak_gb=10.0, mem_nvml_delta_gb=9.0, mem_torch_peak_gb=8.0,
        mem_torch_reserved_gb=8.5, mem_rss_peak_gb=None, mem_analytic_gb=7.5, weights_gb=7.0,
        bytes_per_step=7.5e9, flops_per_token=2.6e9, achieved_gbps=7.5e9 / (ms * 1e-3) / 1e9, pct_peak_bw=None,
        n_params=1_340_000_000, capacity_budget_gib=None, device="cuda", gpu_name="NVIDIA H200", notes=None,
        timestamp="2025-01-01T00:00:00",
    )
    row.update(overrides)
    return row


def write_run(folder: Path, rows: list[dict], gpu_name: str | None = "NVIDIA H200", schema_version: int = 1,
              env: bool = True, runtime_env: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if env:
        extra = {} if runtime_env is None else {"runtime_env": runtime_env}
        (folder / "env.json").write_text(json.dumps({"schema_version": schema_version, "gpu_name": gpu_name,
                                                     **extra}))
    return folder


def pair(tmp_path: Path, base_rows: list[dict], head_rows: list[dict], **head_env) -> tuple[Path, Path]:
    return write_run(tmp_path / "base", base_rows), write_run(tmp_path / "head", head_rows, **head_env)


def status_of(result, metric: str, point_substring: str = "") -> str:
    p = result.points
    sel = p[(p["metric"] == metric) & p["point"].str.contains(point_substring, regex=False)]
    assert len(sel) == 1, sel
    return sel["status"].iloc[0]


def test_throughput_drop_with_separated_ranges_regresses(tmp_path):
    base, head = pair(tmp_path, [decode_row(ms=10.0)], [decode_row(ms=12.5)])  # tokens/s -20%
    result = compare_runs(base, head)
    assert result.regressed and result.exit_code == 1
    assert status_of(result, "tokens_per_s") == "regressed"
    assert status_of(result, "ms_median") == "regressed"
    row = result.points[result.points["metric"] == "tokens_per_s"].iloc[0]
    assert row["change_pct"] == pytest.approx(-20.0)
    assert row["lo_head"] == pytest.approx(8 / 12.6 * 1e3) and row["hi_head"] == pytest.approx(8 / 12.4 * 1e3)
    assert status_of(result, "mem_nvml_peak_gb") == "ok"


def test_small_change_is_ok(tmp_path):
    base, head = pair(tmp_path, [decode_row(ms=10.0)], [decode_row(ms=10.2)])  # 2% slower, ranges separated
    result = compare_runs(base, head)
    assert result.exit_code == 0
    assert set(result.points["status"]) == {"ok"}


def test_large_drop_with_overlapping_ranges_is_noisy(tmp_path):
    base, head = pair(tmp_path, [decode_row(ms=10.0, spread=3.0)], [decode_row(ms=12.5, spread=3.0)])
    result = compare_runs(base, head)
    assert result.exit_code == 0
    assert status_of(result, "tokens_per_s") == "noisy"
    assert status_of(result, "ms_median") == "noisy"
    assert bool(result.points.loc[result.points["metric"] == "tokens_per_s", "ranges_overlap"].iloc[0]) is True


def test_improvement_is_not_a_regression(tmp_path):
    base, head = pair(tmp_path, [decode_row(ms=10.0)], [decode_row(ms=8.0)])
    result = compare_runs(base, head)
    assert result.exit_code == 0
    assert status_of(result, "tokens_per_s") == "improved" and status_of(result, "ms_median") == "improved"


def test_memory_growth_regresses_and_per_metric_threshold(tmp_path):
    base, head = pair(tmp_path, [decode_row()], [decode_row(mem_nvml_peak_gb=11.0)])  # +10%, no range
    result = compare_runs(base, head)
    assert result.exit_code == 1 and status_of(result, "mem_nvml_peak_gb") == "regressed"
    assert compare_runs(base, head, metric_thresholds={"mem_nvml_peak_gb": 0.2}).exit_code == 0
    assert compare_runs(base, head, metric_thresholds={"mem_*": 0.2}).exit_code == 0

    base2, head2 = pair(tmp_path / "small", [decode_row()], [decode_row(mem_nvml_peak_gb=10.3)])  # +3%
    assert compare_runs(base2, head2).exit_code == 0
    tight = compare_runs(base2, head2, metric_thresholds={"mem_nvml_peak_gb": 0.02})
    assert tight.exit_code == 1 and status_of(tight, "mem_nvml_peak_gb") == "regressed"


def test_memory_shrink_is_improved(tmp_path):
    base, head = pair(tmp_path, [decode_row()], [decode_row(mem_torch_peak_gb=6.0)])
    result = compare_runs(base, head)
    assert result.exit_code == 0 and status_of(result, "mem_torch_peak_gb") == "improved"


@pytest.mark.parametrize("head_env", [{"gpu_name": "NVIDIA A100"}, {"schema_version": 2}, {"env": False}])
def test_env_mismatch_is_an_input_error_unless_allowed(tmp_path, head_env):
    base, head = pair(tmp_path, [decode_row()], [decode_row()], **head_env)
    with pytest.raises(CompareInputError) as info:
        compare_runs(base, head)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
    result = compare_runs(base, head, allow_mismatch=True)
    assert result.exit_code == 0 and len(result.warnings) == 1


def test_a_different_allocator_setting_is_an_env_mismatch(tmp_path):
    """The caching allocator's settings change what a training step measures (17% at 6.7B on the H200): two runs
    that differ in them are not compared unless allowed. Variables outside the list, and runs written before env.json
    recorded `runtime_env`, do not count."""
    alloc = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    base = write_run(tmp_path / "base", [decode_row()], runtime_env={"OMP_NUM_THREADS": "8"})
    head = write_run(tmp_path / "head", [decode_row()], runtime_env=alloc)
    with pytest.raises(CompareInputError, match="different PYTORCH_CUDA_ALLOC_CONF: base '\\(unset\\)', head "
                                                "'expandable_segments:True'"):
        compare_runs(base, head)
    assert len(compare_runs(base, head, allow_mismatch=True).warnings) == 1
    same = write_run(tmp_path / "same", [decode_row()], runtime_env=dict(alloc, OMP_NUM_THREADS="4"))
    assert compare_runs(head, same).warnings == []
    old = write_run(tmp_path / "old", [decode_row()])
    assert compare_runs(old, head).warnings == []


def test_any_fla_switch_is_an_env_mismatch(tmp_path):
    """fla's switches change what a step measures (its dispatch the host time, FLA_USE_FAST_OPS its kernels' math):
    runs that differ in any FLA_* variable are not compared unless allowed; other variables still do not count."""
    base = write_run(tmp_path / "base", [decode_row()], runtime_env={"OMP_NUM_THREADS": "8"})
    head = write_run(tmp_path / "head", [decode_row()], runtime_env={"FLA_DISABLE_BACKEND_DISPATCH": "1"})
    with pytest.raises(CompareInputError, match="different FLA_DISABLE_BACKEND_DISPATCH: base '\\(unset\\)'"):
        compare_runs(base, head)
    fast = write_run(tmp_path / "fast", [decode_row()], runtime_env={"FLA_DISABLE_BACKEND_DISPATCH": "1",
                                                                      "FLA_USE_FAST_OPS": "1"})
    problems = compare_runs(head, fast, allow_mismatch=True).warnings
    assert problems == ["different FLA_USE_FAST_OPS: base '(unset)', head '1'"]


def test_runtime_env_records_fla_switches_and_the_named_variables(monkeypatch):
    from retnet_bench.suites.env import runtime_env

    monkeypatch.setenv("FLA_USE_FAST_OPS", "1")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("NOT_FLA_X", "1")
    got = runtime_env()
    assert got["FLA_USE_FAST_OPS"] == "1" and got["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "NOT_FLA_X" not in got


def test_nccl_variables_are_recorded_but_two_runs_differing_in_them_still_compare(tmp_path, monkeypatch):
    """NCCL_* choose how multi-GPU rows' collectives run, so env.json keeps them; one-GPU runs, where NCCL does
    nothing, must still compare when one was made with NCCL_NVLS_ENABLE=0 set and the other without."""
    from retnet_bench.suites.env import runtime_env

    monkeypatch.setenv("NCCL_PROTO", "Simple")
    monkeypatch.setenv("NVSHMEM_DISABLE_NVLS", "1")
    got = runtime_env()
    assert got["NCCL_PROTO"] == "Simple" and got["NVSHMEM_DISABLE_NVLS"] == "1"
    base = write_run(tmp_path / "base", [decode_row()], runtime_env={"NCCL_NVLS_ENABLE": "0"})
    head = write_run(tmp_path / "head", [decode_row()], runtime_env={})
    assert compare_runs(base, head).warnings == []


def test_bad_input_raises_input_error(tmp_path):
    good = write_run(tmp_path / "good", [decode_row()])
    with pytest.raises(CompareInputError, match="not found"):
        compare_runs(good, tmp_path / "nope")
    broken = write_run(tmp_path / "broken", [decode_row()])
    (broken / "rows.jsonl").write_text("{not json\n" + json.dumps(decode_row()) + "\n")
    with pytest.raises(CompareInputError, match=r"rows.jsonl:1"):
        compare_runs(good, broken)
    dup = write_run(tmp_path / "dup", [decode_row(), decode_row(ms=11.0)])
    with pytest.raises(CompareInputError, match="more than once"):
        compare_runs(good, dup)
    with pytest.raises(CompareInputError, match="unknown metric"):
        compare_runs(good, good, metric_thresholds={"mem_nvm_peak_gb": 0.02})
    with pytest.raises(CompareInputError):
        compare_runs(good, good, threshold=-0.1)


def test_missing_and_new_points_are_listed(tmp_path):
    base, head = pair(tmp_path, [decode_row(batch=1), decode_row(batch=8)], [decode_row(batch=8),
                                                                             decode_row(batch=32)])
    result = compare_runs(base, head)
    assert list(result.missing["batch_size"]) == [1] and list(result.new["batch_size"]) == [32]
    assert set(result.points["batch_size"]) == {8}
    assert result.exit_code == 0


def test_non_ok_rows_are_listed_not_compared(tmp_path):
    oom = decode_row(batch=64, status="oom", error="CUDA out of memory", ms_median=None, tokens_per_s=None)
    base, head = pair(tmp_path, [decode_row(batch=8), decode_row(batch=64, ms=1.0)], [decode_row(batch=8), oom])
    result = compare_runs(base, head)
    assert len(result.not_compared) == 1
    reason = result.not_compared["reason"].iloc[0]
    assert "head oom" in reason and "CUDA out of memory" in reason
    assert set(result.points["batch_size"]) == {8}
    # not compared metric by metric, but a point that was ok and now OOMs fails the gate
    assert result.exit_code == 1 and list(result.broken["batch_size"]) == [64]


def test_chunk_sweep_points_are_matched_by_chunk_size(tmp_path):
    rows = [decode_row(chunk_size=64, ms=10.0), decode_row(chunk_size=128, ms=20.0)]
    head_rows = [decode_row(chunk_size=64, ms=10.0), decode_row(chunk_size=128, ms=30.0)]
    result = compare_runs(*pair(tmp_path, rows, head_rows))
    assert status_of(result, "ms_median", "chunk64") == "ok"
    assert status_of(result, "ms_median", "chunk128") == "regressed"


def test_changed_deterministic_column_is_flagged_not_regressed(tmp_path):
    base, head = pair(tmp_path, [decode_row()], [decode_row(n_params=1_340_000_001)])
    result = compare_runs(base, head)
    assert status_of(result, "n_params") == "changed-deterministic"
    assert status_of(result, "bytes_per_step") == "ok"
    assert result.exit_code == 0


def test_github_json_has_an_entry_per_compared_point(tmp_path):
    base_rows = [decode_row(batch=b) for b in (1, 8)] + [decode_row(batch=4, ms=5.0)]
    head_rows = [decode_row(batch=b, ms=11.0) for b in (1, 8)] + [decode_row(batch=16)]
    result = compare_runs(*pair(tmp_path, base_rows, head_rows))
    bigger, smaller = json.loads(to_github(result, "bigger")), json.loads(to_github(result, "smaller"))
    for entry in bigger + smaller:
        assert isinstance(entry["name"], str) and isinstance(entry["unit"], str)
        assert isinstance(entry["value"], float)
    by_name = {e["name"]: e for e in bigger + smaller}
    assert len(by_name) == len(bigger) + len(smaller)  # names are unique
    measured = result.points[result.points["direction"] != "exact"]
    assert len(measured) > 0
    for _, p in measured.iterrows():
        entry = by_name[f"{p['point']}/{p['metric']}"]
        assert entry["value"] == pytest.approx(p["value_head"]) and entry["unit"] == p["unit"]
        assert entry in (bigger if p["direction"] == "higher" else smaller)
    assert {e["name"].rsplit("/", 1)[1] for e in bigger} == {"tokens_per_s", "achieved_gbps"}
    assert any("/b16/" in name for name in by_name)  # new head points are tracked too
    assert not any(name.endswith("/n_params") for name in by_name)

    written = write_github(result, tmp_path / "bench")
    assert json.loads(written["customBiggerIsBetter"].read_text()) == bigger
    with pytest.raises(ValueError):
        to_github(result, "sideways")


def test_json_and_rich_outputs(tmp_path):
    base, head = pair(tmp_path, [decode_row(), decode_row(batch=2)], [decode_row(ms=12.5), decode_row(batch=4)])
    result = compare_runs(base, head)
    doc = json.loads(to_json(result))
    assert doc["regressed"] is True and doc["exit_code"] == 1
    assert {p["status"] for p in doc["points"]} >= {"regressed", "ok"}
    assert len(doc["points"]) == len(result.points) and len(doc["missing"]) == 1 and len(doc["new"]) == 1

    console = Console(record=True, width=250)
    console.print(render_rich(result))
    text = console.export_text()
    assert "REGRESSION" in text and "regressed" in text and "tokens_per_s" in text
    assert "Unmatched points" in text


def test_compare_deterministic(tmp_path):
    reference = write_run(tmp_path / "ref", [decode_row(batch=1), decode_row(batch=8)])
    same_but_slower = write_run(tmp_path / "a", [decode_row(batch=1, ms=50.0), decode_row(batch=8, ms=3.0)])
    assert compare_deterministic(reference, same_but_slower) == []  # CPU timings never fail the gate

    changed = write_run(tmp_path / "b", [decode_row(batch=1, bytes_per_step=7.6e9), decode_row(batch=8)])
    mismatches = compare_deterministic(reference, changed)
    assert len(mismatches) == 1 and "bytes_per_step" in mismatches[0] and "/b1/" in mismatches[0]

    dropped = write_run(tmp_path / "c", [decode_row(batch=1, status="error", error="boom")])
    mismatches = compare_deterministic(reference, dropped)
    assert any("only in base" in m and "/b8/" in m for m in mismatches)
    assert any("status" in m for m in mismatches)


def test_parse_threshold():
    assert parse_threshold("5%") == pytest.approx(0.05)
    assert parse_threshold("0.02") == pytest.approx(0.02)
    for bad in ("5", "abc", "-1%"):
        with pytest.raises(CompareInputError):
            parse_threshold(bad)


def test_point_that_starts_failing_is_a_regression(tmp_path):
    import json

    from retnet_bench.reports.compare import compare_runs

    def write(name, status):
        d = tmp_path / name
        d.mkdir()
        (d / "env.json").write_text(json.dumps({"schema_version": 1, "gpu_name": "G"}))
        row = dict(suite="s", model="tiny", arch="retnet", impl="retnet-recurrent", kernel="torch", phase="decode",
                   batch_size=1, seq_len=8, dtype="float32", status=status, error=None if status == "ok" else "OOM",
                   ms_median=1.0, ms_p10=0.9, ms_p90=1.1, tokens_per_s=1000.0)
        (d / "rows.jsonl").write_text(json.dumps(row) + "\n")
        return d

    result = compare_runs(write("base", "ok"), write("head", "oom"))
    assert result.exit_code == 1 and len(result.broken) == 1


def test_capacity_points_match_without_their_batch(tmp_path):
    import json

    from retnet_bench.reports.compare import compare_runs

    def write(name, batch, tps):
        d = tmp_path / name
        d.mkdir()
        (d / "env.json").write_text(json.dumps({"schema_version": 1, "gpu_name": "G"}))
        common = dict(suite="capacity", model="6.7b", arch="transformer", impl="static", kernel="sdpa-cudnn",
                      phase="capacity", seq_len=8192, dtype="bfloat16", capacity_budget_gib=80.0)
        rows = [dict(common, batch_size=batch + 3, status="over_budget", error="too big"),
                dict(common, batch_size=batch, status="ok", ms_median=10.0, ms_p10=9.9, ms_p90=10.1,
                     tokens_per_s=tps)]
        (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d

    result = compare_runs(write("base", 15, 1500.0), write("head", 14, 1400.0))
    assert result.missing.empty and result.new.empty
    tps = result.points[result.points["metric"] == "tokens_per_s"]
    assert len(tps) == 1 and tps["status"].iloc[0] == "regressed"


def test_a_capacity_budget_of_older_rows_reads_in_gib(tmp_path):
    """Rows before capacity_budget_gib carried capacity_budget_gb, 1e9-byte GB: their 80 GB is 74.5 GiB, so they
    are not matched with an 80 GiB search, and the reports say what the budget was."""
    import json

    from retnet_bench.reports import load_runs
    from retnet_bench.reports.compare import compare_runs

    def write(name, budget):
        d = tmp_path / name
        d.mkdir()
        (d / "env.json").write_text(json.dumps({"schema_version": 1, "gpu_name": "G"}))
        row = dict(suite="capacity", model="6.7b", arch="transformer", impl="static", kernel="sdpa-cudnn",
                   phase="capacity", seq_len=8192, dtype="bfloat16", batch_size=15, status="ok", ms_median=10.0,
                   tokens_per_s=1500.0, **budget)
        (d / "rows.jsonl").write_text(json.dumps(row) + "\n")
        return d

    old, new = write("old", {"capacity_budget_gb": 80.0}), write("new", {"capacity_budget_gib": 80.0})
    assert load_runs([old])[0]["capacity_budget_gib"].iloc[0] == pytest.approx(80e9 / 2**30)
    assert load_runs([new])[0]["capacity_budget_gib"].iloc[0] == 80.0
    with pytest.raises(CompareInputError, match="capacity_budget_gib"):
        compare_runs(old, new)
    assert "budget74.5058GiB" in str(list(compare_runs(old, old).points["point"]))


def test_torn_last_line_of_a_crashed_run_is_compared(tmp_path, capsys):
    base = write_run(tmp_path / "base", [decode_row(batch=1), decode_row(batch=8)])
    head = write_run(tmp_path / "head", [decode_row(batch=1), decode_row(batch=8)])
    with open(head / "rows.jsonl", "a") as f:
        f.write(json.dumps(decode_row(batch=16))[:40])  # the run died mid-write
    result = compare_runs(base, head)
    assert result.exit_code == 0 and set(result.points["batch_size"]) == {1, 8}
    assert "half-written last line" in capsys.readouterr().err


@pytest.mark.parametrize("thin", ["one_repeat", "no_spread"])
def test_points_without_a_noise_estimate_need_a_larger_change(tmp_path, thin):
    kw = {"n_repeats": 1} if thin == "one_repeat" else {"spread": 0.0}
    # +10% slower: beyond 5% but within 3 x 5%: not comparable, not a regression
    base, head = pair(tmp_path / "small", [decode_row(ms=10.0, **kw)], [decode_row(ms=11.0, **kw)])
    result = compare_runs(base, head)
    assert result.exit_code == 0
    assert status_of(result, "ms_median") == "not comparable" and status_of(result, "tokens_per_s") == "not comparable"
    assert status_of(result, "mem_nvml_peak_gb") == "ok"  # memory has no timing range: not affected
    assert bool(result.points.loc[result.points["metric"] == "ms_median", "thin"].iloc[0])
    # +30% slower: beyond 3 x 5%: a regression even without a range
    base, head = pair(tmp_path / "large", [decode_row(ms=10.0, **kw)], [decode_row(ms=13.0, **kw)])
    result = compare_runs(base, head)
    assert result.exit_code == 1 and status_of(result, "ms_median") == "regressed"
    # a thin point on one side only is enough
    base, head = pair(tmp_path / "one", [decode_row(ms=10.0)], [decode_row(ms=11.0, **kw)])
    assert status_of(compare_runs(base, head), "ms_median") == "not comparable"
    assert compare_runs(base, head, thin_factor=1.0).exit_code == 1
    with pytest.raises(CompareInputError):
        compare_runs(base, head, thin_factor=0.5)


def _regressing_pair(tmp_path):
    base_rows = [decode_row(batch=1), decode_row(batch=8), decode_row(batch=64, ms=1.0)]
    head_rows = [decode_row(batch=1), decode_row(batch=8, ms=12.5),
                 decode_row(batch=64, status="oom", error="CUDA out of memory", ms_median=None, tokens_per_s=None)]
    return compare_runs(*pair(tmp_path, base_rows, head_rows))


def test_every_format_lists_the_regressions_first(tmp_path):
    result = _regressing_pair(tmp_path)
    lines = regression_lines(result)
    assert any("/b8/" in line and "tokens_per_s: 800 -> 640 tokens/s (-20.0%)" in line for line in lines)
    assert any("/b64/" in line and "status: ok -> oom" in line for line in lines)
    assert not any("/b1/" in line for line in lines)

    doc = json.loads(to_json(result))
    assert list(doc)[:3] == ["regressed", "exit_code", "regressions"]
    assert {(r["metric"], r["base"], r["head"]) for r in doc["regressions"]} >= {("tokens_per_s", 800.0, 640.0),
                                                                                ("status", "ok", "oom")}

    console = Console(record=True, width=250)
    console.print(render_rich(result))
    text = console.export_text()
    assert text.index("Regressed") < text.index("Compared points")
    assert "-20.0%" in text.split("Compared points")[0]

    printed = render_github(result, tmp_path / "bench")
    first = printed.splitlines()[0]
    assert first.startswith("::error title=retnet-bench regression::") and "/b8/" in printed
    assert printed.index("::error") < printed.index("REGRESSION:") < printed.index("wrote ")
    summary = (tmp_path / "bench" / "summary.md").read_text()
    assert "REGRESSION" in summary and "tokens_per_s: 800 -> 640" in summary


def test_unwritable_github_out_is_an_input_error(tmp_path):
    result = _regressing_pair(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(CompareInputError) as info:
        write_github(result, blocker / "bench")  # a file where a folder must go: OSError on any user, root too
    assert "\n" not in str(info.value) and "bench" in str(info.value)
    with pytest.raises(CompareInputError):
        render_github(result, blocker)


def test_training_points_are_matched_by_checkpointing_and_old_rows_read_none(tmp_path):
    """A checkpointed step is another point; a training row from before the columns ran without checkpointing and
    without tensor parallelism (the CPU smoke reference predates both)."""
    def train(ms: float, **kw) -> dict:
        return decode_row(ms=ms, suite="table4", phase="train", batch=1, **kw)

    old_plain = train(100.0)  # no checkpointing column at all
    old_plain.pop("checkpointing", None)
    result = compare_runs(*pair(tmp_path, [old_plain], [train(100.0, checkpointing="none", tensor_parallel=1),
                                                        train(130.0, checkpointing="full", tensor_parallel=1),
                                                        train(90.0, compile="blocks")]))
    assert status_of(result, "ms_median") == "ok"  # the plain points pair; the checkpointed and compiled are new
    assert sorted(result.new["point"].str.extract(r"(ckpt-full|compile-blocks)")[0]) == ["ckpt-full",
                                                                                          "compile-blocks"]


def test_point_key_reads_a_missing_checkpointing_as_none_for_training_only():
    from retnet_bench.suites.contract import POINT_KEY, point_key

    i = POINT_KEY.index("checkpointing")
    assert point_key({"phase": "train"})[i] == "none"
    assert point_key({"phase": "train", "checkpointing": "full"})[i] == "full"
    assert point_key({"phase": "decode"})[i] is None


def test_runs_without_a_common_point_are_bad_input(tmp_path):
    """Another suite or dtype shares no point: "no regression" would be a verdict on nothing (exit 2, one line)."""
    base, head = pair(tmp_path, [decode_row(suite="fig6")], [decode_row(suite="table4", dtype="float32")])
    with pytest.raises(CompareInputError) as info:
        compare_runs(base, head)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"compare: no common points between {base} and {head}")
    assert "suite fig6 / table4" in msg and "dtype bfloat16 / float32" in msg and "model" not in msg
    # same suites and dtypes, but every point differs in a combination of keys: still said, still exit 2
    base2, head2 = pair(tmp_path / "combo", [decode_row(batch=1, seq_len=64), decode_row(batch=2, seq_len=32)],
                        [decode_row(batch=1, seq_len=32), decode_row(batch=2, seq_len=64)])
    with pytest.raises(CompareInputError, match="no point matches on all of suite, model"):
        compare_runs(base2, head2)


def test_cli_compare_without_a_common_point_exits_2_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from retnet_bench.cli import app

    base, head = pair(tmp_path, [decode_row(dtype="bfloat16")], [decode_row(dtype="float32")])
    res = CliRunner().invoke(app, ["compare", str(base), str(head)], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0, res.output
    assert "no common points" in res.stderr and "dtype bfloat16 / float32" in res.stderr


def test_sub_megabyte_memory_changes_are_not_regressions(tmp_path):
    """A CPU run's RSS growth of 0.16 MB is +33% but no regression: memory changes below MEMORY_FLOOR_GB are ok."""
    from retnet_bench.reports.compare import MEMORY_FLOOR_GB

    base, head = pair(tmp_path, [decode_row(mem_rss_peak_gb=0.00048, mem_nvml_peak_gb=0.2)],
                      [decode_row(mem_rss_peak_gb=0.00064, mem_nvml_peak_gb=0.2 + 2 * MEMORY_FLOOR_GB)])
    result = compare_runs(base, head)
    assert status_of(result, "mem_rss_peak_gb") == "ok"
    assert status_of(result, "mem_nvml_peak_gb") == "regressed"  # +10%, and 20 MB: beyond the floor
    assert 0 < MEMORY_FLOOR_GB <= 0.01
    shrink = compare_runs(head, base)  # the floor holds both ways: a sub-MB drop is no "improved" either
    assert status_of(shrink, "mem_rss_peak_gb") == "ok"


def test_unmatched_points_name_the_one_setting_that_split_them(tmp_path):
    """A baseline made before decode_gemm's default changed: its batch-8 point reads "torch", the new run's "triton",
    so the two are unmatched; compare says that one column split them (rich text and JSON)."""
    from retnet_bench.reports.compare_render import unmatched_reasons

    base = [decode_row(batch=1), decode_row(batch=8)]
    head = [decode_row(batch=1), decode_row(batch=8, decode_gemm="triton")]
    result = compare_runs(*pair(tmp_path, base, head))
    assert len(result.missing) == len(result.new) == 1
    assert unmatched_reasons(result) == ["decode_gemm torch (base) / triton (head): 1 point differs only there"]
    console = Console(record=True, width=250)
    console.print(render_rich(result))
    text = console.export_text()
    assert "unmatched: decode_gemm torch (base) / triton (head)" in text
    assert json.loads(to_json(result))["unmatched_reasons"] == unmatched_reasons(result)
    other = compare_runs(*pair(tmp_path / "b", base, [decode_row(batch=1), decode_row(batch=16)]))
    assert unmatched_reasons(other) == []  # a sweep's point (batch 8 vs 16) is no setting to run again with
