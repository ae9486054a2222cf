"""Op level (`kernels` suite): one layer's attention or retention, forward / forward+backward / one decode step."""
from __future__ import annotations

from ..contestants.base import Contestant
from ..plan import Group, Point
from .context import Context


def run(ctx: Context, c: Contestant, g: Group, p: Point, common: dict) -> list[dict]:
    s = g.settings
    mem, energy = ctx.tracker(), ctx.energy()
    with mem:
        c.setup(p.phase, p.batch_size, p.seq_len)
        for _ in range(s.warmup):
            c.step()
        timing = ctx.latency(s).time(c.step, energy=energy)
    an = c.analytic(p.batch_size, p.seq_len)
    tokens = p.batch_size * (1 if p.phase == "op_decode" else p.seq_len)
    extra = ctx.roofline(an.bytes_per_step, timing.ms_median) if an.bytes_per_step else {}
    row = ctx.make_row(g, p, "ok", ms_median=timing.ms_median, ms_p10=timing.ms_p10, ms_p90=timing.ms_p90,
                       n_repeats=timing.n, tokens_per_s=tokens / (timing.ms_median / 1e3),
                       bytes_per_step=an.bytes_per_step or None, **extra, **mem.result(),
                       **energy.result(tokens * timing.n), **common)
    c.end()
    ctx.free()
    return [row]
