"""How finely does NVML's total-energy counter resolve a timed region? (GPU diagnostic for the energy tracker.)

Keeps the GPU busy with bf16 matmuls for --seconds while the host reads nvmlDeviceGetTotalEnergyConsumption in a
tight loop, and records when the value changes: the update period bounds how short a window the rows' energy_j can
resolve. Then measures the same load over windows of 0.3, 1 and 3 s with the suites' own EnergyTracker and prints
the average power of each (they agree when the window is long enough).

    OUT=/tmp/out python scripts/probe_energy_counter.py
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import pynvml
import torch

from retnet_bench.suites.trackers import EnergyTracker, energy_counter, nvml_index


def busy(a: torch.Tensor, seconds: float) -> int:
    """Queue matmuls for about `seconds` of GPU time (host never waits on them until the end)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ a
        n += 20
        if n % 400 == 0:  # keep the queue short, so that the wall clock tracks GPU time
            torch.cuda.current_stream().synchronize()
    return n


def main() -> None:
    dev = torch.device("cuda")
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    busy(a, 1.0)  # clocks up
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index(dev))
    changes: list[tuple[float, int]] = []
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(4000):  # ~3 s of queued work: the host is free to poll
            a @ a
    t0, last = time.perf_counter(), pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    while time.perf_counter() - t0 < 2.0:
        v = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        if v != last:
            changes.append((time.perf_counter() - t0, v - last))
            last = v
    torch.cuda.synchronize()
    gaps = [b[0] - a_[0] for a_, b in zip(changes, changes[1:])]
    out = dict(gpu=torch.cuda.get_device_name(), changes_in_2s=len(changes),
               update_period_ms_median=round(1e3 * statistics.median(gaps), 2) if gaps else None,
               update_period_ms_max=round(1e3 * max(gaps), 2) if gaps else None,
               step_mj_median=statistics.median([d for _, d in changes]) if changes else None)
    counter = energy_counter(dev)
    windows = []
    for seconds in (0.3, 1.0, 3.0):
        tracker = EnergyTracker(counter)
        tracker.start(dev)
        busy(a, seconds)
        torch.cuda.synchronize()
        tracker.stop()
        res = tracker.result(1)
        windows.append(dict(seconds=seconds, wall_s=round(tracker.wall_s, 3), energy_j=res["energy_j"],
                            avg_power_w=None if res["avg_power_w"] is None else round(res["avg_power_w"], 1)))
    out["windows"] = windows
    print(json.dumps(out, indent=1))
    Path(os.environ.get("OUT", "."), "energy_counter.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
