"""scripts/probe_collectives.py (a script, not part of the package): its bandwidth arithmetic on hand-made numbers,
NCCL's transports read from log lines, and the whole script on two gloo ranks."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "probe_collectives.py"


def _script():
    spec = importlib.util.spec_from_file_location("probe_collectives", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bus_bandwidth_follows_nccl_tests():
    """100 MB in 1 ms on 4 ranks: algbw 100 GB/s; each link carried 3/4 of it (busbw 75 GB/s)."""
    algbw, busbw = _script().bus_bandwidth(100_000_000, 1e-3, 4)
    assert algbw == pytest.approx(100.0) and busbw == pytest.approx(75.0)


def test_step_communication_time_from_bytes_and_bus_bandwidth():
    """2 ranks: 10 GB all-gathered at 50 GB/s busbw is 10 * 1/2 / 50 s = 100 ms; 4 GB reduce-scattered at 100 GB/s,
    20 ms. On 4 ranks each link carries 3/4 of S instead of 1/2: 1.5x the time at the same busbw."""
    step = _script().step_comm_ms
    step_bytes = {"all_gather": 10_000_000_000, "reduce_scatter": 4_000_000_000}
    busbw = {"all_gather": 50.0, "reduce_scatter": 100.0}
    assert step(step_bytes, busbw, 2) == pytest.approx(120.0)
    assert step(step_bytes, busbw, 4) == pytest.approx(180.0)
    assert step(step_bytes, {"all_gather": 0.0, "reduce_scatter": 0.0}, 1) == 0.0


def test_transports_are_read_from_nccl_info_lines():
    log = ("host:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n"
           "host:1:1 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n"
           "host:2:2 [1] NCCL INFO Channel 00/0 : 1[1] -> 0[0] via SHM/direct/direct\n"
           "host:1:1 [0] NCCL INFO Connected all rings\n")
    assert _script().transports(log) == ["P2P/CUMEM/read", "SHM/direct/direct"]
    assert _script().transports("") == []


@pytest.mark.timeout(240)
def test_the_script_on_two_gloo_ranks_times_each_preset_s_block_messages(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(SCRIPT),
           "--device", "cpu", "--presets", "tiny", "--sweep-mb", "0.01", "--iters", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((tmp_path / "collectives.json").read_text())
    assert got["world_size"] == 2 and got["gpu"] is None
    tiny = got["fsdp_step"]["tiny"]
    block_messages = {("all_gather", tiny["block_params"] * 2), ("reduce_scatter", tiny["block_params"] * 4)}
    asked = {(m["op"], m["asked_bytes"]) for m in got["measured"]}
    assert block_messages <= asked and ("all_gather", 10_000) in asked
    assert all(m["ms"] > 0 and m["busbw_gbs"] == pytest.approx(m["algbw_gbs"] / 2) for m in got["measured"])
    assert tiny["comm_ms_per_step"] > 0 and (tmp_path / "collectives.txt").read_text().startswith("== 2 ranks")
