"""Per-rank measurement: step timer (CUDA events / perf_counter), NVML peak sampler for the rank's own GPU, memory."""
from __future__ import annotations

import resource
import threading
import time

import torch

GB = 1024**3
NVML_PERIOD_S = 0.005  # as the runner's tracker: 5 ms


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


class NvmlPeakSampler:
    """Peak device memory in use on this rank's GPU (NVML, every 5 ms in a thread), and the baseline at creation.
    Inert (all None) without pynvml / a GPU. Device-wide: it includes the CUDA context and NCCL's buffers."""

    def __init__(self, device: torch.device) -> None:
        self.baseline: int | None = None
        self.peak: int | None = None
        self._handle = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = _nvml_index(device)
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._used = lambda: pynvml.nvmlDeviceGetMemoryInfo(self._handle).used
            self.baseline = self.peak = self._used()
        except Exception:  # no NVML here: the torch peaks remain
            self._handle = None

    def start(self) -> None:
        if self._handle is None:
            return
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            self._stop.wait(NVML_PERIOD_S)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._used())
            self._thread = None


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
