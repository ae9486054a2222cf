"""How fast the GPUs of one machine exchange FSDP2's messages, and what that makes a training step's communication
(multi-GPU diagnostic for issue #14's "what bounds the scaling"; not part of the suites).

FSDP2 (suites/training/fsdp.py, `shard_model`) all-gathers each block's parameters in bf16 before its forward and (all
but the last block) again before its backward, and reduce-scatters its gradients in fp32. This script times exactly those two collectives at those
message sizes (and a sweep around them) through torch.distributed, with CUDA events, on every rank:

    python3 -m torch.distributed.run --standalone --nproc-per-node N scripts/probe_collectives.py \
        [--presets 1.3b,2.7b,6.7b,13b] [--sweep-mb 1,8,64,256,1024] [--iters 20] [--device cpu]

Bandwidths follow nccl-tests' definitions (doc/PERFORMANCE.md there): algbw = S / t with S the all-gather's output
or the reduce-scatter's input; busbw = algbw * (N - 1) / N, the rate each GPU's link carried, comparable across N.
Then, per preset, the communication one optimizer step needs per rank (bytes: `collective_bytes_per_step`, tested
against what FSDP2 issues; and milliseconds at the rate measured at the block's size): what a step must hide behind
its compute, or else wait for. NCCL_DEBUG=INFO goes to
one file per rank under $OUT (unless NCCL_DEBUG is already set): its "via P2P/..." or "via SHM/..." lines say how
the GPUs were linked, which the summary repeats. Writes collectives.json and collectives.txt to $OUT.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from retnet_bench.suites.training.fsdp import (collective_bytes_per_step, init_distributed, rank_device,
                                               shutdown_distributed)
from retnet_bench.suites.training.recipe import ModelRecipe, build_model

OUT = Path(os.environ.get("OUT", "."))
BF16_BYTES, FP32_BYTES = 2, 4


def bus_bandwidth(size_bytes: int, seconds: float, world_size: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s for an all-gather or reduce-scatter of S = size_bytes taking `seconds`."""
    algbw = size_bytes / seconds / 1e9
    return algbw, algbw * (world_size - 1) / world_size


def step_comm_ms(step_bytes: dict[str, int], busbw_gbs: dict[str, float], world_size: int) -> float:
    """Milliseconds of collectives per step at the given bus bandwidths: t = S (N - 1) / N / busbw, summed (0 on one
    rank: nothing crosses a link, and busbw is 0 too)."""
    if world_size == 1:
        return 0.0
    share = (world_size - 1) / world_size
    return sum(step_bytes[op] * share / (busbw_gbs[op] * 1e9) * 1e3 for op in step_bytes)


def transports(log_text: str) -> list[str]:
    """NCCL's channel transports from an NCCL_DEBUG=INFO log ("via P2P/CUMEM/read", "via SHM/direct/direct", ...),
    each once, in order of appearance."""
    seen: list[str] = []
    for m in re.finditer(r"via (\S+)", log_text):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def preset_sizes(presets: list[str]) -> dict[str, dict]:
    """Per preset: a block's parameter count and the bytes of one step's collectives (`collective_bytes_per_step`),
    from models built on the meta device. RetNet and the Transformer have the same counts at every preset this
    project has; the larger of the two is used should they ever differ."""
    sizes = {}
    for preset in presets:
        counts = []
        for family, kernel in (("retnet", "torch"), ("transformer", "sdpa")):
            model = build_model(ModelRecipe(family, preset, kernel=kernel), torch.device("meta"), torch.float32)
            counts.append((sum(p.numel() for p in model.layers[0].parameters()), len(model.layers),
                           collective_bytes_per_step(model, BF16_BYTES, FP32_BYTES)))
        block, n_blocks, step_bytes = max(counts, key=lambda c: c[0])
        sizes[preset] = dict(block_params=block, n_blocks=n_blocks, step_bytes=step_bytes)
    return sizes


def time_collective(op: str, size_bytes: int, iters: int, device, world_size: int) -> tuple[list[float], int]:
    """Seconds per call of `op` ("all_gather" in bf16, "reduce_scatter" in fp32) with S about size_bytes (rounded
    down to a multiple of N elements, as FSDP2 pads its shards), each call timed alone (events around it on a GPU,
    the wall clock on a CPU), after two untimed calls; and S as run."""
    dtype = torch.bfloat16 if op == "all_gather" else torch.float32
    n = size_bytes // (dtype.itemsize * world_size) * world_size
    big = torch.ones(n, dtype=dtype, device=device)
    small = torch.ones(n // world_size, dtype=dtype, device=device)

    def call() -> None:
        if op == "all_gather":
            dist.all_gather_into_tensor(big, small)
        else:
            dist.reduce_scatter_tensor(small, big)

    for _ in range(2):
        call()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
    return times, n * dtype.itemsize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="1.3b,2.7b,6.7b,13b")
    ap.add_argument("--sweep-mb", default="1,8,64,256,1024", help="extra message sizes S in MB (1e6 bytes)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if "NCCL_DEBUG" not in os.environ:  # read by NCCL when the communicator is made, so set before init
        os.environ.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,GRAPH",
                          NCCL_DEBUG_FILE=str(OUT / "nccl.%h.%p.log"))

    # torch 2.13 renames the two collectives (all_gather_single, reduce_scatter_single); the device's 2.11 has only
    # these names, which are also the ones FSDP2 calls
    warnings.filterwarnings("ignore", message=".*is deprecated. Please use `torch.distributed", category=FutureWarning)

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = rank_device(args.device, int(os.environ["LOCAL_RANK"]))
    init_distributed(device, rank, world_size, timeout_s=300)
    sizes = preset_sizes(args.presets.split(","))
    # every message size once: the sweep, then each preset's block all-gather (bf16) and reduce-scatter (fp32)
    messages = {("all_gather", int(float(mb) * 1e6)) for mb in args.sweep_mb.split(",")}
    messages |= {("reduce_scatter", int(float(mb) * 1e6)) for mb in args.sweep_mb.split(",")}
    for s in sizes.values():
        messages |= {("all_gather", s["block_params"] * BF16_BYTES), ("reduce_scatter", s["block_params"] * FP32_BYTES)}
    measured = []
    for op, asked in sorted(messages):
        times, size = time_collective(op, asked, args.iters, device, world_size)
        gathered: list[list[float]] = [None] * world_size  # type: ignore[list-item]
        dist.all_gather_object(gathered, times)
        # a collective ends when its slowest rank's part does: the max over ranks of each call, then the median
        per_call = [max(ts) for ts in zip(*gathered)]
        t = statistics.median(per_call)
        algbw, busbw = bus_bandwidth(size, t, world_size)
        measured.append(dict(op=op, asked_bytes=asked, size_bytes=size, ms=t * 1e3, algbw_gbs=algbw, busbw_gbs=busbw))
    shutdown_distributed()
    if rank != 0:
        return
    summary = summarise(measured, sizes, world_size, device)
    (OUT / "collectives.json").write_text(json.dumps(summary, indent=2))
    (OUT / "collectives.txt").write_text(render(summary))
    print(render(summary))


def summarise(measured: list[dict], sizes: dict[str, dict[str, int]], world_size: int, device) -> dict:
    logs = "".join(p.read_text(errors="replace") for p in sorted(OUT.glob("nccl.*.log")))
    by_size = {(m["op"], m["asked_bytes"]): m for m in measured}
    steps = {}
    for preset, s in sizes.items():
        busbw = {"all_gather": by_size[("all_gather", s["block_params"] * BF16_BYTES)]["busbw_gbs"],
                 "reduce_scatter": by_size[("reduce_scatter", s["block_params"] * FP32_BYTES)]["busbw_gbs"]}
        steps[preset] = dict(**s, busbw_gbs=busbw, comm_ms_per_step=step_comm_ms(s["step_bytes"], busbw, world_size))
    nccl = torch.cuda.nccl.version() if device.type == "cuda" else None
    return dict(world_size=world_size, device=str(device),
                gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                nccl_version=".".join(map(str, nccl)) if nccl else None, transports=transports(logs),
                nccl_env={k: v for k, v in sorted(os.environ.items()) if k.startswith(("NCCL_", "TORCH_SYMM"))},
                measured=measured, fsdp_step=steps)


def render(summary: dict) -> str:
    lines = [f"== {summary['world_size']} ranks on {summary['gpu'] or summary['device']}, NCCL "
             f"{summary['nccl_version']}, transports {summary['transports'] or 'not logged'}"]
    lines.append(f"   {'op':<15}{'S (MB)':>10}{'ms':>10}{'algbw GB/s':>12}{'busbw GB/s':>12}")
    for m in summary["measured"]:
        lines.append(f"   {m['op']:<15}{m['size_bytes'] / 1e6:>10.2f}{m['ms']:>10.3f}{m['algbw_gbs']:>12.1f}"
                     f"{m['busbw_gbs']:>12.1f}")
    lines.append("   FSDP2 per optimizer step and rank (blocks all-gathered for forward and again for backward, the last "
                 "block and the root once, gradients reduce-scattered in fp32), at the block's measured rate:")
    for preset, s in summary["fsdp_step"].items():
        gb = {op: b / 1e9 for op, b in s["step_bytes"].items()}
        lines.append(f"   {preset:>5}: all-gather {gb['all_gather']:.2f} GB, reduce-scatter {gb['reduce_scatter']:.2f} GB"
                     f" -> {s['comm_ms_per_step']:.1f} ms of collectives per step")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
