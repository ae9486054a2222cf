"""Where does a static-cache decode step spend its time? (GPU diagnostic, not part of the suites.)

Times one 6.7B bf16 decode step (CUDA graph) at batch B and length T for: the model as is (masked SDPA over the
cache), the same with the mask dropped (cost of masking), and prints a kernel-time breakdown of one eager step.
    python scripts/probe_static_decode.py --batch 1 --seq 8192 --kernel sdpa-cudnn
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from retnet_bench.baselines import Transformer, TransformerConfig
from retnet_bench.baselines import transformer as tmod


def bench(fn, n: int = 50) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    for _ in range(5):
        g.replay()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        g.replay()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--kernel", default="sdpa-cudnn")
    args = ap.parse_args()
    cfg = TransformerConfig.from_name("6.7b")
    with torch.device("cuda"):
        model = Transformer(cfg, kernel=args.kernel).to(torch.bfloat16).eval()
    cache = model.new_static_cache(args.batch, args.seq + 1, device="cuda", dtype=torch.bfloat16)
    cache.k.normal_()
    cache.v.normal_()
    ids = torch.zeros(args.batch, dtype=torch.long, device="cuda")

    @torch.inference_mode()
    def step():
        cache.pos.fill_(args.seq)
        model.step(ids, cache)

    ms = bench(step)
    real = tmod.decode_attention_sdpa
    tmod.decode_attention_sdpa = lambda q, k, v, mask, kernel: real(q, k, v, None, kernel)
    ms_nomask = bench(step)
    tmod.decode_attention_sdpa = real
    weights = sum(p.numel() for p in model.parameters()) * 2
    kv = cache.k.nbytes + cache.v.nbytes
    print(f"B={args.batch} T={args.seq} {args.kernel}: step {ms:.3f} ms ({args.batch / ms * 1e3:.1f} tok/s), "
          f"no mask {ms_nomask:.3f} ms; floor at 4.28 TB/s {(weights + kv) / 4.28e12 * 1e3:.3f} ms")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


if __name__ == "__main__":
    main()
