"""Per-rank measurement: step timer (CUDA events / perf_counter), NVML peak read between steps for the rank's own
GPU, memory."""
from __future__ import annotations

import resource
import time

import torch

GB = 1024**3


class StepTimer:
    """start()/stop() around each step; elapsed_ms() once at the end (one sync, none inside the loop on GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._marks: list[tuple] = []
        self._t0: object = None

    def start(self) -> None:
        if self.cuda:
            self._t0 = torch.cuda.Event(enable_timing=True)
            self._t0.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._marks.append((self._t0, end))
        else:
            self._marks.append((self._t0, time.perf_counter()))

    def elapsed_ms(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in self._marks]
        return [(b - a) * 1e3 for a, b in self._marks]


class NvmlStepPeak:
    """Peak device memory in use on this rank's GPU (NVML), read between training steps, and the baseline at creation.
    Inert (all None) without pynvml / a GPU. Device-wide: it includes the CUDA context and NCCL's buffers.

    Why between steps and not from a polling thread: a thread in the rank that read NVML every 5 ms slowed the very
    step it measured, and a launch-bound step most. Measured on an H200 (1.3B, T=8192, one rank): RetNet (fla) 243 ms
    per step with the thread, 177 ms without; the Transformer (SDPA cuDNN) 192 vs 179 ms (rows in
    results/reference/h200/2026-11-28-s4-table4-clean and -s4-table4-nonvml). Reading after each step sees the step's
    peak: PyTorch's caching allocator does not return memory to the driver inside the loop (no empty_cache there),
    and cuBLAS workspaces and NCCL buffers stay allocated, so device memory in use only grows during the steps."""

    def __init__(self, device: torch.device) -> None:
        self.baseline: int | None = None
        self.peak: int | None = None
        self._used = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(_nvml_index(device))
            self._used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used
            self.baseline = self.peak = self._used()
        except Exception:  # no NVML here: the torch peaks remain
            self._used = None

    def read(self) -> None:
        """Call between steps (outside the timed region): folds the memory in use now into the peak."""
        if self._used is not None:
            self.peak = max(self.peak, self._used())


def _nvml_index(device: torch.device) -> int:
    """NVML numbers all GPUs; torch numbers the visible ones (CUDA_VISIBLE_DEVICES)."""
    try:
        return torch.cuda._get_nvml_device_index(device)  # private but what torch.cuda.memory_usage uses
    except Exception:
        return device.index or 0


def rss_peak_gb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def torch_peaks_gb(device: torch.device) -> tuple[float | None, float | None]:
    if device.type != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated(device) / GB, torch.cuda.max_memory_reserved(device) / GB
