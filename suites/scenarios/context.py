"""What the runner lends every scenario: the device, trackers, the roofline ceiling and the row maker."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..suite import Scenario
from ..trackers import GB, EnergyCounter, EnergyTracker, LatencyTracker, MemoryTracker
from ..trackers import free_device_memory


@dataclass
class Context:
    device: torch.device
    dtype: torch.dtype
    peak_gbps: float | None
    memory: MemoryTracker | None               # the run's tracker (its NVML idle baseline was taken before any model)
    make_row: Callable[..., dict[str, Any]]    # make_row(group, point, status, **columns)
    energy_counter: EnergyCounter | None = None  # the run's GPU energy counter (None: CPU, no NVML, no counter)

    def tracker(self) -> MemoryTracker:
        return self.memory if self.memory is not None else MemoryTracker(self.device, use_nvml=False)

    def energy(self) -> EnergyTracker:
        """A fresh energy tracker for one point's timed region (inert, all None, without a counter)."""
        return EnergyTracker(self.energy_counter)

    def latency(self, sc: Scenario) -> LatencyTracker:
        return LatencyTracker(self.device, sc.min_steps, sc.min_seconds, sc.max_steps)

    def fixed(self, steps: int) -> LatencyTracker:
        return LatencyTracker(self.device, steps, 0.0, steps)

    def once(self) -> LatencyTracker:
        return LatencyTracker(self.device, 1, 0, 1)

    def roofline(self, bytes_per_step: int, ms: float) -> dict[str, float | None]:
        gbps = bytes_per_step / (ms / 1e3) / GB
        return dict(achieved_gbps=gbps, pct_peak_bw=100.0 * gbps / self.peak_gbps if self.peak_gbps else None)

    def free(self) -> None:
        free_device_memory(self.device)


# How an allocation failure reads when it is no OutOfMemoryError: CUDA's "out of memory", and the CPU allocator's
# RuntimeError "[enforce fail at alloc_cpu.cpp:...] DefaultCPUAllocator: can't allocate memory: you tried to
# allocate N bytes. Error code 12 (Cannot allocate memory)".
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or any(m in str(e).lower() for m in OOM_MESSAGES)


def failure_status(e: BaseException) -> str:
    """The status of a point that raised: skipped (no kernel here takes it: the reason is the row's error), oom,
    else error."""
    from retnet.kernels import ChunkKernelUnavailable
    from retnet_bench.baselines.kernels import KernelUnavailableError

    if isinstance(e, (KernelUnavailableError, ChunkKernelUnavailable)):
        return "skipped"
    return "oom" if is_oom(e) else "error"


def fmt_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:500]
