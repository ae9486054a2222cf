"""CLI bad input beyond test_cli.py: click's usage errors through the entry point, report/claims inputs checked
before anything is written or printed, the CPU memory check, help texts that say what is accepted, and the
Ctrl-C hint that names the run folder to resume. Every bad input: one line on stderr, exit 2."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retnet_bench import cli
from retnet_bench.cli import app, main
from retnet_bench.suites import runner as runner_mod

REFERENCE_SMOKE = Path(__file__).resolve().parents[1] / "results" / "reference" / "cpu-smoke"
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


def _assert_bad_input(result, needle: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    text = result.stderr.strip()
    assert "Traceback" not in result.output and len(text.splitlines()) == 1, text
    assert needle in text, text


def _run_folder(where: Path, rows: bool = True) -> Path:
    where.mkdir(parents=True)
    (where / "rows.jsonl").write_text((REFERENCE_SMOKE / "rows.jsonl").read_text().splitlines()[0] + "\n"
                                      if rows else "")
    shutil.copy(REFERENCE_SMOKE / "env.json", where / "env.json")
    return where


# ------------------------------------------------------------------ usage errors through the entry point
@pytest.mark.parametrize("argv, needle", [
    (["run", "smoke", "--modle", "tiny"], "error: No such option: --modle (Possible options:"),
    (["report"], "error: Missing argument 'runs'."),
    (["compare", "only-one"], "error: Missing argument 'head'."),
    (["run", "smoke", "--time-limit", "soon"], "error: Invalid value for '--time-limit'"),
    (["nosuchcommand"], "error: No such command 'nosuchcommand'"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    out, errs = capsys.readouterr()
    assert out == "" and len(errs.strip().splitlines()) == 1 and errs.startswith(needle), errs
    assert "╭" not in errs and "Usage:" not in errs


def test_help_and_version_still_exit_0(capsys):
    assert main(["--help"]) == 0 and "Usage: retnet-bench" in capsys.readouterr().out
    assert main(["run", "--help"]) == 0 and "--resume" in capsys.readouterr().out
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("retnet-bench ")
    assert app(["--version"]) == 0  # an install whose script still calls `app()` gets the same handling


def test_the_console_script_is_main():
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["retnet-bench"] == "retnet_bench.cli:main"
    assert meta["build-system"]["requires"] == ["setuptools>=70.1"]  # bdist_wheel inside setuptools


# ------------------------------------------------------------------ run options
@pytest.mark.parametrize("args, needle", [
    (["--run-id", ""], "--run-id is empty"),
    (["--resume", " "], "--resume is empty"),
])
def test_empty_names_are_bad_input(tmp_path, args, needle):
    _assert_bad_input(_run("run", "smoke", "--device", "cpu", "--out", str(tmp_path), *args), needle)
    assert not any(tmp_path.iterdir())  # no automatic run was started


def test_an_empty_run_id_is_refused_by_the_runner_too(tmp_path):
    import torch

    from retnet_bench.suites import RunError, RunOptions, load_suite, run_suite

    with pytest.raises(RunError, match="--run-id ''"):
        run_suite(load_suite("smoke"), RunOptions(torch.device("cpu"), out_root=tmp_path, run_id="", progress=False))


def test_help_says_what_is_accepted():
    from retnet_bench.suites.suite import DTYPES

    text = _run("run", "--help").output
    assert all(d in text for d in DTYPES) and "float64" in text
    assert "<out>/<run-id>/" in text and "results/<run-id>/" not in text
    env_help = _run("env", "--help").output
    assert "NVML" not in env_help and "usable kernels" not in env_help and "library versions" in env_help


def test_warmup_zero_is_allowed_and_its_message_says_non_negative(tmp_path):
    from retnet_bench.suites import SuiteError, load_suite

    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[decode]\nimpls=['static']\nwarmup = 0\n")
    assert load_suite(str(bad)).scenarios["decode"].warmup == 0
    bad.write_text("name = 'x'\n[decode]\nimpls=['static']\nwarmup = -1\n")
    with pytest.raises(SuiteError, match="warmup must be a non-negative integer, got -1"):
        load_suite(str(bad))
    bad.write_text("name = 'x'\n[decode]\nimpls=['static']\nmin_steps = 0\n")
    with pytest.raises(SuiteError, match="min_steps must be a positive integer"):
        load_suite(str(bad))


# ------------------------------------------------------------------ the CPU memory check
def test_a_model_too_large_for_this_cpu_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    from retnet_bench.suites import checks

    monkeypatch.setattr(checks, "available_ram_gb", lambda: 4.0)
    built = []
    monkeypatch.setattr(runner_mod.Runner, "run", lambda self: built.append(self))
    res = _run("run", "smoke", "--model", "6.7b", "--device", "cpu", "--out", str(tmp_path))
    _assert_bad_input(res, "model 6.7b needs ~")
    assert "GB on the CPU" in res.stderr and "4.0 GB available" in res.stderr
    assert not built and not any(tmp_path.iterdir())


def test_cpu_memory_need_is_analytic_and_tiny_fits():
    from retnet_bench.suites import load_suite
    from retnet_bench.suites.checks import check_cpu_memory, cpu_memory_need_gb
    from retnet_bench.suites.suite import with_overrides

    smoke = load_suite("smoke")
    check_cpu_memory(smoke, available_gb=1.0)  # tiny: well under 1 GB
    decode_only = with_overrides(smoke, models=["6.7b"])
    decode_only.scenarios.pop("train")
    gb, what = cpu_memory_need_gb(decode_only)["6.7b"]
    assert 27 * 1.2 < gb < 27 * 1.4 and "decode" in what  # ~6.7e9 float32 weights, a small cache, the margin
    with pytest.raises(ValueError, match=r"model 6.7b needs ~\d+\.\d GB on the CPU .*; 16.0 GB available"):
        check_cpu_memory(decode_only, available_gb=16.0)


def test_available_ram_reads_memavailable(tmp_path):
    from retnet_bench.suites.env import available_ram_gb

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n")
    assert available_ram_gb(meminfo) == pytest.approx(20000000 * 1024 / 1e9)
    assert available_ram_gb(tmp_path / "absent") is None


def test_a_cpu_allocation_failure_is_an_oom():
    import torch

    from retnet_bench.suites.scenarios.context import failure_status

    with pytest.raises(RuntimeError) as info:  # 2**60 bytes: beyond any address space, whatever the overcommit
        torch.empty(2**60, dtype=torch.uint8)
    assert "DefaultCPUAllocator" in str(info.value) and failure_status(info.value) == "oom"


# ------------------------------------------------------------------ report and claims inputs
@pytest.mark.parametrize("command", ["report", "claims"])
def test_a_missing_run_creates_nothing(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _assert_bad_input(_run(command, "nosuchrun"), "nosuchrun: run folder not found")
    assert not (tmp_path / "nosuchrun").exists()


@pytest.mark.parametrize("command", ["report", "claims"])
def test_a_file_is_not_a_run_folder(tmp_path, command):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    _assert_bad_input(_run(command, str(f)), f"{f} is not a run folder")


@pytest.mark.parametrize("command", ["report", "claims"])
def test_an_empty_run_is_bad_input(tmp_path, command):
    _assert_bad_input(_run(command, str(_run_folder(tmp_path / "empty", rows=False))), "no rows")


@pytest.mark.parametrize("command", ["report", "claims"])
def test_a_reference_run_needs_out(tmp_path, command):
    ref = _run_folder(tmp_path / "results" / "reference" / "cpu")
    before = sorted(p.name for p in ref.iterdir())
    _assert_bad_input(_run(command, str(ref)), "is a committed reference run: give --out DIR")
    assert sorted(p.name for p in ref.iterdir()) == before


@pytest.mark.parametrize("command", ["report", "claims"])
def test_out_that_is_a_file_is_the_only_line(tmp_path, command):
    run = _run_folder(tmp_path / "run")
    blocker = tmp_path / "existing.txt"
    blocker.write_text("x")
    res = _run(command, str(run), "--out", str(blocker))
    _assert_bad_input(res, f"--out {blocker} is a file, not a folder")
    assert res.stdout == "" and sorted(p.name for p in run.iterdir()) == ["env.json", "rows.jsonl"]


# ------------------------------------------------------------------ Ctrl-C names the run to resume
def test_ctrl_c_names_the_run_folder_and_its_command_resumes_it(tmp_path, monkeypatch):
    real, calls = runner_mod.Runner._measure, {"n": 0}

    def interrupted(self, c, g, p):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, c, g, p)

    monkeypatch.setattr(runner_mod.Runner, "_measure", interrupted)
    args = ["run", "smoke", "--device", "cpu", "--out", str(tmp_path), "--run-id", "ctrl", "--no-report",
            "--impl", "retnet-recurrent", "--batch", "1,2", "--seq", "32"]
    res = _run(*args)
    assert res.exit_code == 130, res.output
    run_dir = tmp_path / "ctrl"
    hint = res.stderr.split("`")[1]
    assert hint.startswith(f"retnet-bench run smoke --resume {run_dir} ")
    assert all(opt in hint for opt in ("--impl retnet-recurrent", "--batch 1,2", "--seq 32", "--device cpu",
                                          "--no-report"))
    assert "<run folder>" not in res.stderr
    assert json.loads((run_dir / "env.json").read_text())["complete"] is False
    monkeypatch.setattr(runner_mod.Runner, "_measure", real)
    res = _run(*shlex.split(hint)[1:])  # the printed command, as a user would paste it
    assert res.exit_code == 0, res.output
    assert json.loads((run_dir / "env.json").read_text())["complete"] is True
    assert len((run_dir / "rows.jsonl").read_text().splitlines()) == 4  # 2 batches x (prefill + decode)
