"""A profiled training step's kernel timeline, in plain Python (scripts/profile_train_step.py's arithmetic): each
kernel's category by name, GPU busy time, communication and the part of it no compute kernel overlaps (exposed), and
the gaps where the GPU sat idle with the host calls that ran meanwhile. Spans are (name or category, start_us,
end_us); results are ms per step."""
from __future__ import annotations

import bisect
import re
from collections import defaultdict

# the interval arithmetic is the training engine's own (its rows' gpu_compute_ms and exposed_comm_ms come from it)
from retnet_bench.suites.training.gpu_time import gpu_time_ms, length as _length, union as _union

# first match wins; the names are those of fla-core 0.6 (Triton), FlashAttention-4 (CuTe DSL), cuDNN, cuBLAS
CATEGORIES = (
    # FSDP2's reduce-scatter copy-in (torch._chunk_cat) and all-gather copy-out: before "chunk", which is fla's
    ("fsdp copy-in/out", r"chunk_cat|split_with_sizes_copy|all_gather_copy"),
    ("retention (fla)", r"chunk|gla|fwd_kernel_h|bwd_kernel_dh|simple_gla|cumsum"),
    ("attention", r"flash|fmha|cudnn|attention|sdpa|softmax"),
    ("gemm", r"gemm|nvjet|xmma|cutlass|matmul|splitk"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("norm", r"norm"),
    ("communication", r"nccl|all_gather|reduce_scatter"),
    ("elementwise/copy", r"elementwise|vectorized|copy|cat|fill|index|reduce|triton"),
)


def category(name: str) -> str:
    low = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, low):
            return label
    return "other"


def overlap_ms(kernels: list[tuple[str, float, float]], steps: int) -> dict[str, float]:
    """GPU busy time, communication time and exposed communication (no compute kernel running), ms per step, from
    (category, start_us, end_us) per kernel: the engine's `gpu_time_ms` with communication told by category."""
    t = gpu_time_ms(kernels, is_comm=lambda c: c == "communication")
    return dict(gpu_busy_ms=round((t["gpu_compute_ms"] + t["exposed_comm_ms"]) / steps, 2),
                comm_ms=round(t["gpu_comm_ms"] / steps, 2), exposed_comm_ms=round(t["exposed_comm_ms"] / steps, 2))


def idle_gaps(kernels: list[tuple[str, float, float]], host: list[tuple[str, float, float]], steps: int,
              min_us: float = 500.0, top: int = 8) -> dict:
    """Where the GPU sat idle inside the profiled window, and what the host was doing meanwhile.

    kernels: (name, start_us, end_us) per GPU kernel; host: (name, start_us, end_us) per CUDA runtime call or
    top-level CPU op. A gap is time between the union of kernel spans; gaps of at least min_us are the ones a
    stall makes (an allocator retry's cudaFree, a host-side sync, a launch-bound stretch). Returns ms per step:
    all idle time, the idle time in long gaps, the host calls overlapping those gaps (by name), and the longest
    gaps with the kernels on either side."""
    busy = _union([(a, b) for _, a, b in kernels])
    gaps = [(busy[i][1], busy[i + 1][0]) for i in range(len(busy) - 1)]
    long_gaps = [g for g in gaps if g[1] - g[0] >= min_us]
    by_call: dict[str, float] = defaultdict(float)
    for name, a, b in host:
        for lo, hi in long_gaps:
            if a < hi and b > lo:
                by_call[name] += min(b, hi) - max(a, lo)
    ordered = sorted(kernels, key=lambda k: k[2])  # by end time: the kernel before a gap ends at its start
    ends = [k[2] for k in ordered]
    starts = sorted(kernels, key=lambda k: k[1])
    first_starts = [k[1] for k in starts]

    def around(lo: float, hi: float) -> tuple[str, str]:
        i = bisect.bisect_right(ends, lo) - 1
        j = bisect.bisect_left(first_starts, hi)
        return (ordered[i][0][:80] if i >= 0 else "", starts[j][0][:80] if j < len(starts) else "")

    longest = []
    for lo, hi in sorted(long_gaps, key=lambda g: g[0] - g[1])[:top]:
        before, after = around(lo, hi)
        calls = sorted(((n, min(b, hi) - max(a, lo)) for n, a, b in host if a < hi and b > lo), key=lambda c: -c[1])
        longest.append(dict(ms=round((hi - lo) / 1e3, 3), after_kernel=before, before_kernel=after,
                            host=[f"{n[:60]} {t / 1e3:.2f} ms" for n, t in calls[:4]]))
    return dict(idle_ms=round(_length(gaps) / 1e3 / steps, 2),
                idle_long_gaps_ms=round(_length(long_gaps) / 1e3 / steps, 2),
                long_gaps_per_step=round(len(long_gaps) / steps, 2),
                host_in_long_gaps_ms={n: round(t / 1e3 / steps, 3)
                                      for n, t in sorted(by_call.items(), key=lambda kv: -kv[1])[:12]},
                longest_gaps=longest)
