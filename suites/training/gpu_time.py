"""What a training step's GPU did, from one profiled step: how long it computed, how long it communicated, and how
much of that communication no compute overlapped. A step that takes longer than its compute waited for something:
the host (launches, Python) or a collective; the two columns tell which.

Measured on one extra, untimed step after the timed ones, under torch.profiler with CUDA activity only (CUPTI
records each kernel, copy and memset on the device; no host-side op tracing, so the step runs as in training). The
interval arithmetic is plain Python on (start_us, end_us) spans, shared with scripts/profile_train_step.py.
"""
from __future__ import annotations

from typing import Callable

import torch

COMMUNICATION_PREFIXES = ("nccl",)  # NCCL's kernels: ncclDevKernel_AllGather_RING_LL, ncclKernel_..., lower-cased


def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of closed intervals, sorted and disjoint."""
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def intersection(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> float:
    """Total length covered by both unions (each sorted and disjoint)."""
    i = j = 0
    total = 0.0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        total += max(0.0, hi - lo)
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return total


def is_communication(name: str) -> bool:
    return name.lower().startswith(COMMUNICATION_PREFIXES)


def gpu_time_ms(spans: list[tuple[str, float, float]],
                is_comm: Callable[[str], bool] = is_communication) -> dict[str, float]:
    """From (name, start_us, end_us) of every device activity of one step: compute (the union of all but
    communication kernels), communication (the union of NCCL's kernels, waiting for a peer included: a collective's
    kernel runs from when this GPU reaches it) and its exposed part (no compute running beside it), in ms. The GPU
    was busy for compute + exposed. `is_comm` tells communication by a span's label (a kernel name by default)."""
    comm = union([(a, b) for n, a, b in spans if is_comm(n)])
    compute = union([(a, b) for n, a, b in spans if not is_comm(n)])
    return dict(gpu_compute_ms=length(compute) / 1e3, gpu_comm_ms=length(comm) / 1e3,
                exposed_comm_ms=(length(comm) - intersection(comm, compute)) / 1e3)


def profile_step(step: Callable[[], object], device: torch.device) -> dict[str, float] | None:
    """Run `step` once under a CUDA-only profiler and return `gpu_time_ms` of what it put on the device; None on a
    CPU (the step is not run), or where the profiler cannot start (CUPTI missing or busy: the point keeps its other
    columns). The step's own failures propagate, as a timed step's would: on several ranks the others are inside
    its collectives, and only the point's fault handling (an error row, the collective timeout) ends that."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CUDA])
    try:
        prof.start()
    except RuntimeError:
        return None
    try:
        step()
        torch.cuda.synchronize(device)
    finally:
        prof.stop()
    spans = [(ev.name, ev.time_range.start, ev.time_range.end) for ev in prof.events()
             if ev.device_type == torch.autograd.DeviceType.CUDA]
    return gpu_time_ms(spans) if spans else None
