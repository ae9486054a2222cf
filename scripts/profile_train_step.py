"""Where a real training step's time goes (GPU diagnostic for issue #12's "what bounds it"; not part of the suites).

Builds each model exactly as a one-rank `table4` point does (the engine's recipe, fp32 master weights, FSDP2 on one
rank with bf16 compute, AdamW), runs the untimed warm-up steps, then profiles `--steps` optimizer steps with
torch.profiler and sums the GPU kernel time by category (the retention or attention kernel's forward and backward,
GEMMs, elementwise, norms, optimizer, communication, other), plus the top kernels by name so that a category
can be checked by eye. Each contestant runs in fresh processes (what one model leaves in the caching allocator would
change the next one's memory pressure).
    python scripts/profile_train_step.py --preset 1.3b --seq 8192 [--family retnet:fla transformer:flash-attn-4 ...]
        [--host] [--compile blocks] [--checkpointing every-8] [--nproc N [--tp K]] [--repeat N --fresh-autotune]
--nproc N runs N ranks (one GPU each, FSDP2 as the suites shard) and also reports, per step, how long the GPU was
busy, how long communication kernels ran and how much of that no compute kernel overlapped (exposed communication:
what keeps per-GPU throughput from scaling). On a GPU it also reports where the GPU sat idle (gaps between kernels,
the longest with the host calls that ran meanwhile) and the caching allocator's counters (retries, cudaMalloc,
cudaFree) during the timed steps: what a step that takes longer than its kernels waits for, and the config each Triton
autotuner picked (`--repeat N --fresh-autotune`: does a fresh machine pick the same ones, at the same speed?). Writes
train_profile.json and train_profile.txt to $OUT (or the working directory).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from retnet_bench.suites.contract import TRAIN_VARIANT_CHOICES
from retnet_bench.suites.training.fsdp import init_distributed, shutdown_distributed
from retnet_bench.suites.training.launch import prepare_for_training
from retnet_bench.suites.training.recipe import ModelRecipe, build_model, model_forward
from retnet_bench.suites.training.measure import StepTimer
from retnet_bench.suites.training.step import TrainSettings, synthetic_batch, train_step
from retnet_bench.suites.transfer import batch_on_device

# the kernel timeline's arithmetic (categories, exposed communication, idle gaps): scripts/profile_timeline.py,
# beside this script (python puts a script's own folder first on sys.path, spawned ranks included)
from profile_timeline import category, idle_gaps, overlap_ms


def _is_tuner(obj: object, autotuner: type) -> bool:
    try:
        return isinstance(obj, autotuner) and bool(obj.cache)
    except ReferenceError:  # a weak proxy whose object is gone
        return False


def autotuned_configs() -> dict[str, list[str]]:
    """Every Triton autotuner's choices in this process (fla's kernels and ours): kernel name -> ["key: config"],
    then the two fastest candidates of its last tuning with their timings (ms), when it benchmarked them.

    Triton autotunes by timing each candidate on the device once per key (or reads an earlier process's timings
    from its cache), so two machines can pick different configs for the same shapes when candidates time within
    noise; this records which one ran and how close the runner-up was."""
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:
        return {}
    import gc
    import warnings

    def ms(t) -> str:
        return "/".join(f"{x:.4f}" for x in t) if isinstance(t, (list, tuple)) else f"{t:.4f}"

    chosen: dict[str, list[str]] = {}
    with warnings.catch_warnings():  # isinstance() on every live object touches deprecated lazy attributes
        warnings.simplefilter("ignore")
        tuners = [obj for obj in gc.get_objects() if _is_tuner(obj, Autotuner)]
    for obj in tuners:
        name = getattr(obj.base_fn, "__name__", None) or repr(obj.fn)[:60]
        timings = getattr(obj, "configs_timings", None) or {}
        fastest = sorted(timings.items(), key=lambda kv: kv[1] if isinstance(kv[1], (int, float)) else kv[1][0])[:2]
        chosen.setdefault(name, []).extend(sorted(f"{key}: {cfg}" for key, cfg in obj.cache.items())
                                           + [f"candidate (its last tuning) {cfg}: {ms(t)} ms" for cfg, t in fastest])
    return dict(sorted(chosen.items()))


def forget_autotuning() -> int:
    """Delete Triton's cached autotuning results (keeping the compiled kernels), so that the next process tunes
    again as a fresh machine would. Returns how many were deleted."""
    try:
        import triton
    except ImportError:
        return 0
    files = list(Path(triton.knobs.cache.dir).rglob("*.autotune.json"))
    for f in files:
        f.unlink()
    return len(files)


ALLOCATOR_COUNTERS = ("num_alloc_retries", "num_device_alloc", "num_device_free", "num_sync_all_streams")


def allocator_counters(device: torch.device) -> dict[str, int]:
    """The caching allocator's cumulative counters: retries (cache freed, then cudaMalloc again), cudaMalloc and
    cudaFree calls (each cudaFree synchronises the device), syncs of all streams. In a steady training step all
    of them should stay flat: a rise during timed steps is the allocator stalling the GPU."""
    if device.type != "cuda":
        return {}
    stats = torch.cuda.memory_stats(device)
    return {k: int(stats.get(k, 0)) for k in ALLOCATOR_COUNTERS}


def profile_one(family: str, kernel: str, preset: str, seq: int, steps: int, device: torch.device,
                host: bool = False, rank: int = 0, world: int = 1, tp: int = 1, compile: str = "none",
                checkpointing: str = "none", blocking_copy: bool = False) -> dict:
    """On CPU (a check of this script only: tiny preset, fp32) the profiled events are the CPU ops. With world > 1
    the process group comes from the environment (MASTER_ADDR/PORT, set by `_spawned`)."""
    cuda = device.type == "cuda"
    # blocking_copy: the loop as it was before session 11 (a plain .to(device), which synchronises every step), to
    # measure on one machine what that sync cost each side
    to_device = (lambda b: b.to(device)) if blocking_copy else (lambda b: batch_on_device(b, device))  # noqa: E731
    settings = TrainSettings(seq_len=seq, steps=steps, warmup_steps=2, chunk_size=min(512, seq), tp=tp,
                             compile=compile, checkpointing=checkpointing,
                             compute_dtype="bfloat16" if cuda else "float32")
    compute = settings.torch_compute_dtype
    overrides = {} if cuda else {"vocab_size": 256}
    recipe = ModelRecipe(family, preset, kernel=kernel, overrides=overrides)
    mesh = init_distributed(device, rank, world, settings.collective_timeout_s,
                            dist.HashStore() if world == 1 else None, tp)
    try:
        torch.manual_seed(0)
        model = build_model(recipe, device, torch.float32, compute)
        opt = prepare_for_training(model, recipe, settings, mesh, device)  # as every rank of the engine
        vocab = recipe.config().vocab_size
        fwd = lambda ids: model_forward(model, recipe, ids, settings.chunk_size)  # noqa: E731
        for s in range(settings.warmup_steps):
            train_step(fwd, opt, to_device(synthetic_batch(s, settings, vocab, world, rank)))
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        # the same steps without the profiler (its per-launch cost is not the model's), timed as the runner times
        # them: events per step, one sync at the end; a step that stalls (e.g. on an allocator retry) is an outlier
        timer, before = StepTimer(device), allocator_counters(device)
        for s in range(steps):
            timer.start()
            train_step(fwd, opt, to_device(synthetic_batch(50 + s, settings, vocab, world, rank)))
            timer.stop()
        step_ms = timer.elapsed_ms()
        plain_ms = sum(step_ms) / steps  # the mean, the first step included (the runner's rows take the median)
        allocator = {k: v - before[k] for k, v in allocator_counters(device).items()}
        peak = dict(allocated_gb=round(torch.cuda.max_memory_allocated(device) / 1e9, 2),
                    reserved_gb=round(torch.cuda.memory_reserved(device) / 1e9, 2)) if cuda else {}
        before = allocator_counters(device)
        acts = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
        if host and cuda:  # the host side too: where a launch-bound step spends its CPU time
            acts.append(ProfilerActivity.CPU)
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            for s in range(steps):
                train_step(fwd, opt, to_device(synthetic_batch(100 + s, settings, vocab, world, rank)))
            sync()
            wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    finally:
        shutdown_distributed()
    allocator_profiled = {k: v - before[k] for k, v in allocator_counters(device).items()}
    per_kernel: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    named: list[tuple[str, float, float]] = []  # (kernel name, start, end): GPU kernels (CPU: top-level ops)
    host_calls: list[tuple[str, float, float]] = []  # CUDA runtime calls and top-level CPU ops
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    for ev in prof.events():
        if ev.device_type == kind and (cuda or ev.cpu_parent is None):  # CPU: top-level ops only
            t = ev.device_time_total if cuda else ev.cpu_time_total
            per_kernel[ev.name][0] += t / 1e3 / steps  # ms per step
            per_kernel[ev.name][1] += 1
            named.append((ev.name, ev.time_range.start, ev.time_range.end))
        elif cuda and ev.device_type == torch.autograd.DeviceType.CPU and (ev.name.startswith("cu")
                                                                          or ev.cpu_parent is None):
            host_calls.append((ev.name, ev.time_range.start, ev.time_range.end))
    by_cat: dict[str, float] = defaultdict(float)
    for name, (ms, _) in per_kernel.items():
        by_cat[category(name)] += ms
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:25]
    host_ops = []
    if host and cuda:  # CPU self time per op name (launch wrappers, Python-side autograd functions, runtime calls)
        avg = sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[:20]
        host_ops = [dict(name=a.key[:120], self_cpu_ms=round(a.self_cpu_time_total / 1e3 / steps, 3),
                         calls_per_step=a.count // steps) for a in avg]
    return dict(family=family, kernel=recipe.resolved_kernel(device, compute), device=str(device), preset=preset,
                seq_len=seq, step_ms=round(plain_ms, 2), step_ms_median=round(statistics.median(step_ms), 2),
                step_ms_each=[round(t, 1) for t in step_ms],
                alloc_retries=allocator.get("num_alloc_retries"),  # cudaMalloc retries (each a device sync)
                allocator=allocator, allocator_profiled=allocator_profiled, memory=peak,
                idle=idle_gaps(named, host_calls, steps) if cuda else {},
                step_ms_profiled=round(wall_ms, 2), kernel_ms=round(sum(v[0] for v in per_kernel.values()), 2),
                tokens_per_s=round(seq / plain_ms * 1e3), rank=rank, world_size=world,
                **overlap_ms([(category(n), a, b) for n, a, b in named], steps),
                categories={k: round(v, 2) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
                top=[dict(name=n[:140], ms=round(v[0], 3), calls_per_step=v[1] // steps, category=category(n))
                     for n, v in top], host_ops=host_ops, autotuned=autotuned_configs())


def _rank_entry(rank: int, world: int, spec: dict, cpu: bool, out_dir: str) -> None:
    """One spawned rank: its process-group environment, its profile (`spec`: profile_one's keyword arguments but
    the device and ranks), written to out_dir/rank<r>.json."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    device = torch.device("cpu") if cpu else torch.device("cuda", rank)
    if not cpu:
        torch.cuda.set_device(device)
    try:
        r = profile_one(**spec, device=device, rank=rank, world=world)
    except Exception as e:  # noqa: BLE001 - reported by the parent
        r = dict(family=spec["family"], kernel=spec["kernel"], rank=rank,
                 error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(r))


def _spawned(world: int, spec: dict, cpu: bool) -> dict:
    """Run one profile on `world` fresh processes (torch.multiprocessing; also for world 1); rank 0's result, with
    every rank's overlap when world > 1."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_entry, args=(world, spec, cpu, tmp), nprocs=world, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    first = next((r for r in ranks if "error" in r), ranks[0])
    if world == 1:
        return first
    return {**first, "ranks": [rank_summary(r) for r in ranks]}


def rank_summary(r: dict) -> dict:
    """One rank's line of a several-rank profile: its step, GPU busy time, GPU idle time (the gaps between its
    kernels in the profiled steps), communication (all and exposed) and, with --host, its five costliest host ops.
    A rank whose GPU idles while its peer's communication is exposed is the slow one. Session 14 had only busy
    time per rank: RetNet's rank 1 was busy 180.5 ms of a 210.6 ms step (2026-11-29-probes-s14)."""
    return {**{k: r.get(k) for k in ("rank", "step_ms", "gpu_busy_ms", "comm_ms", "exposed_comm_ms", "error")},
            "gpu_idle_ms": (r.get("idle") or {}).get("idle_ms"), "host_ops": (r.get("host_ops") or [])[:5]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1.3b")
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--family", nargs="+", default=["retnet:fla", "transformer:flash-attn-4", "transformer:sdpa-cudnn"])
    ap.add_argument("--host", action="store_true", help="also profile the CPU side (self CPU time per op)")
    ap.add_argument("--nproc", type=int, default=1, help="ranks (one GPU each; FSDP2 as the suites shard)")
    ap.add_argument("--tp", type=int, default=1, help="tensor-parallel degree within the ranks (as `--tp` in a run)")
    ap.add_argument("--compile", default="none", choices=TRAIN_VARIANT_CHOICES["compile"],
                    help="torch.compile per block (as `compile = \"blocks\"` in a suite)")
    ap.add_argument("--checkpointing", default="none", choices=TRAIN_VARIANT_CHOICES["checkpointing"],
                    help="activation checkpointing (as `checkpointing` in a suite's [train] table)")
    ap.add_argument("--blocking-copy", action="store_true",
                    help="copy each batch with a plain .to(device), which synchronises every step (the engine's loop "
                         "before session 11): run with and without on one machine to see what the sync costs")
    ap.add_argument("--repeat", type=int, default=1, help="profile each contestant this many times (fresh processes)")
    ap.add_argument("--fresh-autotune", action="store_true",
                    help="each profile autotunes its Triton kernels anew (Triton's cached tuning results deleted, the "
                         "compiled kernels kept; this machine's whole Triton cache dir), as a fresh machine does: "
                         "same configs every time, same speed?")
    ap.add_argument("--cpu-check", action="store_true", help="run on the CPU (tiny preset): checks this script only")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.cpu_check:
        raise SystemExit("needs a CUDA GPU (or --cpu-check)")
    if not args.cpu_check and args.nproc > torch.cuda.device_count():
        raise SystemExit(f"--nproc {args.nproc}: only {torch.cuda.device_count()} GPUs visible")
    if args.tp < 1 or args.nproc % args.tp:
        raise SystemExit(f"--tp {args.tp} must divide --nproc {args.nproc}")
    results, lines = [], []  # this process never touches the GPU: each profile runs in its own
    for spec in [s for s in args.family for _ in range(args.repeat)]:
        family, kernel = spec.split(":")
        forgotten = forget_autotuning() if args.fresh_autotune else None
        # fresh processes per contestant, also for one rank: what the previous model left in the caching allocator
        # (and its peak) would otherwise change this one's memory pressure, which at 6.7B decides its step time
        r = _spawned(args.nproc, dict(family=family, kernel=kernel, preset=args.preset, seq=args.seq,
                                      steps=args.steps, host=args.host, tp=args.tp, compile=args.compile,
                                      checkpointing=args.checkpointing, blocking_copy=args.blocking_copy),
                     args.cpu_check)
        results.append(r)
        lines.append(f"== {family} ({r.get('kernel')}) {args.preset} T={args.seq}, compile {args.compile}, "
                     f"checkpointing {args.checkpointing}{', blocking copy' if args.blocking_copy else ''}: "
                     + (r["error"] if "error" in r else f"{r['step_ms']} ms/step ({r['step_ms_profiled']} profiled), "
                        f"GPU kernels {r['kernel_ms']} ms, {r['tokens_per_s']} tok/s"))
        if forgotten is not None:
            lines.append(f"   tuned afresh: {forgotten} cached autotuning results deleted before this profile")
        if "step_ms_each" in r:
            lines.append(f"   unprofiled steps {r['step_ms_each']} ms (median {r.get('step_ms_median')}); cudaMalloc "
                         f"retries during them: {r['alloc_retries']}")
        if r.get("allocator"):
            lines.append(f"   allocator during the unprofiled steps {r['allocator']}, during the profiled ones "
                         f"{r['allocator_profiled']}; {r['memory']}")
        if r.get("idle"):
            idle = r["idle"]
            lines.append(f"   GPU idle {idle['idle_ms']} ms per step, {idle['idle_long_gaps_ms']} ms of it in "
                         f"{idle['long_gaps_per_step']} gaps >= 0.5 ms; host calls in those gaps (ms per step): "
                         f"{idle['host_in_long_gaps_ms']}")
            for g in idle["longest_gaps"]:
                lines.append(f"     gap {g['ms']:7.3f} ms after {g['after_kernel'][:50]!r} before "
                             f"{g['before_kernel'][:50]!r}; host: {g['host']}")
        if "gpu_busy_ms" in r:
            lines.append(f"   busy {r['gpu_busy_ms']} ms, communication {r['comm_ms']} ms, exposed (no compute "
                         f"beside it) {r['exposed_comm_ms']} ms per step (rank {r.get('rank', 0)} of "
                         f"{r.get('world_size', 1)})")
        for rk in r.get("ranks", []):
            lines.append(f"   rank {rk['rank']}: step {rk['step_ms']} ms, GPU busy {rk['gpu_busy_ms']} / idle "
                         f"{rk.get('gpu_idle_ms')} ms, communication {rk['comm_ms']} ms, exposed "
                         f"{rk['exposed_comm_ms']} ms" + (f", {rk['error']}" if rk.get("error") else ""))
            lines += [f"     host {k['self_cpu_ms']:8.3f} ms self CPU  x{k['calls_per_step']:<5d} {k['name'][:90]}"
                      for k in rk.get("host_ops", [])]
        for cat, ms in r.get("categories", {}).items():
            lines.append(f"   {cat:18s} {ms:8.2f} ms")
        for k in r.get("top", [])[:15]:
            lines.append(f"     {k['ms']:8.3f} ms  x{k['calls_per_step']:<4d} [{k['category']}] {k['name'][:100]}")
        for k in r.get("host_ops", []):
            lines.append(f"   host {k['self_cpu_ms']:8.3f} ms self CPU  x{k['calls_per_step']:<5d} {k['name'][:100]}")
        for name, choices in r.get("autotuned", {}).items():
            lines.append(f"   autotuned {name}: " + "; ".join(c[:160] for c in choices))
        write(results, lines)  # after each profile: a run cut short by its time limit keeps the finished ones
    print("\n".join(lines))


def write(results: list[dict], lines: list[str]) -> None:
    out = Path(os.environ.get("OUT", "."))
    (out / "train_profile.json").write_text(json.dumps(results, indent=1))
    (out / "train_profile.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
