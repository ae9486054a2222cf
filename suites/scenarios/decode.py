"""Decode at length T (and the prefill that builds the cache, as its own `prefill` row).

"Decode at length T" is the steady-state cost of one step with T tokens of context: the prompt is prefilled in one
pass (or the cache filled with random values when the suite says fill = "random"), then every timed step sees
exactly T tokens (see contestants/base.py for how each cache is rewound).
"""
from __future__ import annotations

from ..contestants.base import Contestant
from ..plan import Group, Point
from ..trackers import GB, summarize
from .context import Context


# The energy window is the timed loop's wall time, so it holds the GPU work `between_steps` queues outside the timing
# events (the cut-back of a torch.cat-grown cache: a copy of the cache per step) as well as the steps'. It is measured,
# not apportioned (splitting it by event time would assume equal power in both), and the row says it is in.
BETWEEN_ENERGY_NOTE = "energy includes the untimed cache cut-back between steps"


def run(ctx: Context, c: Contestant, g: Group, p: Point, common: dict) -> list[dict]:
    return measure(ctx, c, g, p, p.batch_size, common)


def measure(ctx: Context, c: Contestant, g: Group, p: Point, batch: int, common: dict, phase: str = "decode") -> list[dict]:
    s, T = g.settings, p.seq_len
    mem = ctx.tracker()
    rows = []
    if getattr(s, "prefill_segment", 0):
        c.prefill_segment = s.prefill_segment
    # peers that cannot run a prompt are always filled; their fill time is not a prefill and gets no row
    run_prompt = s.fill == "prefill" and c.can_prefill
    if not run_prompt:
        c.fill(batch, T)
        if s.fill == "random":
            common = dict(common, notes="; ".join(filter(None, [common.get("notes"),
                          "cache/state filled with random values to length T (no prompt run)"])))
    elif s.prefill and s.prefill_warmup:  # the first call at a shape pays for kernel selection: keep it out
        c.prefill(batch, T)
        c.end()
        ctx.free()
    if run_prompt:
        repeats = getattr(s, "prefill_repeats", 1) if s.prefill else 1
        times = []
        # one window per timed prefill, each between two syncs: c.end() between them is in none
        prefill_energy = ctx.energy()
        with mem:
            for i in range(repeats):
                if i:
                    c.end()  # each timed prefill builds its cache from scratch, as the first did
                times.append(ctx.once().time_once(lambda: c.prefill(batch, T), energy=prefill_energy))
        prefill_mem = mem.result()
        prefill = summarize(times)
    an = c.analytic(batch, T)
    if s.prefill and run_prompt:
        rows.append(ctx.make_row(g, Point("prefill", batch, T), "ok", ms_median=prefill.ms_median,
                                 ms_p10=prefill.ms_p10, ms_p90=prefill.ms_p90, n_repeats=prefill.n,
                                 tokens_per_s=batch * T / (prefill.ms_median / 1e3),
                                 weights_gb=an.weights_bytes / GB, **prefill_mem,
                                 **prefill_energy.result(batch * T * repeats),
                                 **dict(common, kernel=getattr(c, "prefill_kernel", c.kernel))))
    ctx.free()  # decode memory is measured without the prefill's freed activations
    energy = ctx.energy()
    with mem:
        c.begin_decode()  # with CUDA graphs, the step is captured here (after an eager run of it)
        # The first run of the step at a new shape does one-time work: the Triton autotuners benchmark their configs
        # (scratch: a 256 MB cache-flush buffer, and a clone of the state they restore, 2.1 GB at RetNet 6.7B batch
        # 252). A decode point's memory is the steady state, so its peaks restart after the first step. A capacity
        # probe keeps the first step in its peak: the code as shipped must fit the batch at every moment, and the
        # state pass's autotuner, whose key holds the batch, tunes again at each new batch size
        # (results/reference/h200/2026-11-29-probes-s10). The other warm-up steps (at least one) are in both peaks.
        c.step()
        c.between_steps()
        if phase != "capacity_probe":
            mem.warmed_up()
        for _ in range(max(s.warmup - 1, 1)):
            c.step()
            c.between_steps()
        timing = ctx.latency(s).time(c.step, between=c.between_steps, energy=energy)
    joules = energy.result(batch * timing.n)  # every timed step decodes one token per sequence
    if joules["energy_j"] is not None and c.works_between_steps:
        common = dict(common, notes="; ".join(filter(None, [common.get("notes"), BETWEEN_ENERGY_NOTE])))
    rows.append(ctx.make_row(
        g, Point(phase, batch, T), "ok", ms_median=timing.ms_median, ms_p10=timing.ms_p10,
        ms_p90=timing.ms_p90, n_repeats=timing.n, tokens_per_s=batch / (timing.ms_median / 1e3),
        ms_per_token=timing.ms_median, mem_analytic_gb=an.mem_bytes / GB, weights_gb=an.weights_bytes / GB,
        bytes_per_step=an.bytes_per_step, flops_per_token=an.flops_per_token,
        **ctx.roofline(an.bytes_per_step, timing.ms_median), **mem.result(), **joules, **common))
    c.end()
    ctx.free()
    return rows
