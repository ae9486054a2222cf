"""Where a real training step's time goes (GPU diagnostic for issue #12's "what bounds it"; not part of the suites).

Builds each model exactly as a one-rank `table4` point does (the engine's recipe, fp32 master weights, FSDP2 on one
rank with bf16 compute, AdamW), runs the untimed warm-up steps, then profiles `--steps` optimizer steps with
torch.profiler and sums the GPU kernel time by category (the retention or attention kernel's forward and backward,
GEMMs, elementwise, norms, optimizer, communication, other), plus the top kernels by name so that a category
can be checked by eye.
    python scripts/profile_train_step.py --preset 1.3b --seq 8192 [--family retnet:fla transformer:flash-attn-4 ...]
        [--host] [--nproc N]
--nproc N runs N ranks (one GPU each, FSDP2 as the suites shard) and also reports, per step, how long the GPU was
busy, how long communication kernels ran and how much of that no compute kernel overlapped (exposed communication:
what keeps per-GPU throughput from scaling). Writes train_profile.json and train_profile.txt to $OUT (or the working
directory).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from retnet_bench.suites.training.fsdp import init_distributed, shard_model, shutdown_distributed
from retnet_bench.suites.training.recipe import ModelRecipe, build_model, model_forward
from retnet_bench.suites.trackers import AllocRetries
from retnet_bench.suites.training.measure import StepTimer
from retnet_bench.suites.training.step import TrainSettings, make_optimizer, synthetic_batch, train_step

# first match wins; the names are those of fla-core 0.6 (Triton), FlashAttention-4 (CuTe DSL), cuDNN, cuBLAS
CATEGORIES = (
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


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def _intersection(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> float:
    """Total length covered by both unions (each sorted and disjoint)."""
    i = j = 0
    total = 0.0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        total += max(0.0, hi - lo)
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return total


def overlap_ms(kernels: list[tuple[str, float, float]], steps: int) -> dict[str, float]:
    """GPU busy time, communication time and exposed communication (no compute kernel running), ms per step, from
    (category, start_us, end_us) per kernel."""
    comm = _union([(a, b) for c, a, b in kernels if c == "communication"])
    compute = _union([(a, b) for c, a, b in kernels if c != "communication"])
    busy = _union([(a, b) for _, a, b in kernels])
    return dict(gpu_busy_ms=round(_length(busy) / 1e3 / steps, 2), comm_ms=round(_length(comm) / 1e3 / steps, 2),
                exposed_comm_ms=round((_length(comm) - _intersection(comm, compute)) / 1e3 / steps, 2))


def profile_one(family: str, kernel: str, preset: str, seq: int, steps: int, device: torch.device,
                host: bool = False, rank: int = 0, world: int = 1) -> dict:
    """On CPU (a check of this script only: tiny preset, fp32) the profiled events are the CPU ops. With world > 1
    the process group comes from the environment (MASTER_ADDR/PORT, set by `_spawned`)."""
    cuda = device.type == "cuda"
    settings = TrainSettings(seq_len=seq, steps=steps, warmup_steps=2, chunk_size=min(512, seq),
                             compute_dtype="bfloat16" if cuda else "float32")
    compute = settings.torch_compute_dtype
    overrides = {} if cuda else {"vocab_size": 256}
    recipe = ModelRecipe(family, preset, kernel=kernel, overrides=overrides)
    mesh = init_distributed(device, rank, world, settings.collective_timeout_s, dist.HashStore() if world == 1 else None)
    try:
        torch.manual_seed(0)
        model = build_model(recipe, device, torch.float32, compute)
        shard_model(model, mesh, compute)
        opt = make_optimizer(model, settings, device)
        vocab = recipe.config().vocab_size
        fwd = lambda ids: model_forward(model, recipe, ids, settings.chunk_size)  # noqa: E731
        for s in range(settings.warmup_steps):
            train_step(fwd, opt, synthetic_batch(s, settings, vocab, world, rank).to(device))
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        # the same steps without the profiler (its per-launch cost is not the model's), timed as the runner times
        # them: events per step, one sync at the end; a step that stalls (e.g. on an allocator retry) is an outlier
        retries, timer = AllocRetries(device), StepTimer(device)
        for s in range(steps):
            timer.start()
            train_step(fwd, opt, synthetic_batch(50 + s, settings, vocab, world, rank).to(device))
            timer.stop()
        step_ms = timer.elapsed_ms()
        plain_ms = sum(step_ms) / steps
        alloc_retries = retries.count()  # cudaMalloc retries (each a device sync) during those steps
        acts = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
        if host and cuda:  # the host side too: where a launch-bound step spends its CPU time
            acts.append(ProfilerActivity.CPU)
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            for s in range(steps):
                train_step(fwd, opt, synthetic_batch(100 + s, settings, vocab, world, rank).to(device))
            sync()
            wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    finally:
        shutdown_distributed()
    per_kernel: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    spans: list[tuple[str, float, float]] = []
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    for ev in prof.events():
        if ev.device_type == kind and (cuda or ev.cpu_parent is None):  # CPU: top-level ops only
            t = ev.device_time_total if cuda else ev.cpu_time_total
            per_kernel[ev.name][0] += t / 1e3 / steps  # ms per step
            per_kernel[ev.name][1] += 1
            spans.append((category(ev.name), ev.time_range.start, ev.time_range.end))
    by_cat: dict[str, float] = defaultdict(float)
    for name, (ms, _) in per_kernel.items():
        by_cat[category(name)] += ms
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:25]
    host_ops = []
    if host and cuda:  # CPU self time per op name (launch wrappers, Python-side autograd functions, runtime calls)
        avg = sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[:20]
        host_ops = [dict(name=a.key[:120], self_cpu_ms=round(a.self_cpu_time_total / 1e3 / steps, 3),
                         calls_per_step=a.count // steps) for a in avg]
    return dict(family=family, kernel=recipe.resolved_kernel(device, compute), device=str(device), preset=preset, seq_len=seq,
                step_ms=round(plain_ms, 2), step_ms_each=[round(t, 1) for t in step_ms], alloc_retries=alloc_retries,
                step_ms_profiled=round(wall_ms, 2), kernel_ms=round(sum(v[0] for v in per_kernel.values()), 2),
                tokens_per_s=round(seq / plain_ms * 1e3), rank=rank, world_size=world, **overlap_ms(spans, steps),
                categories={k: round(v, 2) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
                top=[dict(name=n[:140], ms=round(v[0], 3), calls_per_step=v[1] // steps, category=category(n))
                     for n, v in top], host_ops=host_ops)


def _rank_entry(rank: int, world: int, spec: tuple, out_dir: str) -> None:
    """One spawned rank: its process-group environment, its profile, written to out_dir/rank<r>.json."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    family, kernel, preset, seq, steps, host, cpu = spec
    device = torch.device("cpu") if cpu else torch.device("cuda", rank)
    if not cpu:
        torch.cuda.set_device(device)
    try:
        r = profile_one(family, kernel, preset, seq, steps, device, host, rank, world)
    except Exception as e:  # noqa: BLE001 - reported by the parent
        r = dict(family=family, kernel=kernel, rank=rank, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(r))


def _spawned(world: int, spec: tuple) -> dict:
    """Run one profile on `world` ranks (torch.multiprocessing); rank 0's result, with every rank's overlap."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_entry, args=(world, spec, tmp), nprocs=world, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    first = next((r for r in ranks if "error" in r), ranks[0])
    return {**first, "ranks": [{k: r.get(k) for k in ("rank", "step_ms", "gpu_busy_ms", "comm_ms", "exposed_comm_ms",
                                                       "error")} for r in ranks]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1.3b")
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--family", nargs="+", default=["retnet:fla", "transformer:flash-attn-4", "transformer:sdpa-cudnn"])
    ap.add_argument("--host", action="store_true", help="also profile the CPU side (self CPU time per op)")
    ap.add_argument("--nproc", type=int, default=1, help="ranks (one GPU each; FSDP2 as the suites shard)")
    ap.add_argument("--cpu-check", action="store_true", help="run on the CPU (tiny preset): checks this script only")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.cpu_check:
        raise SystemExit("needs a CUDA GPU (or --cpu-check)")
    if not args.cpu_check and args.nproc > torch.cuda.device_count():
        raise SystemExit(f"--nproc {args.nproc}: only {torch.cuda.device_count()} GPUs visible")
    device = torch.device("cpu") if args.cpu_check else torch.device("cuda", 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    results, lines = [], []
    for spec in args.family:
        family, kernel = spec.split(":")
        if args.nproc > 1:
            r = _spawned(args.nproc, (family, kernel, args.preset, args.seq, args.steps, args.host, args.cpu_check))
        else:
            try:
                r = profile_one(family, kernel, args.preset, args.seq, args.steps, device, args.host)
            except Exception as e:  # noqa: BLE001 - one contestant failing leaves the others' profiles
                r = dict(family=family, kernel=kernel, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
        results.append(r)
        lines.append(f"== {family} ({r.get('kernel')}) {args.preset} T={args.seq}: "
                     + (r["error"] if "error" in r else f"{r['step_ms']} ms/step ({r['step_ms_profiled']} profiled), GPU kernels {r['kernel_ms']} ms, "
                        f"{r['tokens_per_s']} tok/s"))
        if "step_ms_each" in r:
            lines.append(f"   unprofiled steps {r['step_ms_each']} ms; cudaMalloc retries during them: "
                         f"{r['alloc_retries']}")
        if "gpu_busy_ms" in r:
            lines.append(f"   busy {r['gpu_busy_ms']} ms, communication {r['comm_ms']} ms, exposed (no compute "
                         f"beside it) {r['exposed_comm_ms']} ms per step (rank {r.get('rank', 0)} of "
                         f"{r.get('world_size', 1)})")
        for rk in r.get("ranks", []):
            lines.append(f"   rank {rk['rank']}: step {rk['step_ms']} ms, exposed communication {rk['exposed_comm_ms']} ms"
                         + (f", {rk['error']}" if rk.get("error") else ""))
        for cat, ms in r.get("categories", {}).items():
            lines.append(f"   {cat:18s} {ms:8.2f} ms")
        for k in r.get("top", [])[:15]:
            lines.append(f"     {k['ms']:8.3f} ms  x{k['calls_per_step']:<4d} [{k['category']}] {k['name'][:100]}")
        for k in r.get("host_ops", []):
            lines.append(f"   host {k['self_cpu_ms']:8.3f} ms self CPU  x{k['calls_per_step']:<5d} {k['name'][:100]}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out = Path(os.environ.get("OUT", "."))
    (out / "train_profile.json").write_text(json.dumps(results, indent=1))
    (out / "train_profile.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
