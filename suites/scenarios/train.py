"""Training step rows (paper Table 4). Single process: the contestant's own step (forward + backward) in this
process; the distributed engine (suites/training/) runs real optimizer steps over 1..N ranks."""
from __future__ import annotations

from ..contestants.base import Contestant
from ..plan import Group, Point
from ..trackers import GB
from .context import Context


def run(ctx: Context, c: Contestant, g: Group, p: Point, common: dict) -> list[dict]:
    s = g.settings
    for _ in range(max(1, s.warmup)):  # warm-up: allocates grads, autotunes kernels
        c.train_step(p.batch_size, p.seq_len)
    mem = ctx.tracker()
    with mem:
        timing = ctx.latency(s).__class__(ctx.device, s.steps, 0.0, s.steps).time(
            lambda: c.train_step(p.batch_size, p.seq_len))
    an = c.analytic(p.batch_size, p.seq_len)
    tokens = p.batch_size * p.seq_len
    tps = tokens / (timing.ms_median / 1e3)
    return [ctx.make_row(g, p, "ok", ms_median=timing.ms_median, ms_p10=timing.ms_p10, ms_p90=timing.ms_p90,
                         n_repeats=timing.n, tokens_per_s=tps, tokens_per_s_per_gpu=tps,
                         weights_gb=an.weights_bytes / GB, flops_per_token=3 * an.flops_per_token,
                         **mem.result(), **common)]
