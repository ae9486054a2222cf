"""Run one training point on N ranks: in this process for N = 1, else through torch's elastic launcher
(`torch.distributed.launcher.api.elastic_launch`, what `torchrun` runs, started from Python as optimum-benchmark
does). Every rank builds the same model, shards it with FSDP2, trains, measures itself, and writes its RankResult
as JSON to a folder the parent reads back (files rather than the launcher's return values: a rank that failed still
leaves its reason, and the ones the agent had to kill are reported as such).

Faults never hang the caller: a rank that raises records `oom`/`error` with the message, then exits at once with
status 1; the elastic agent (max_restarts=0) then stops the other ranks, and `ChildFailedError` is caught here. A
rank blocked in a collective on a dead peer fails after `collective_timeout_s` at most.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from ..trackers import AllocRetries, EnergyTracker, energy_counter
from ..transfer import batch_on_device
from .fsdp import all_reduce_mean, init_distributed, rank_device, set_nccl_env, shard_model, shutdown_distributed
from .gpu_time import profile_step
from .measure import GB, NvmlStepPeak, StepTimer, rss_peak_gb, torch_peaks_gb
from .recipe import ModelRecipe, build_model, matmul_params, model_forward
from .step import TrainSettings, apply_checkpointing, apply_compile, make_optimizer, synthetic_batch, train_step
from .tensor_parallel import apply_tensor_parallel

# Test hook: "<rank>:error" or "<rank>:oom" makes that rank raise before its first step (inherited by launched ranks).
FAULT_ENV = "RETNET_BENCH_TRAIN_FAULT"
MAX_ERROR_CHARS = 2000


@dataclass
class RankResult:
    """What one rank measured. step_ms holds the timed steps only; losses every step (warm-up included), each the
    mean over all ranks' tokens."""

    rank: int
    world_size: int
    status: str = "error"  # ok | oom | error
    error: str | None = None
    failed_at: float | None = None  # time.time() of the failure: the earliest one is the cause
    kernel: str | None = None  # resolved kernel that ran
    device: str | None = None
    gpu_name: str | None = None
    n_params: int | None = None
    n_matmul_params: int | None = None
    step_ms: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    mem_torch_peak_gb: float | None = None
    mem_torch_reserved_gb: float | None = None
    alloc_retries: int | None = None  # cudaMalloc retries of the caching allocator while training (measure.py)
    mem_nvml_peak_gb: float | None = None
    mem_nvml_delta_gb: float | None = None  # peak minus the device memory in use before the model was built
    mem_rss_peak_gb: float | None = None
    # this rank's GPU energy over its timed steps (NVML counter, J), that window's wall seconds, and the NVML index of
    # the GPU it read: ranks sharing one GPU read one counter, which the summary counts once
    energy_j: float | None = None
    energy_wall_s: float | None = None
    energy_gpu: int | None = None
    # one extra, untimed step profiled on the device (gpu_time.py): its compute, NCCL kernels and their exposed part
    gpu_compute_ms: float | None = None
    gpu_comm_ms: float | None = None
    exposed_comm_ms: float | None = None
    short_step_ms: float | None = None  # the same model's step at T=SHORT_SEQ_LEN after the others (`short_step_ms`)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _inject_fault(rank: int) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    fault_rank, _, kind = spec.partition(":")
    if int(fault_rank) != rank:
        return
    if kind == "oom":
        raise torch.OutOfMemoryError(f"injected by {FAULT_ENV} on rank {rank}")
    raise RuntimeError(f"injected by {FAULT_ENV} on rank {rank}")


# A few steps at this length after the timed ones: a 1.3B step there gives the GPU ~33 ms of work against ~170 ms at
# 8k, so on one GPU its time is the host's time to issue a step (results/reference/h200/2026-11-29-probes-s16)
SHORT_SEQ_LEN, SHORT_WARMUP, SHORT_STEPS = 256, 2, 5


def train_steps(forward, optimizer: torch.optim.Optimizer, settings: TrainSettings, vocab: int, world_size: int,
                rank: int, device: torch.device, before_timed: Callable[[], None] | None = None,
                after_each: Callable[[], None] | None = None) -> tuple[list[float], list[torch.Tensor]]:
    """settings.warmup_steps untimed then settings.steps timed optimizer steps on synthetic batches: (the timed steps'
    ms, every step's loss as a device tensor). No host sync inside the loop: the host may run steps ahead of the GPU,
    as in training; one sync at the end (StepTimer). `before_timed` runs right before the first timed step,
    `after_each` after every step, both outside the timed region."""
    timer, losses = StepTimer(device), []
    for step in range(settings.warmup_steps + settings.steps):
        batch = batch_on_device(synthetic_batch(step, settings, vocab, world_size, rank), device)  # (A, B, T + 1)
        if step == settings.warmup_steps and before_timed is not None:
            before_timed()
        timer.start()
        losses.append(train_step(forward, optimizer, batch))
        timer.stop()
        if after_each is not None:
            after_each()
    return timer.elapsed_ms()[settings.warmup_steps:], losses


def short_step_ms(forward, optimizer: torch.optim.Optimizer, settings: TrainSettings, vocab: int, world_size: int,
                  rank: int, device: torch.device) -> float:
    """Median ms of SHORT_STEPS steps of this model and engine at T=SHORT_SEQ_LEN (after SHORT_WARMUP untimed ones:
    new shapes autotune), timed as the timed steps are (`train_steps`). What a step costs when the sequence is nearly
    gone: on one GPU the host's issue time (launches, autograd, FSDP2's hooks) and the optimizer; on several also
    FSDP2's communication, which does not shrink with T. Near the timed step's median: the host, not the GPU, sets
    the pace."""
    short = dataclasses.replace(settings, seq_len=min(SHORT_SEQ_LEN, settings.seq_len), warmup_steps=SHORT_WARMUP,
                                steps=SHORT_STEPS)
    return statistics.median(train_steps(forward, optimizer, short, vocab, world_size, rank, device)[0])


def prepare_for_training(model: nn.Module, recipe: ModelRecipe, settings: TrainSettings, mesh: DeviceMesh,
                         device: torch.device) -> torch.optim.Optimizer:
    """A built model (`build_model`: the full fp32 model, the same on every rank) made ready to train as the engine
    trains it, in torchtitan's order: tensor parallel over mesh["tp"] (tp > 1), then checkpointing, then
    torch.compile per block (compile="blocks"), then FSDP2 over the replicas; returns AdamW over the shards. Every
    rank and the diagnostic scripts go through it, so a profile or a census measures what the suites time."""
    recipe.check_engine_settings(settings.checkpointing, settings.compile)
    if settings.tp > 1:
        apply_tensor_parallel(model, recipe, mesh["tp"])
    apply_checkpointing(model, settings.checkpointing)
    apply_compile(model, settings.compile)
    shard_model(model, mesh, settings.torch_compute_dtype)
    return make_optimizer(model, settings, device)


def run_rank(recipe: ModelRecipe, settings: TrainSettings, device_type: str, rank: int, world_size: int,
             local_rank: int, store: dist.Store | None = None) -> RankResult:
    """Set up, train and measure one rank. Never raises: failures come back as status oom/error. Leaves the
    process group initialised (the caller decides how to tear it down: cleanly, or by exiting)."""
    res = RankResult(rank=rank, world_size=world_size)
    nvml = retries = None
    try:
        device = rank_device(device_type, local_rank)
        res.device = str(device)
        res.gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        mesh = init_distributed(device, rank, world_size, settings.collective_timeout_s, store, settings.tp)
        nvml = NvmlStepPeak(device) if settings.nvml_sampling else None
        # the energy counter is NVML too: the same switch; inert (None columns) on a CPU or a GPU without one
        energy = EnergyTracker(energy_counter(device) if settings.nvml_sampling else None)
        compute_dtype = settings.torch_compute_dtype
        torch.manual_seed(settings.seed)  # same full model on every rank; each keeps its shard
        model = build_model(recipe, device, torch.float32, compute_dtype)
        res.kernel = recipe.resolved_kernel(device, compute_dtype)
        res.n_params = sum(p.numel() for p in model.parameters())
        res.n_matmul_params = matmul_params(model)
        vocab = recipe.config().vocab_size
        optimizer = prepare_for_training(model, recipe, settings, mesh, device)
        if device.type == "cuda":  # the full fp32 model each rank built before sharding is not training memory
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        retries = AllocRetries(device)
        _inject_fault(rank)
        forward = lambda ids: model_forward(model, recipe, ids, settings.chunk_size)  # noqa: E731
        # the energy window opens right before the first timed step (it synchronises: warm-up is out); NVML is read
        # between steps, outside the timed region (a polling thread would slow the step it measures)
        res.step_ms, losses = train_steps(forward, optimizer, settings, vocab, world_size, rank, device,
                                          before_timed=lambda: energy.start(device),
                                          after_each=nvml.read if nvml is not None else None)
        energy.stop()  # the window holds the timed steps and what lies between them (batch copies, NVML reads)
        if energy.joules is not None:
            res.energy_j, res.energy_wall_s = energy.joules, energy.wall_s
            res.energy_gpu = energy.counter.index
        # one more step, after the timed ones and not among the losses, profiled on the device: what a step's GPU time
        # was (compute, communication, exposed), against which the timed steps' median shows the waiting
        if device.type == "cuda":
            step = settings.warmup_steps + settings.steps
            batch = batch_on_device(synthetic_batch(step, settings, vocab, world_size, rank), device)
            gpu = profile_step(lambda: train_step(forward, optimizer, batch), device)
            if gpu is not None:
                res.gpu_compute_ms, res.gpu_comm_ms, res.exposed_comm_ms = (
                    gpu["gpu_compute_ms"], gpu["gpu_comm_ms"], gpu["exposed_comm_ms"])
            try:  # a diagnostic after the measured steps: its failure leaves their numbers standing
                res.short_step_ms = short_step_ms(forward, optimizer, settings, vocab, world_size, rank, device)
            except Exception:  # noqa: BLE001 - said on stderr; the column stays empty
                traceback.print_exc(file=sys.stderr)
        res.losses = all_reduce_mean(torch.stack(losses)).tolist()
        res.status = "ok"
        if not all(math.isfinite(x) for x in res.losses):  # a wrong kernel must not leave a speed behind
            res.status = "error"
            res.error = f"rank {rank}: training loss not finite over the timed steps ({res.losses}): not a training step"
    except Exception as exc:  # the point fails, the sweep goes on
        res.status = "oom" if is_oom(exc) else "error"
        res.error = f"rank {rank}: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        res.failed_at = time.time()
        traceback.print_exc(file=sys.stderr)
    finally:
        if nvml is not None:
            nvml.read()
            if nvml.peak is not None:
                res.mem_nvml_peak_gb = nvml.peak / GB
                res.mem_nvml_delta_gb = (nvml.peak - nvml.baseline) / GB
        if res.device is not None:
            res.mem_torch_peak_gb, res.mem_torch_reserved_gb = torch_peaks_gb(torch.device(res.device))
        if retries is not None:
            res.alloc_retries = retries.count()
        res.mem_rss_peak_gb = rss_peak_gb()
    return res


def _rank_entry(recipe: ModelRecipe, settings: TrainSettings, device_type: str, out_dir: str) -> None:
    """Entry point of a launched rank (module level: the launcher pickles it by name into spawned processes)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    res = run_rank(recipe, settings, device_type, rank, world, int(os.environ["LOCAL_RANK"]))
    tmp = Path(out_dir) / f"rank{rank}.json.tmp"
    tmp.write_text(json.dumps(asdict(res)))
    tmp.rename(Path(out_dir) / f"rank{rank}.json")  # atomic: the parent never reads half a file
    if res.status != "ok":
        # exit now, no process-group teardown: a clean destroy could wait on peers stuck in a collective. The
        # agent sees exit 1 and stops the other ranks.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    shutdown_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_nproc(nproc: int, device_type: str) -> None:
    """Bad input (ValueError): nproc < 1, an unknown device type, more ranks than visible GPUs."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"device_type={device_type!r}; expected 'cuda' or 'cpu'")
    if device_type == "cuda":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if nproc > visible:
            raise ValueError(f"nproc={nproc} but {visible} CUDA GPU(s) are visible")


def run_distributed(nproc: int, recipe: ModelRecipe, settings: TrainSettings, device_type: str = "cuda") -> list[RankResult]:
    """Train `settings` on `nproc` ranks (one GPU each, or CPU processes with gloo). Returns one RankResult per
    rank, in rank order; raises only for bad input (ValueError), never for a failing rank."""
    check_nproc(nproc, device_type)
    settings.data_parallel(nproc)  # ValueError unless tp divides the ranks
    set_nccl_env()
    if nproc == 1:
        try:
            return [run_rank(recipe, settings, device_type, 0, 1, 0, store=dist.HashStore())]
        finally:  # one rank has no peer to wait for: a clean teardown is safe even after a failure
            shutdown_distributed()
            if device_type == "cuda":
                torch.cuda.empty_cache()
    return _launch(nproc, recipe, settings, device_type)


def _launch(nproc: int, recipe: ModelRecipe, settings: TrainSettings, device_type: str) -> list[RankResult]:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"retnet-bench-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0,
        monitor_interval=0.1, start_method="spawn",
    )
    # rank -> (why it has no result, when it failed; None for a rank the agent stopped because another failed)
    failures: dict[int, tuple[str, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="retnet-train-") as out_dir:
        try:
            elastic_launch(config, _rank_entry)(recipe, settings, device_type, out_dir)
        except ChildFailedError as exc:  # per-rank files say why; the agent's view fills in ranks without one
            for rank, failure in exc.failures.items():
                if failure.exitcode < 0:
                    failures[rank] = (f"killed by {failure.signal_name()}", None)
                else:
                    failures[rank] = (f"exit code {failure.exitcode}", float(failure.timestamp))
        except Exception as exc:  # rendezvous or agent failure: no rank result at all
            failures = {r: (f"launcher: {type(exc).__name__}: {exc}", time.time()) for r in range(nproc)}
        results = []
        for rank in range(nproc):
            path = Path(out_dir) / f"rank{rank}.json"
            if path.exists():
                results.append(RankResult(**json.loads(path.read_text())))
                continue
            why, when = failures.get(rank, ("stopped by the launcher after another rank failed", None))
            results.append(RankResult(rank=rank, world_size=nproc, status="error", failed_at=when,
                                      error=f"rank {rank}: no result ({why})"))
    return results
