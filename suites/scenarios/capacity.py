"""Equal memory budget: the exact largest batch at T whose measured decode memory fits the budget, and its
throughput (paper framing: what an A100-80GB serves). The budget is in GiB, as the paper's memory numbers: the
A100-80GB has 80 GiB (85.9 GB); measured memory is in GB (1e9 bytes) and is compared in bytes.

Search: the analytic size gives the first guess; from there we step up (or down), 10% of the guess first and twice
as far each time, until the ok/over-budget boundary is bracketed, then bisect until the largest ok batch B has an over-budget (or OOM) batch B + 1 beside it.
Every probe is a `capacity_probe` row (ok, over_budget or oom); the answer is one `capacity` row that repeats the
largest ok probe (or says no batch fits), so a resumed run knows the point is finished by that row alone.
"""
from __future__ import annotations

import math

from ..contestants.base import Contestant
from ..contract import GIB
from ..plan import Group, Point
from ..trackers import GB
from . import decode
from .context import Context, fmt_error, is_oom

PROBE = "capacity_probe"
MAX_PROBES = 24  # bisection over [1, 1024] needs ~10; the bracket search a few more


def _used_gb(row: dict) -> float:
    """A probe's device memory: NVML's delta, but at least torch's reserved peak. NVML is read at a probe's start
    and end only, and a peak the allocator reached and released in between escapes it: at 6.7B, T=8192, RetNet's
    batch-245 probe read 79.9 GB by NVML with 83.8 GB reserved (results/reference/h200/2026-11-29-probes-s9).
    Without either, the analytic estimate; without that, nothing fits."""
    measured = [row[k] for k in ("mem_nvml_delta_gb", "mem_torch_reserved_gb") if row.get(k) is not None]
    if measured:
        return max(measured)
    return row["mem_analytic_gb"] if row.get("mem_analytic_gb") is not None else math.inf


def within_budget(used_gb: float, budget_gib: float) -> bool:
    """A probe's measured memory (GB of 1e9 bytes, the unit of every memory column) against the budget (GiB)."""
    return used_gb * GB <= budget_gib * GIB


def first_guess(c: Contestant, seq_len: int, budget_bytes: float, max_batch: int) -> int:
    """(budget - weights) / per-sequence cache bytes, from the analytic model."""
    one, two = c.analytic(1, seq_len), c.analytic(2, seq_len)
    per_seq = max(two.cache_bytes - one.cache_bytes, 1)
    return max(1, min(int((budget_bytes - one.weights_bytes) // per_seq), max_batch))


def search(probe, guess: int, max_batch: int) -> tuple[int | None, list[int]]:
    """The largest batch in [1, max_batch] for which probe(batch) is True, assuming fit is monotone in batch.
    Returns (answer or None, batches probed in order). `probe` is called at most MAX_PROBES times."""
    seen: dict[int, bool] = {}

    def fits(b: int) -> bool:
        if b not in seen:
            if len(seen) >= MAX_PROBES:
                raise RuntimeError(f"capacity search did not converge in {MAX_PROBES} probes")
            seen[b] = probe(b)
        return seen[b]

    b = guess
    step = max(1, guess // 10)  # ~10% of the guess first; doubled after each step, so a bad guess costs log probes
    if fits(b):
        lo, hi = b, None
        while hi is None and lo < max_batch:  # step up until one does not fit
            nxt = min(max_batch, lo + step)
            step *= 2
            if fits(nxt):
                lo = nxt
            else:
                hi = nxt
        if hi is None:
            return lo, list(seen)
    else:
        lo, hi = None, b
        while lo is None and hi > 1:  # step down until one fits
            nxt = max(1, hi - step)
            step *= 2
            if fits(nxt):
                lo = nxt
            else:
                hi = nxt
        if lo is None:
            return None, list(seen)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, list(seen)


def run(ctx: Context, c: Contestant, g: Group, p: Point, common: dict) -> list[dict]:
    s, T, budget_gib = g.settings, p.seq_len, g.settings.memory_budget_gib
    said = f"{budget_gib:g} GiB ({budget_gib * GIB / GB:.4g} GB)"  # GB: the unit of the measured memory columns
    cap = dict(common, capacity_budget_gib=budget_gib)
    rows: list[dict] = []
    ok_rows: dict[int, dict] = {}

    def probe(batch: int) -> bool:
        try:
            row = decode.measure(ctx, c, g, Point(PROBE, batch, T), batch, cap, phase=PROBE)[-1]
        except Exception as e:  # noqa: BLE001 - an OOM is an answer ("does not fit"); anything else is not
            c.end()
            ctx.free()
            if not is_oom(e):
                raise
            rows.append(ctx.make_row(g, Point(PROBE, batch, T), "oom", error=fmt_error(e), **cap))
            return False
        used = _used_gb(row)
        fits = within_budget(used, budget_gib)
        if not fits:
            row.update(status="over_budget", error=f"{used:.4g} GB > budget {said}")  # 85.92 GB > 85.9 GB
        rows.append(row)
        if fits:
            ok_rows[batch] = row
        return fits

    best, _ = search(probe, first_guess(c, T, budget_gib * GIB, s.max_batch), s.max_batch)
    if best is None:
        rows.append(ctx.make_row(g, Point("capacity", None, T), "over_budget", error=f"no batch fits {said}",
                                 **cap))
        return rows
    answer = dict(ok_rows[best], phase="capacity")
    edge = "the largest batch tried" if best == s.max_batch else f"batch {best + 1} does not fit"
    answer["notes"] = "; ".join(filter(None, [answer.get("notes"), f"largest batch within {said} ({edge})"]))
    rows.append(answer)
    return rows
