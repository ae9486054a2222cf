"""Measurement trackers, one small class per quantity (latency, memory, energy), reused by every phase.

Timing rules: warm-up happens before a tracker starts; on CUDA each call is bracketed by CUDA events (no host
sync inside the timed region except the final one); on CPU by perf_counter. Memory: NVML (device-wide, what
`nvidia-smi` shows) is read at a point's start and end, never by a thread during it (see `nvml_sampler`), torch's
allocator peaks are read at the end, and RSS is sampled by a background thread on CPU. Energy: NVML's total-energy
counter, read right before the first timed call and right after the timed region's final synchronize (see
`EnergyTracker`), never by a thread either.
"""
from __future__ import annotations

import gc
import os
import resource
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

GB = 1e9


@dataclass
class Timing:
    ms_median: float
    ms_p10: float
    ms_p90: float
    n: int


def summarize(ms: list[float]) -> Timing:
    if not ms:
        raise ValueError("no timed repeats")
    qs = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else [ms[0]] * 9
    return Timing(statistics.median(ms), qs[0], qs[-1], len(ms))


class LatencyTracker:
    """Times `fn` repeatedly: at least `min_steps` calls and at least `min_seconds`, at most `max_steps`.

    On CUDA, events are recorded around each call and read after one sync at the end, so the host never
    waits between steps (the GPU queue stays full, as in real decoding).
    """

    def __init__(self, device: torch.device, min_steps: int = 5, min_seconds: float = 2.0, max_steps: int = 200):
        self.device, self.min_steps, self.min_seconds, self.max_steps = device, min_steps, min_seconds, max_steps

    def time(self, fn: Callable[[], object], between: Callable[[], object] | None = None,
             energy: "EnergyTracker | None" = None) -> Timing:
        """`between`, if given, runs after every timed call, outside the events (its GPU work is queued after the
        end event and before the next start event, so it is in no step's time).

        `energy`, if given, reads the energy counter right before the first timed call and right after the final
        synchronize. Its window is wall time, not event time: it includes `between`'s GPU work (the cut-back of
        torch.cat-grown caches) and any GPU idle time between steps, and `EnergyTracker.result` divides by the same
        wall window (power) and by every token of it (joules per token), never by the summed event times."""
        cuda = self.device.type == "cuda"
        ms: list[float] = []
        events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        if energy is not None:  # with a counter it synchronises first: warm-up's queued GPU work is not in the window
            energy.start(self.device)
        start_wall = time.perf_counter()
        n = 0
        while n < self.max_steps and (n < self.min_steps or time.perf_counter() - start_wall < self.min_seconds):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                events.append((a, b))
                if len(events) % 8 == 0:  # let the wall clock see GPU progress without syncing each step
                    events[-8][1].synchronize()
            else:
                t0 = time.perf_counter()
                fn()
                ms.append((time.perf_counter() - t0) * 1e3)
            if between is not None:
                between()
            n += 1
        if cuda:
            torch.cuda.synchronize(self.device)
        if energy is not None:
            energy.stop()
        if cuda:
            ms = [a.elapsed_time(b) for a, b in events]
        return summarize(ms)

    def time_once(self, fn: Callable[[], object], energy: "EnergyTracker | None" = None) -> float:
        """One call, synchronised on both sides (for long calls such as a prefill to 8k). `energy`, if given, adds
        this call's window (from the first sync to the last: nothing else runs in it) to what it has measured."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if energy is not None:
            energy.start(self.device)
        t0 = time.perf_counter()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        ms = (time.perf_counter() - t0) * 1e3
        if energy is not None:
            energy.stop()
        return ms


class PeakSampler:
    """`peak` is the max of `used()` (bytes) seen between enter and exit: read at enter and exit, and in between by a
    background thread every `interval_s` when `poll` (None: no thread; the caller may `read()` between steps)."""

    def __init__(self, used: Callable[[], int], interval_s: float | None = 0.005):
        self.used, self.interval_s = used, interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> None:
        self.peak = max(self.peak, self.used())

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakSampler":
        self.peak = self.used()
        self._stop.clear()
        if self.interval_s is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.used())


def nvml_sampler(device_index: int = 0) -> PeakSampler:
    """NVML's used memory of one GPU (device-wide, what `nvidia-smi` shows), read at a point's start and end (after
    a sync) with no polling thread. Why: a thread in the measuring process that read NVML every 5 ms slowed the
    launch-bound work it measured (H200, a RetNet 1.3B training step 243 vs 177 ms; see
    retnet_bench.suites.training.measure). The end read sees the point's peak only where the caching allocator handed
    nothing back to the driver in between: MemoryTracker.warmed_up empties the cache after a decode point's first
    step (its one-time scratch is no decode memory), and a peak reached and released without that also escapes the
    end read (the capacity search counts torch's reserved peak for that reason)."""
    import pynvml  # provided by nvidia-ml-py

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
    return PeakSampler(lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used), interval_s=None)


def nvml_index(device: torch.device) -> int:
    """NVML numbers every GPU of the host; torch only the visible ones (CUDA_VISIBLE_DEVICES): map the index."""
    try:
        return torch.cuda._get_nvml_device_index(device)  # private but what torch.cuda.memory_usage uses
    except Exception:
        return device.index or 0


class EnergyCounter:
    """NVML's total-energy counter of one GPU: millijoules since the driver was loaded (Volta and newer)."""

    def __init__(self, nvml: Any, handle: Any, index: int) -> None:
        self._nvml, self._handle, self.index = nvml, handle, index

    def read_mj(self) -> int | None:
        """The counter now, or None where it cannot be read: energy is an extra column, never a failed point."""
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception:  # NVMLError_NotSupported (pre-Volta, some virtual GPUs), a lost GPU, ...
            return None


def energy_counter(device: torch.device) -> EnergyCounter | None:
    """`device`'s energy counter, or None: not a GPU, no NVML, or no counter on this GPU. Read once here, so that a
    GPU without one is known before any point and no point reads it."""
    if device.type != "cuda":
        return None
    try:
        import pynvml  # provided by nvidia-ml-py

        pynvml.nvmlInit()
        index = nvml_index(device)
        counter = EnergyCounter(pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), index)
    except Exception:  # NVML missing or not permitted
        return None
    return counter if counter.read_mj() is not None else None


# The counter advances in steps: every ~100 ms on the H200 (median 99.9 ms, max 126 ms over 2 s of load;
# results/reference/h200/2026-11-29-probes-s9/energy_counter.json), so a window is resolved to about one step. Below
# ten steps' worth of window (10% resolution) the columns stay None: fig6's 0.3 s decode windows measured 629 W for a
# load that 1 s and 3 s windows put at 690-723 W.
ENERGY_MIN_WINDOW_S = 1.0


def energy_columns(joules: float | None, wall_s: float, tokens: int) -> dict[str, float | None]:
    """The rows' energy columns: `joules` over a timed region of `wall_s` seconds that processed `tokens` tokens;
    None where the window is shorter than ENERGY_MIN_WINDOW_S (the counter cannot resolve it)."""
    if joules is None or wall_s <= 0 or wall_s < ENERGY_MIN_WINDOW_S or tokens <= 0:
        return {"energy_j": None, "joules_per_token": None, "avg_power_w": None}
    return {"energy_j": joules, "joules_per_token": joules / tokens, "avg_power_w": joules / wall_s}


class EnergyTracker:
    """GPU energy of a point's timed region from NVML's total-energy counter, over one or more windows (a timed
    loop is one; each timed prefill of a point is one). `start(device)` synchronises, so that warm-up's queued work
    is not in the window, then reads; `stop()` reads right after the caller's final synchronize. Never read by a
    thread while timed work runs (a sampler thread slowed the step it measured: see `nvml_sampler`).

    The counter is device-wide (every process on the GPU) and advances in steps (20-100 ms on recent GPUs, as PETSc
    documents it), so a window is resolved to about one step: its length is energy_j / avg_power_w. A window in
    which the counter did not advance, or any read that failed, makes the whole result None: no number rather than
    a made-up one. Without a counter (CPU, no NVML, an old GPU) the tracker is inert and its columns are None."""

    def __init__(self, counter: EnergyCounter | None = None) -> None:
        self.counter = counter
        self.joules: float | None = 0.0 if counter is not None else None
        self.wall_s = 0.0
        self.shortest_s = float("inf")  # every window must be resolved on its own: a sum of short ones is biased
        self._start: tuple[int | None, float] | None = None

    def start(self, device: torch.device) -> None:
        if self.counter is None:
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self._start = (self.counter.read_mj(), time.perf_counter())

    def stop(self) -> None:
        if self.counter is None or self._start is None:
            return
        end_mj, end_s = self.counter.read_mj(), time.perf_counter()
        start_mj, start_s = self._start
        self._start = None
        self.wall_s += end_s - start_s
        self.shortest_s = min(self.shortest_s, end_s - start_s)
        if self.joules is None or start_mj is None or end_mj is None or end_mj <= start_mj:
            self.joules = None
        else:
            self.joules += (end_mj - start_mj) / 1e3

    def result(self, tokens: int) -> dict[str, float | None]:
        """energy_j, joules_per_token (over the `tokens` the windows processed) and avg_power_w (over their wall
        time); all None where nothing was measured."""
        if self.shortest_s < ENERGY_MIN_WINDOW_S:  # a window under the counter's resolution (a short prefill)
            return energy_columns(None, self.wall_s, tokens)
        return energy_columns(self.joules, self.wall_s, tokens)


def rss_peak_bytes() -> int:
    """Peak resident set size of this process over its whole life (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; the lifetime peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return rss_peak_bytes()


class AllocRetries:
    """The caching allocator's cudaMalloc retries since this object was made (torch's `num_alloc_retries` is
    cumulative per process and `reset_peak_memory_stats` leaves it alone): each retry freed the cache and
    synchronised the device, so a count above 0 says the measured work ran at the GPU's memory limit."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = self._now()

    def _now(self) -> int | None:
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.memory_stats(self.device).get("num_alloc_retries", 0))

    def count(self) -> int | None:
        now = self._now()
        return None if now is None or self.base is None else now - self.base


class MemoryTracker:
    """Memory of one sweep point: NVML peak (absolute and minus the idle baseline), torch peaks, RSS."""

    def __init__(self, device: torch.device, idle_baseline_bytes: int | None = None, use_nvml: bool = True):
        self.device = device
        self.sampler: PeakSampler | None = None
        if device.type == "cuda" and use_nvml:
            try:
                # NVML numbers every GPU of the host; CUDA only the visible ones (CUDA_VISIBLE_DEVICES): map the index
                self.sampler = nvml_sampler(nvml_index(device))
            except Exception:  # NVML missing or not permitted: torch numbers still come
                self.sampler = None
        self.idle_baseline = idle_baseline_bytes
        if self.idle_baseline is None and self.sampler is not None:
            self.idle_baseline = self.sampler.used()
        # CPU: RSS sampled during each point, reported as its growth over the RSS at the point's start: the process's
        # own level (interpreter, libraries imported by earlier contestants, weights built before the point) depends
        # on run order, the growth does not; freed heap is handed back between points
        self.rss = PeakSampler(rss_bytes) if device.type == "cpu" else None
        self.rss_baseline = rss_bytes() if self.rss is not None else None

    def __enter__(self) -> "MemoryTracker":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.retries = AllocRetries(self.device)
        if self.sampler is not None:
            self.sampler.__enter__()
        if self.rss is not None:
            self.rss_baseline = rss_bytes()
            self.rss.__enter__()
        return self

    def warmed_up(self) -> None:
        """Call after a decode point's first step: the torch peaks restart from what is alive now (weights, state or
        cache, CUDA graph pools) and freed cached blocks go back, so that the first step's one-time transients (a
        Triton autotuner's benchmark scratch: its 256 MB cache-flush buffer, a clone of the state it restores) count
        in no decode memory. A step's own temporaries come back in the later steps. (A capacity probe does not call
        it: a batch must fit its first step too.)
        Measured on the H200: a fig6 point that autotuned the decode projections at its first step held 0.20-0.33 GB
        more allocator peak than the same point tuned earlier (2026-11-29-probes-s9); RetNet's 6.7B capacity probes
        at batch 242-268 held 2.4-2.6 GB above their weights and state (2026-11-29-probes-s10)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()  # a live CUDA graph's private pool is kept
            torch.cuda.reset_peak_memory_stats(self.device)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.sampler is not None:
            self.sampler.__exit__(*exc)
        if self.rss is not None:
            self.rss.__exit__(*exc)

    def result(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"mem_rss_peak_gb": None}
        if self.rss is not None:  # this point's RSS peak above the RSS at its start (CONTRACTS.md)
            out["mem_rss_peak_gb"] = max(self.rss.peak - (self.rss_baseline or 0), 0) / GB
        if self.device.type == "cuda":
            out["mem_torch_peak_gb"] = torch.cuda.max_memory_allocated(self.device) / GB
            out["mem_torch_reserved_gb"] = torch.cuda.max_memory_reserved(self.device) / GB
            out["alloc_retries"] = self.retries.count()
        if self.sampler is not None:
            out["mem_nvml_peak_gb"] = self.sampler.peak / GB
            out["mem_nvml_delta_gb"] = (self.sampler.peak - (self.idle_baseline or 0)) / GB
        return out


def free_device_memory(device: torch.device) -> None:
    """Give back everything the last point allocated, so that the next point's memory does not depend on history.

    Call only when no CUDA graph is alive. cuBLAS keeps one workspace (tens of MiB on Hopper) per stream it has run
    on, outside empty_cache's reach; every graph capture runs on a fresh side stream, so without the clear a sweep
    accumulated up to 32 pooled streams' workspaces (~1 GiB) and every later point's memory was overstated by that.
    """
    gc.collect()
    if device.type == "cpu":
        _malloc_trim()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        if hasattr(torch._C, "_cuda_clearCublasWorkspaces"):  # private but stable since torch 2.0; inductor uses it
            torch._C._cuda_clearCublasWorkspaces()
        torch.cuda.empty_cache()


def _malloc_trim() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise, and the next point's RSS would include it)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_copy_bandwidth_gbps(device: torch.device, nbytes: int = 2 * 1024**3, repeats: int = 10) -> float | None:
    """Device-to-device copy bandwidth in GB/s counting bytes read + written (the roofline's ceiling)."""
    if device.type != "cuda":
        return None
    n = nbytes // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    t = LatencyTracker(device, min_steps=repeats, min_seconds=0.0, max_steps=repeats).time(lambda: dst.copy_(src))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (t.ms_median / 1e3) / GB


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
