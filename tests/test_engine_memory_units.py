"""Memory units of training-engine rows: decimal GB since schema 3; older runs' engine rows held GiB under the same
`_gb` names and are read converted, by the report loader and by `compare` alike. No torch model, no GPU."""
from __future__ import annotations

import pytest
import torch

from reports_fixtures import decode_row, train_row, write_run
from retnet_bench.reports.compare import load_run
from retnet_bench.reports.load import load_runs
from retnet_bench.suites.contract import FORWARD_BACKWARD_ONLY

GIB_PER_GB = 2**30 / 1e9
ENGINE_NOTES = "FSDP2 x1, micro_batch 1 x grad_accum 1 per rank, checkpointing every-8; 1 sequences per step"


def _rows() -> list[dict]:
    engine = train_row("6.7b", "transformer", "sdpa-cudnn", 1, 8192, 11043.0, 138.0, mem_torch_peak_gb=106.95,
                       mem_torch_reserved_gb=120.0, mem_nvml_peak_gb=139.0, mem_rss_peak_gb=20.0, notes=ENGINE_NOTES)
    paper = train_row("1.3b", "torchscale-retnet", "torchscale", 1, 8192, 10000.0, 43.0, mem_torch_peak_gb=40.5,
                      notes=f"torchscale 0.3.0 training; {FORWARD_BACKWARD_ONLY}")
    # the forward + backward path before it said so in its notes (schema 1 runs): GB, never converted
    unmarked = train_row("6.7b", "retnet-chunkwise", "torch", 1, 8192, 1000.0, 120.0, mem_torch_peak_gb=129.55)
    return [engine, paper, unmarked,
            decode_row("6.7b", "retnet-recurrent", "triton", 8, 8192, 5.0, 14.0, mem_torch_peak_gb=8.0)]


@pytest.mark.parametrize("schema,converted", [(2, True), (3, False)])
def test_engine_rows_of_older_runs_read_in_gb(tmp_path, schema, converted):
    run = write_run(tmp_path, _rows(), env={"schema_version": schema})
    df, envs = load_runs([run])
    by_impl = df.set_index("impl")
    f = GIB_PER_GB if converted else 1.0
    engine = by_impl.loc["transformer"]
    # 106.95 GiB = 114.8 GB: above the 107.3 GB that 6.7B's fp32 weights, gradients and AdamW state take
    assert engine["mem_torch_peak_gb"] == pytest.approx(106.95 * f)
    for col, value in (("mem_torch_reserved_gb", 120.0), ("mem_nvml_peak_gb", 139.0), ("mem_nvml_delta_gb", 138.0),
                       ("mem_rss_peak_gb", 20.0)):
        assert engine[col] == pytest.approx(value * f), col
    assert by_impl.loc["torchscale-retnet", "mem_torch_peak_gb"] == pytest.approx(40.5)  # never the engine's
    assert by_impl.loc["retnet-chunkwise", "mem_torch_peak_gb"] == pytest.approx(129.55)
    assert by_impl.loc["retnet-recurrent", "mem_torch_peak_gb"] == pytest.approx(8.0)  # decode rows: GB always
    rows, _ = load_run(run)  # compare reads them the same way
    assert rows.set_index("impl").loc["transformer", "mem_torch_peak_gb"] == pytest.approx(106.95 * f)
    from retnet_bench.reports.report import _run_summary

    (line,) = _run_summary(envs)  # the report's Runs list says what was read converted
    assert ("training memory of its 1 engine row(s) read from GiB" in line) is converted


def test_engine_measures_decimal_gb(monkeypatch):
    from retnet_bench.suites.training import measure

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 10**9)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 4 * 10**9)
    assert measure.torch_peaks_gb(torch.device("cuda", 0)) == (3.0, 4.0)


def test_the_engines_notes_begin_with_the_prefix_the_conversion_looks_for():
    """`holds_engine_gib` finds engine rows by their notes: the engine must keep writing that prefix."""

    from retnet_bench.suites.contract import ENGINE_NOTES_PREFIX
    from retnet_bench.suites.training import TrainSettings
    from retnet_bench.suites.training.result import TrainPointResult

    fields = TrainPointResult(world_size=2, status="ok", error=None, kernel="fla").row_fields(TrainSettings())
    assert fields["notes"].startswith(ENGINE_NOTES_PREFIX)


def test_compare_takes_schema_2_against_3_and_refuses_1_against_3(tmp_path):
    from test_compare import decode_row as cmp_row
    from test_compare import write_run as cmp_write

    from retnet_bench.reports.compare import CompareInputError, compare_runs

    base = cmp_write(tmp_path / "base", [cmp_row()], schema_version=2)
    head = cmp_write(tmp_path / "head", [cmp_row()], schema_version=3)
    assert compare_runs(base, head).exit_code == 0
    old = cmp_write(tmp_path / "old", [cmp_row()], schema_version=1)
    with pytest.raises(CompareInputError, match="different schema_version"):
        compare_runs(old, head)
