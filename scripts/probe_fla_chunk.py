"""Does fla's chunk size trade speed for training memory at RetNet's head dims? (GPU diagnostic for issue #12's
memory target; not part of the suites.)

fla's `chunk_simple_gla` backward re-materialises the state at every chunk boundary, twice (h and dh, fp32):
T / chunk x dk x dv per head, 1.07 GB at the 1.3B dims (8 heads, dk=256, dv=512) and T=8192 with its default chunk of
64. Times forward + backward and reads the allocator's peak above the inputs for chunk 64 / 128 / 256 (a chunk the
kernels refuse, e.g. for shared memory, is printed as such).
    python scripts/probe_fla_chunk.py [--chunks 64,128,256]
Writes fla_chunk.json to $OUT (or the working directory).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from retnet_bench.suites.trackers import LatencyTracker
from retnet.kernels.chunk import _fla_chunk_simple_gla

SHAPES = {"1.3b": 8, "6.7b": 16}  # heads; dk=256, dv=512 in both (the paper's head dims)


def one(chunk_simple_gla, heads: int, T: int, chunk: int, device: torch.device) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    q, k = (torch.randn(1, T, heads, 256, device=device, dtype=torch.bfloat16, generator=g) * 0.1 for _ in range(2))
    v = torch.randn(1, T, heads, 512, device=device, dtype=torch.bfloat16, generator=g)
    for t in (q, k, v):
        t.requires_grad_(True)
    g_gamma = torch.log1p(-torch.exp2(-5.0 - torch.arange(heads, device=device, dtype=torch.float32)))
    do = torch.randn(1, T, heads, 512, device=device, dtype=torch.bfloat16, generator=g)

    def step() -> None:
        o, _ = chunk_simple_gla(q, k, v, g_gamma=g_gamma, scale=1.0, chunk_size=chunk)
        o.backward(do)
        q.grad = k.grad = v.grad = None

    step()  # compile / autotune
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device) - base
    t = LatencyTracker(device, min_steps=10, min_seconds=1.0, max_steps=50).time(step)
    return dict(heads=heads, T=T, chunk=chunk, fwd_bwd_ms=round(t.ms_median, 3),
                peak_above_inputs_gb=round(peak / 1e9, 3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", default="64,128,256")
    ap.add_argument("--seqs", default="8192,32768")
    args = ap.parse_args()
    fn, why = _fla_chunk_simple_gla()
    if fn is None or not torch.cuda.is_available():
        raise SystemExit(why or "needs a CUDA GPU")
    device = torch.device("cuda", 0)
    rows = []
    for preset, heads in SHAPES.items():
        for T in (int(s) for s in args.seqs.split(",")):
            for chunk in (int(c) for c in args.chunks.split(",")):
                try:
                    r = dict(preset=preset, **one(fn, heads, T, chunk, device))
                except Exception as e:  # noqa: BLE001 - a refused chunk size is a finding, not a crash
                    r = dict(preset=preset, heads=heads, T=T, chunk=chunk,
                             error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
                print(r, flush=True)
                rows.append(r)
                torch.cuda.empty_cache()
    Path(os.environ.get("OUT", "."), "fla_chunk.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
