"""Which attention kernels run grouped-query attention natively on this GPU, what the repeat_interleave fallback costs,
and whether an FP8 KV cache can be used (GPU diagnostic for issue #18, not part of the suites).

For every kernel and phase: kernel_available (MHA) and gqa_support (native enable_gqa / K/V with fewer heads, or the
labelled repeat_interleave fallback). Then one decode-attention call at 6.7B shapes (H=32, D=128, bf16) for MHA,
GQA-8 and MQA: median CUDA-event time per call and the achieved GB/s over the K/V bytes the call must read. Then
fp8_kv_cache_available for each flash package (it runs a tiny FA4 probe of bf16 q against FP8 K/V).
    python scripts/probe_gqa_kernels.py [--batch 16] [--seq 8192]
Writes gqa_probe.json to $OUT (or the working directory) and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from retnet_bench.baselines.kernels import (FLASH_PACKAGES, KERNELS, PHASES, _flash_attn_4,
                                            decode_attention_flash_attn_4, decode_attention_sdpa, gqa_support,
                                            kernel_available, sdpa_context)
from retnet_bench.baselines.quantized_kv import fp8_kv_cache_available
from retnet_bench.suites.trackers import LatencyTracker


def time_decode(kernel: str, batch: int, seq: int, n_kv: int, reps: int = 50, fa4_splits: int | None = None) -> dict:
    """One query per sequence against a (B, Hkv, S, D) cache ((B, S, Hkv, D) for flash-attn-4), all S valid.
    fa4_splits: FlashAttention-4's num_splits (None: the suite's FA4_DECODE_NUM_SPLITS; 0: FA4's own heuristic)."""
    dev, dt, h, d = torch.device("cuda"), torch.bfloat16, 32, 128
    if kernel in FLASH_PACKAGES:
        if kernel != "flash-attn-4":
            return {"skipped": "flash-attn decode writes K/V itself; timed through the model only"}
        q = torch.randn(batch, 1, h, d, device=dev, dtype=dt)
        k, v = (torch.randn(batch, seq, n_kv, d, device=dev, dtype=dt) for _ in range(2))
        seqused = torch.full((batch,), seq, dtype=torch.int32, device=dev)
        if fa4_splits is None:
            call = lambda: decode_attention_flash_attn_4(q, k, v, seqused)  # noqa: E731
        else:
            fa4 = _flash_attn_4()[1]
            call = lambda: fa4(q, k, v, seqused_k=seqused, causal=False, num_splits=fa4_splits)  # noqa: E731
    else:
        q = torch.randn(batch, h, 1, d, device=dev, dtype=dt)
        k, v = (torch.randn(batch, n_kv, seq, d, device=dev, dtype=dt) for _ in range(2))
        mask = torch.zeros(1, 1, 1, seq, device=dev, dtype=dt)
        call = lambda: decode_attention_sdpa(q, k, v, mask, kernel)  # noqa: E731
    try:
        with sdpa_context(kernel):
            for _ in range(5):
                call()
            ms = LatencyTracker(dev, reps, 0.0, reps).time(call).ms_median
    except Exception as e:  # noqa: BLE001 - a kernel that rejects a shape (e.g. FA4 split-KV on SM90) is a finding
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    kv_bytes = k.nbytes + v.nbytes
    return {"ms": round(ms, 4), "kv_bytes": kv_bytes, "kv_GBps": round(kv_bytes / ms / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=8192)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    dev, dt = torch.device("cuda"), torch.bfloat16
    out: dict = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                 "gpu": torch.cuda.get_device_name(), "support": {}, "decode": {}, "fp8_kv": {}}
    for name in KERNELS:
        for phase in PHASES:
            ok, why = kernel_available(name, dev, dt, phase=phase)
            gqa = gqa_support(name, dev, dt, phase) if ok else (False, "kernel unavailable")
            out["support"][f"{name}/{phase}"] = {"mha": ok, "mha_why": why, "gqa_native": gqa[0], "gqa_why": gqa[1]}
    for name in KERNELS:
        if not kernel_available(name, dev, dt, phase="decode")[0]:
            continue
        for label, n_kv in (("MHA", 32), ("GQA-8", 8), ("MQA", 1)):
            out["decode"][f"{name}/{label}"] = time_decode(name, args.batch, args.seq, n_kv)
    # FlashAttention-4 split-KV: the suite's fixed setting vs FA4's own heuristic (num_splits=0), per batch size
    if kernel_available("flash-attn-4", dev, dt, phase="decode")[0]:
        for b in sorted({1, 4, args.batch}):
            for label, n_kv in (("MHA", 32), ("GQA-8", 8)):
                for splits in (1, 0):
                    key = f"flash-attn-4/{label}/B{b}/num_splits={splits}"
                    out["decode"][key] = time_decode("flash-attn-4", b, args.seq, n_kv, fa4_splits=splits)
    for name in KERNELS:
        out["fp8_kv"][name] = fp8_kv_cache_available(dev, name)[1]
    text = json.dumps(out, indent=1)
    print(text)
    Path(os.environ.get("OUT", "."), "gqa_probe.json").write_text(text)


if __name__ == "__main__":
    main()
