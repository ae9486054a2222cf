"""Bad input found before a run starts (one line, exit 2 at the CLI): names, phases, lengths, the decode projections'
setting, and a model too large for a CPU's memory. Nothing here builds a model or opens a run folder."""
from __future__ import annotations

import torch

from .env import available_ram_gb
from .plan import check_phases
from .suite import Suite
from .contract import GIB
from .trackers import GB


def check_suite(suite: Suite, device: torch.device) -> None:
    """Bad input before anything runs (ValueError, one line): unknown names, an impl in a scenario it has no phase
    in, lengths beyond a preset's limit, variants a model cannot have."""
    from retnet.config import PRESETS

    from .contestants.spec import get_spec, known_kernels

    for m in suite.models:
        if m not in PRESETS:
            raise ValueError(f"unknown model {m!r} (choose from {', '.join(PRESETS)})")
    for kind, sc in suite.scenarios.items():
        for name in sc.impls:
            get_spec(name)
        for k in sc.kernels:
            if k not in known_kernels():
                raise ValueError(f"unknown kernel {k!r} (choose from {', '.join(known_kernels())})")
    check_phases(suite)
    check_lengths(suite)
    check_decode_gemm(suite, device)


def check_decode_gemm(suite: Suite, device: torch.device) -> None:
    """A decode_gemm the device cannot run, or one no contestant of the scenario takes, is bad input (before the run
    folder exists)."""
    from .contestants.spec import get_spec
    from .plan import resolved_decode_gemm

    for kind in ("decode", "capacity"):
        sc = suite.scenarios.get(kind)
        if sc is None:
            continue
        takers = [get_spec(name) for name in sc.impls if get_spec(name).decode_gemm]
        for spec in takers:
            resolved_decode_gemm(spec, sc, device, suite.dtype)  # ValueError where "triton" cannot run
        if sc.decode_gemm != "auto" and not takers:
            raise ValueError(f"suite {suite.name!r} [{kind}]: decode_gemm={sc.decode_gemm!r}, but none of "
                             f"{', '.join(sc.impls)} takes it (retnet-recurrent and static do)")


def check_lengths(suite: Suite) -> None:
    from retnet import RetNetConfig
    from retnet_bench.baselines import TransformerConfig

    for kind, sc in suite.scenarios.items():
        lengths = [sc.seq_len] if kind == "capacity" else sc.seq_lens
        for m in suite.models:
            limits = [getattr(c.from_name(m), "max_seq_len", None) for c in (RetNetConfig, TransformerConfig)]
            limit = min((x for x in limits if x), default=None)
            too_long = [t for t in lengths if limit and t > limit]
            if too_long:
                raise ValueError(f"length {too_long[0]} is beyond what model {m!r} supports (max {limit})")


# Over the analytic bytes of a CPU point (weights, cache or state, gradients and optimizer state): activations, the
# allocator's slack and the interpreter with its libraries are not counted, and a run the kernel's OOM killer ends
# loses its point without a word (exit 137), so refuse early with a margin rather than late with none.
CPU_MEMORY_SAFETY = 1.25


def cpu_memory_need_gb(suite: Suite) -> dict[str, tuple[float, str]]:
    """Per model: (GB its largest point needs on a CPU, what that point is). Analytic: weights at the suite dtype,
    plus the KV cache / recurrent state of the largest decode point, or gradients and AdamW moments (fp32) for
    training, or the whole budget a capacity search grows into; times CPU_MEMORY_SAFETY. Both families' sizes are
    taken (a Transformer and a RetNet of one preset differ by a few percent)."""
    from retnet import RetNetConfig
    from retnet import analytic as ra
    from retnet_bench.baselines import TransformerConfig
    from retnet_bench.baselines import analytic as ta

    dtype = getattr(torch, suite.dtype)
    el = dtype.itemsize
    need: dict[str, tuple[float, str]] = {}
    for m in suite.models:
        rcfg, tcfg = RetNetConfig.from_name(m), TransformerConfig.from_name(m)
        params = max(ra.param_count(rcfg), ta.param_count(tcfg))
        weights = params * el
        cands = []
        for kind, sc in suite.scenarios.items():
            if kind == "decode":
                b, t = max(sc.batch_sizes), max(sc.seq_lens)
                cache = max(ta.kv_cache_bytes(tcfg, b, t, dtype), ra.state_bytes(rcfg, b))
                cands.append((weights + cache, f"decode B={b} T={t}: weights and cache at {suite.dtype}"))
            elif kind == "train":  # weights, gradients, two fp32 AdamW moments (+ fp32 master weights below fp32)
                extra = params * (8 + (4 if el < 4 else 0)) if sc.optimizer else 0
                cands.append((2 * weights + extra, f"training at {suite.dtype} with its optimizer state"))
            elif kind == "capacity":
                budget = sc.memory_budget_gib
                cands.append((max(weights, budget * GIB), f"a capacity search up to {budget:g} GiB"))
        size, what = max(cands, default=(weights, f"weights at {suite.dtype}"))
        need[m] = (size * CPU_MEMORY_SAFETY / GB, what)
    return need


def check_cpu_memory(suite: Suite, available_gb: float | None = None) -> None:
    """ValueError (one line) when a model's largest point cannot fit in this machine's available RAM."""
    available_gb = available_ram_gb() if available_gb is None else available_gb
    if available_gb is None:  # no /proc/meminfo (not Linux): nothing to judge by
        return
    for model, (gb, what) in cpu_memory_need_gb(suite).items():
        if gb > available_gb:
            raise ValueError(f"model {model} needs ~{gb:.1f} GB on the CPU ({what}); {available_gb:.1f} GB "
                             "available: pick a smaller --model or a GPU")
