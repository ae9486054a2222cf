"""One training point's result from its ranks' results: the numbers a result row needs."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from retnet.kernels.chunk import FLA_CHUNK, FLA_KERNELS  # fla tiles by 64 tokens whatever chunk_size says

from ..contract import ENGINE_NOTES_PREFIX
from ..trackers import energy_columns
from .launch import RankResult, run_distributed
from .mfu import mfu, retnet_train_flops_per_token, transformer_train_flops_per_token
from .recipe import ModelRecipe
from .step import TrainSettings

@dataclass
class TrainPointResult:
    world_size: int
    status: str  # ok | oom | error (the first rank to fail decides)
    error: str | None
    kernel: str | None
    ms_median: float | None = None  # optimizer step, the slowest rank's time per step
    ms_p10: float | None = None
    ms_p90: float | None = None
    n_repeats: int = 0
    tokens_per_step: int = 0  # all ranks
    tokens_per_s: float | None = None  # all ranks
    tokens_per_s_per_gpu: float | None = None
    flops_per_token: float | None = None
    mfu: float | None = None
    mem_torch_peak_gb: float | None = None  # max over ranks
    mem_torch_reserved_gb: float | None = None
    alloc_retries: int | None = None  # max over ranks
    mem_nvml_peak_gb: float | None = None
    mem_nvml_delta_gb: float | None = None
    mem_rss_peak_gb: float | None = None
    energy_j: float | None = None  # timed steps, all GPUs (`rank_energy`)
    joules_per_token: float | None = None  # over all ranks' tokens of the timed steps
    avg_power_w: float | None = None  # all GPUs together, over the timed window
    gpu_compute_ms: float | None = None  # max over ranks: the busiest GPU's compute in one (profiled) step
    exposed_comm_ms: float | None = None  # max over ranks: NCCL kernels with no compute beside them, same step
    short_step_ms: float | None = None  # max over ranks: the same model's step at T=256 (launch.short_step_ms)
    n_params: int | None = None
    gpu_name: str | None = None
    device: str | None = None
    losses: list[float] = field(default_factory=list)
    ranks: list[RankResult] = field(default_factory=list)

    def row_fields(self, settings: TrainSettings) -> dict:
        """The result-row columns this point fills (suites/contract.py names); the runner adds run/suite/model/
        arch/impl/dtype/timestamp. batch_size is sequences per optimizer step over all ranks."""
        tp = f", tensor parallel x{settings.tp}" if settings.tp > 1 else ""
        notes = (f"{ENGINE_NOTES_PREFIX}{settings.data_parallel(self.world_size)}{tp}, micro_batch {settings.micro_batch}"
                 f" x grad_accum {settings.grad_accum}"
                 f" per rank, checkpointing {settings.checkpointing}, compile {settings.compile},"
                 f" AdamW fp32 master / {settings.compute_dtype}"
                 f" compute / fp32 reduce" + (f", final loss {self.losses[-1]:.4f}" if self.losses else ""))
        return dict(
            kernel=self.kernel, batch_size=settings.sequences_per_step(self.world_size), seq_len=settings.seq_len,
            chunk_size=settings.chunk_size, world_size=self.world_size, tensor_parallel=settings.tp,
            checkpointing=settings.checkpointing, compile=settings.compile, status=self.status, error=self.error,
            ms_median=self.ms_median, ms_p10=self.ms_p10, ms_p90=self.ms_p90, n_repeats=self.n_repeats,
            tokens_per_s=self.tokens_per_s, tokens_per_s_per_gpu=self.tokens_per_s_per_gpu,
            ms_per_token=1e3 / self.tokens_per_s if self.tokens_per_s else None, mfu=self.mfu,
            mem_nvml_peak_gb=self.mem_nvml_peak_gb, mem_nvml_delta_gb=self.mem_nvml_delta_gb,
            mem_torch_peak_gb=self.mem_torch_peak_gb, mem_torch_reserved_gb=self.mem_torch_reserved_gb,
            alloc_retries=self.alloc_retries, mem_rss_peak_gb=self.mem_rss_peak_gb, energy_j=self.energy_j,
            joules_per_token=self.joules_per_token, avg_power_w=self.avg_power_w,
            flops_per_token=self.flops_per_token, gpu_compute_ms=self.gpu_compute_ms,
            exposed_comm_ms=self.exposed_comm_ms, short_step_ms=self.short_step_ms, n_params=self.n_params,
            device=self.device, gpu_name=self.gpu_name, notes=notes,
        )


def train_flops_per_token(recipe: ModelRecipe, settings: TrainSettings, kernel: str | None) -> float:
    cfg = recipe.config()
    if recipe.family == "retnet":
        chunk = FLA_CHUNK if kernel in FLA_KERNELS else settings.chunk_size
        return retnet_train_flops_per_token(cfg, chunk, settings.seq_len)
    return transformer_train_flops_per_token(cfg, settings.seq_len)


def _max(values) -> float | None:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def rank_energy(ranks: list[RankResult], tokens: int) -> dict[str, float | None]:
    """The point's energy columns from its ranks' readings, each of its own GPU's counter over its timed steps:
    joules summed over GPUs (ranks that share a GPU read one counter: it counts once, at its largest reading), per
    token of all ranks, and over the longest rank's window (the step ends when the slowest rank ends). None when a
    rank has no reading: a sum over some GPUs would understate the point."""
    per_gpu: dict[int, float] = {}
    for r in ranks:
        if r.energy_j is None or r.energy_gpu is None or not r.energy_wall_s:
            return energy_columns(None, 0.0, tokens)
        per_gpu[r.energy_gpu] = max(per_gpu.get(r.energy_gpu, 0.0), r.energy_j)
    return energy_columns(sum(per_gpu.values()), max(r.energy_wall_s or 0.0 for r in ranks), tokens)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(ranks: list[RankResult], recipe: ModelRecipe, settings: TrainSettings) -> TrainPointResult:
    world = len(ranks)
    failed = [r for r in ranks if r.status != "ok"]
    # the cause is the earliest failure with a time; ranks stopped by the launcher have none
    cause = min(failed, key=lambda r: (r.failed_at is None, r.failed_at or 0.0, r.rank)) if failed else None
    first = ranks[0]
    out = TrainPointResult(
        world_size=world, status=cause.status if cause else "ok",
        error="; ".join(r.error for r in [cause] + [r for r in failed if r is not cause] if r.error) if cause else None,
        kernel=next((r.kernel for r in ranks if r.kernel), None), tokens_per_step=settings.tokens_per_step(world),
        mem_torch_peak_gb=_max(r.mem_torch_peak_gb for r in ranks),
        mem_torch_reserved_gb=_max(r.mem_torch_reserved_gb for r in ranks),
        alloc_retries=_max(r.alloc_retries for r in ranks),
        mem_nvml_peak_gb=_max(r.mem_nvml_peak_gb for r in ranks),
        mem_nvml_delta_gb=_max(r.mem_nvml_delta_gb for r in ranks),
        mem_rss_peak_gb=_max(r.mem_rss_peak_gb for r in ranks),
        n_params=first.n_params, gpu_name=first.gpu_name, device=first.device, ranks=ranks,
    )
    out.flops_per_token = train_flops_per_token(recipe, settings, out.kernel)
    if cause is not None:
        return out
    # a step ends when its slowest rank ends (the ranks meet in every collective anyway)
    per_step = sorted(max(steps) for steps in zip(*(r.step_ms for r in ranks)))
    out.ms_median, out.n_repeats = statistics.median(per_step), len(per_step)
    out.ms_p10, out.ms_p90 = _quantile(per_step, 0.1), _quantile(per_step, 0.9)
    out.tokens_per_s = out.tokens_per_step / (out.ms_median / 1e3)
    out.tokens_per_s_per_gpu = out.tokens_per_s / world
    out.mfu = mfu(out.tokens_per_s, out.flops_per_token, out.gpu_name, world)
    energy = rank_energy(ranks, out.tokens_per_step * out.n_repeats)
    out.energy_j, out.joules_per_token, out.avg_power_w = (energy["energy_j"], energy["joules_per_token"],
                                                           energy["avg_power_w"])
    out.gpu_compute_ms = _max(r.gpu_compute_ms for r in ranks)
    out.exposed_comm_ms = _max(r.exposed_comm_ms for r in ranks)
    out.short_step_ms = _max(r.short_step_ms for r in ranks)
    out.losses = first.losses
    return out


def run_point(nproc: int, recipe: ModelRecipe, settings: TrainSettings, device_type: str = "cuda") -> TrainPointResult:
    """run_distributed + summarize: what the runner calls per training point."""
    return summarize(run_distributed(nproc, recipe, settings, device_type), recipe, settings)
