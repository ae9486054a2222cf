"""scripts/device_reference.sh on a CPU: its modes run against stub `python3` and `retnet-bench` commands that only
record how they were called, so what a device call would launch is checked before a GPU minute is spent on it."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "device_reference.sh"
MODE_FILES = sorted((ROOT / "scripts").glob("device_modes_*.sh"))

# python3: the GPU count for the script's device_count query, success for pip and the setup report, else a record;
# retnet-bench: a record with the variables that decide what a point measures, and a finished run's last line
PYTHON3 = """#!/bin/bash
case "$*" in
  *device_count*) echo "${SIM_NGPU:-4}";;
  *"-m pip"*) exit 0;;
  -) cat > /dev/null;;
  *pytest*) echo "python3 $* PROTO=${NCCL_PROTO:-}" >> "$SIM_CALLS"; exit "${SIM_PYTEST_RC:-0}";;
  *) echo "python3 $* PROTO=${NCCL_PROTO:-}" >> "$SIM_CALLS";;
esac
"""
RETNET_BENCH = """#!/bin/bash
echo "retnet-bench $* CVD=$CUDA_VISIBLE_DEVICES PROTO=${NCCL_PROTO:-} FLA=${FLA_DISABLE_BACKEND_DISPATCH:-}" >> "$SIM_CALLS"
echo "table4: 2 rows in /x (complete; this run: 2 ok)"
"""


def _run(mode: str, tmp_path: Path, ngpu: int = 4, extra_env: dict | None = None
         ) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("python3", PYTHON3), ("retnet-bench", RETNET_BENCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path), "BUDGET": "400",
           "SIM_CALLS": str(calls), "SIM_NGPU": str(ngpu), **(extra_env or {})}
    p = subprocess.run(["bash", str(SCRIPT), mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return p, calls.read_text().splitlines() if calls.exists() else []


def _modes() -> list[str]:
    return [m for f in MODE_FILES for m in re.findall(r"^mode_([a-z0-9.-]+)\(\) \{$", f.read_text(), re.M)]


def test_an_unknown_mode_lists_the_modes_and_exits_2_before_installing_anything(tmp_path):
    p, calls = _run("no-such-mode", tmp_path)
    assert p.returncode == 2 and calls == []  # not even the pip install of the setup
    listed = p.stdout.split("one of: ")[1].split()
    assert sorted(listed) == sorted(_modes()) and {"multi4-a", "multi4-b", "x2-host", "fla-dims"} <= set(listed)
    assert not list(tmp_path.glob("reference_*.tgz"))


def test_every_mode_says_what_it_runs_above_it():
    for f in MODE_FILES:
        lines = f.read_text().splitlines()
        for i, line in enumerate(lines):
            if m := re.match(r"^mode_([a-z0-9.-]+)\(\) \{$", line):
                above = i - 1
                while lines[above].startswith("# ") and not lines[above].startswith(f"# {m.group(1)}: "):
                    above -= 1
                assert lines[above].startswith(f"# {m.group(1)}: "), f"{f.name}: mode_{m.group(1)} has no comment"


def test_the_four_gpu_scaling_mode_runs_1_2_and_4_ranks_each_alone_then_packs(tmp_path):
    p, calls = _run("multi4-a", tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    bench = [c for c in calls if c.startswith("retnet-bench run table4")]
    ranks = [int(m.group(1)) if (m := re.search(r"--nproc (\d+)", c)) else 1 for c in bench]
    gpus = [re.search(r"CVD=(\S+)", c).group(1) for c in bench]
    assert ranks == [1, 2, 4, 4] and gpus == ["0", "0,1", "0,1,2,3", "0,1,2,3"]
    assert all("--time-limit" in c and "--no-report" in c for c in bench)
    assert (tmp_path / "reference_multi4-a.tgz").exists()  # the trap packs what the mode wrote


def test_the_host_mode_probes_the_link_then_runs_both_protocols_and_retnet_with_fla_dispatch_off(tmp_path):
    p, calls = _run("x2-host", tmp_path, ngpu=2)
    assert p.returncode == 0, p.stdout + p.stderr
    probes = [c for c in calls if "probe_collectives.py" in c]
    assert [c.endswith("PROTO=") for c in probes] == [True, False] and probes[1].endswith("PROTO=Simple")
    assert all("--nproc-per-node 2" in c for c in probes)
    bench = [c for c in calls if c.startswith("retnet-bench")]
    assert [("PROTO=Simple" in c, c.endswith("FLA=1")) for c in bench] == [(False, False), (True, False),
                                                                            (False, True)]
    assert "--impl retnet-chunkwise --kernel fla" in bench[2]
    assert any("profile_train_step.py" in c and "--host" in c and "--nproc 2" in c for c in calls)
    # NCCL_PROTO is set for its own probe and run only: what follows them is back on NCCL's choice
    assert calls.index(probes[1]) < calls.index(bench[0])


@pytest.mark.parametrize("mode", ["multi4-b", "multi2-b"])
def test_a_13b_mode_checkpoints_only_after_an_oom_row(mode, tmp_path):
    """No run folder is written by the stub, so no oom row: the checkpointed 13B run must not start."""
    p, calls = _run(mode, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    thirteen = [c for c in calls if "--model 13b" in c]
    assert len(thirteen) == 1 and "--checkpointing" not in thirteen[0]


def test_a_mode_that_runs_out_of_time_still_packs_what_it_wrote(tmp_path):
    """A mode that stops early calls exit inside its function; the trap must still pack $W (it once read the
    function's empty $1 under set -u and packed nothing). A suite is not begun with under 45 s left."""
    p, _ = _run("x2-host", tmp_path, ngpu=2, extra_env={"BUDGET": "60"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "profile x2 host: " in p.stdout and "not run" in p.stdout  # the mode's own exit 0
    assert (tmp_path / "reference_x2-host.tgz").exists()
    p, calls = _run("multi4-a", tmp_path, extra_env={"BUDGET": "40"})
    assert [c for c in calls if c.startswith("retnet-bench")] == [] and p.stdout.count("not run") == 4


@pytest.mark.parametrize("ngpu, degrees", [(2, ["2"]), (4, ["2", "4"]), (8, ["2", "8"])])
def test_the_tp_mode_runs_each_tensor_parallel_degree_once(tmp_path, ngpu, degrees):
    """TP 2 and TP over all ranks: on two GPUs they are one run, not the same run twice."""
    p, calls = _run("tp", tmp_path, ngpu=ngpu)
    assert p.returncode == 0, p.stdout + p.stderr
    tp_runs = [re.search(r"--tp (\d+)", c).group(1) for c in calls if c.startswith("retnet-bench") and "--tp" in c]
    assert tp_runs == degrees


def test_the_host_floor_mode_times_short_steps_then_8k_on_one_gpu_then_profiles_the_short_step(tmp_path):
    """T=256 first (the host's issue time per step), the same contestants at 8k on the same lease, then the profile."""
    p, calls = _run("host-floor", tmp_path, ngpu=1)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = [c for c in calls if c.startswith("retnet-bench")]
    assert len(runs) == 2 and "--seq 256" in runs[0] and "--seq" not in runs[1]
    assert all("--kernel fla,sdpa-cudnn" in c and "CVD=0" in c for c in runs)
    assert any("profile_train_step.py" in c and "--seq 256" in c and "--host" in c for c in calls)


def test_the_nvml_mode_alternates_runs_with_and_without_nvml_then_profiles(tmp_path):
    p, calls = _run("nvml-ab", tmp_path, ngpu=1)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = [c for c in calls if c.startswith("retnet-bench")]
    assert ["--no-nvml" in c for c in runs] == [False, True, False, True]
    assert all("--seq 256" in c and "--model 1.3b" in c for c in runs)
    assert any("profile_train_step.py" in c and "--steps 10" in c for c in calls)


def test_the_graphs_mode_tests_first_then_times_the_three_kernels_at_8k_and_256(tmp_path):
    p, calls = _run("graphs", tmp_path, ngpu=1)
    assert p.returncode == 0, p.stdout + p.stderr
    # the kernel's tests (GPU 0) and the engine's (GPU 1, meanwhile: either may log first), both before any timing
    assert sorted("test_chunk_graphs.py" in c for c in calls[:2]) == [False, True]
    assert any("tests/test_training_gpu.py" in c for c in calls[:2])
    runs = [c for c in calls if c.startswith("retnet-bench")]
    assert len(runs) == 3 and all("--kernel fla,fla-graphs,sdpa-cudnn" in c for c in runs)
    assert "--seq 256" in runs[1] and "--model 2.7b" in runs[2]


@pytest.mark.parametrize("tests_rc, kernels", [("0", "fla,fla-graphs,sdpa-cudnn"), ("1", "fla,sdpa-cudnn")])
def test_the_x2_graphs_mode_times_the_graphed_kernel_only_after_its_gpu_tests_pass(tmp_path, tests_rc, kernels):
    p, calls = _run("x2-graphs", tmp_path, ngpu=2, extra_env={"SIM_PYTEST_RC": tests_rc})
    assert p.returncode == 0, p.stdout + p.stderr
    # the kernel's tests (GPU 0) and the engine's (GPU 1, meanwhile: either may log first), both before any timing
    assert sorted("test_chunk_graphs.py" in c for c in calls[:2]) == [False, True]
    assert any("tests/test_training_gpu.py" in c for c in calls[:2])
    runs = [c for c in calls if c.startswith("retnet-bench")]
    assert [("--nproc 2" in c, "CVD=0,1" in c) for c in runs] == [(False, False), (True, True)]
    assert all(f"--kernel {kernels} " in c for c in runs)
