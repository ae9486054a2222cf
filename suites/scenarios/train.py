"""Training rows (paper Table 4).

With `optimizer = true` (the default) a point is a real training step on the distributed engine (suites/training/):
forward, backward and AdamW with fp32 master weights, bf16 compute and fp32 gradient reduction, FSDP2 over `nproc`
ranks (one process per GPU, launched through torch's elastic launcher; in-process for one rank). A contestant
without an engine recipe (or `optimizer = false`) is timed as forward + backward of its own model in this process,
as the paper's Table 4 pipeline did; its notes say so.
"""
from __future__ import annotations

import torch

from ..contestants.base import Contestant
from ..contestants.spec import BuildArgs
from ..contract import FORWARD_BACKWARD_ONLY
from ..plan import Group, Point
from ..trackers import GB
from .context import Context


def run_engine(ctx: Context, g: Group, p: Point, args: BuildArgs) -> list[dict]:
    """One point on the training engine; its failures (OOM on a rank, a dead rank) come back as the row's status."""
    from ..training import TrainSettings, run_point

    s = g.settings
    half = ctx.dtype in (torch.bfloat16, torch.float16)
    settings = TrainSettings(micro_batch=p.batch_size, grad_accum=s.grad_accum, seq_len=p.seq_len,
                             chunk_size=s.chunk_size, steps=s.steps, warmup_steps=s.warmup,
                             checkpointing=s.checkpointing, compile=s.compile, tp=s.tp,
                             compute_dtype="bfloat16" if half else "float32",
                             seed=args.seed, nvml_sampling=bool(ctx.memory and ctx.memory.sampler))
    recipe = g.spec.recipe(args)
    recipe.resolved_kernel(ctx.device, settings.torch_compute_dtype)  # a kernel refused here raises before any rank
    recipe.check_engine_settings(settings.checkpointing, settings.compile)  # so does a kernel-setting pair
    point = run_point(g.world_size, recipe, settings, device_type=ctx.device.type)
    fields = point.row_fields(settings)
    # the row keeps the plan's identity (its resume key): batch is the micro-batch per rank, as the suite names it
    fields.update(batch_size=p.batch_size, kernel=g.kernel, world_size=g.world_size, device=ctx.device.type)
    fields["notes"] = f"{fields.get('notes') or ''}; {settings.sequences_per_step(g.world_size)} sequences per step"
    return [ctx.make_row(g, p, **fields)]


def run(ctx: Context, c: Contestant, g: Group, p: Point, common: dict) -> list[dict]:
    """Forward + backward of the contestant's own model (no optimizer), in this process."""
    s = g.settings
    for _ in range(max(1, s.warmup)):  # warm-up: allocates grads, autotunes kernels
        c.train_step(p.batch_size, p.seq_len)
    mem, energy = ctx.tracker(), ctx.energy()
    with mem:
        timing = ctx.fixed(s.steps).time(lambda: c.train_step(p.batch_size, p.seq_len), energy=energy)
    an = c.analytic(p.batch_size, p.seq_len)
    tps = p.batch_size * p.seq_len / (timing.ms_median / 1e3)
    notes = "; ".join(filter(None, [common.get("notes"), FORWARD_BACKWARD_ONLY]))
    return [ctx.make_row(g, p, "ok", ms_median=timing.ms_median, ms_p10=timing.ms_p10, ms_p90=timing.ms_p90,
                         n_repeats=timing.n, tokens_per_s=tps, tokens_per_s_per_gpu=tps,
                         weights_gb=an.weights_bytes / GB, flops_per_token=3 * an.flops_per_token,
                         **energy.result(p.batch_size * p.seq_len * timing.n), **mem.result(),
                         **dict(common, notes=notes))]
