"""Where does one fla-retnet decode step spend its time? (GPU diagnostic, not part of the suites.)

Times the peer's step (as the runner does: eager, through fla's own cache) at a few batch sizes and prints a
torch.profiler breakdown of two steps: host-side (CPU) and device-side (CUDA) time per op. With --pregrow N, every
layer's rotary cos/sin table is first grown to T + N positions (a diagnostic, not how fla decodes): fla rebuilds the
table whenever the cache outgrows it, i.e. every decode step, and its Triton rotary kernel takes the table length as a
compile-time constant.
    python scripts/probe_fla_step.py --batch 1,8 --seq 1024 [--pregrow 4096]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from retnet_bench.baselines.peers import build_peer


def timed_steps(peer, n: int) -> tuple[float, float]:
    """Median CUDA-event ms per step and wall-clock ms per step (host included) over n steps."""
    times = []
    t0 = time.perf_counter()
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        peer.step()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), (time.perf_counter() - t0) * 1e3 / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="6.7b")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--pregrow", type=int, default=0)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    peer = build_peer("fla-retnet", args.preset, torch.bfloat16, "cuda")
    for batch in [int(b) for b in args.batch.split(",")]:
        peer.prefill_state(batch, args.seq)
        if args.pregrow:
            for block in peer.model.model.layers:
                block.attn.rotary._update_cos_sin_cache(args.seq + args.pregrow, device="cuda", dtype=torch.bfloat16)
        for _ in range(5):
            peer.step()
        ms, wall = timed_steps(peer, 10)
        print(f"B={batch} T={args.seq} pregrow={args.pregrow}: {ms:.2f} ms/step (events), {wall:.2f} ms/step wall",
              flush=True)
        if args.no_profile:
            peer.reset()
            continue
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                peer.step()
            torch.cuda.synchronize()
        avg = prof.key_averages()
        print(avg.table(sort_by="self_cpu_time_total", row_limit=args.rows), flush=True)
        print(avg.table(sort_by="self_device_time_total", row_limit=args.rows), flush=True)
        peer.reset()


if __name__ == "__main__":
    main()
