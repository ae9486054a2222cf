"""How much host time does one fla retention call cost, and how much of it is fla's Python layers? (GPU diagnostic.)

RetNet's training step at 1.3B is sometimes host-bound (results/reference/h200/2026-11-29-probes-s13). This times
the host side of one layer's retention forward + backward at the 1.3B head dims (H 8, dk 256, dv 512), at a short
sequence (T 256) so the GPU finishes each call before the host issues the next: the wall time per call is host time.
Each variant runs in a fresh process (fla reads its dispatch switch at import):

  public            fla.ops.simple_gla.chunk_simple_gla, as the model calls it
  public-nodispatch the same with FLA_DISABLE_BACKEND_DISPATCH=1 (fla's documented switch: no backend lookup and no
                    torch.compiler.disable wrapper per kernel call; on an NVIDIA GPU no backend takes these calls, so
                    the kernels are the same)
  internal          fla's chunk_simple_gla_fwd / _bwd (the functions its autograd.Function calls) from a bare
                    autograd.Function of this script, dispatch off: what fla's Python layers above its kernels cost

    OUT=/tmp/out python scripts/probe_fla_host.py          # writes $OUT/fla_host.json, prints a line per variant
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"public": "0", "public-nodispatch": "1", "internal": "1"}
B, T, H, DK, DV, CALLS = 1, 256, 8, 256, 512, 300


def _one(variant: str) -> dict:
    import torch

    from retnet.retention import log_decay

    dev = torch.device("cuda")
    q, k = (torch.randn(B, T, H, DK, device=dev, dtype=torch.bfloat16) * DK**-0.5 for _ in range(2))
    v, do = (torch.randn(B, T, H, DV, device=dev, dtype=torch.bfloat16) for _ in range(2))
    g_gamma = log_decay(H, "paper").to(dev).float()
    if variant == "internal":
        from fla.ops.simple_gla.chunk import chunk_simple_gla_bwd, chunk_simple_gla_fwd
        from fla.ops.utils.constant import RCP_LN2

        class Bare(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v):
                gam = g_gamma * RCP_LN2  # fla's kernels take the decay in log2
                o, _ = chunk_simple_gla_fwd(q, k, v, g_gamma=gam, scale=1.0)
                ctx.save_for_backward(q, k, v, gam)
                return o

            @staticmethod
            def backward(ctx, do):
                q, k, v, gam = ctx.saved_tensors
                dq, dk, dv, _, _ = chunk_simple_gla_bwd(q, k, v, None, gam, None, do, None, scale=1.0)
                return dq, dk, dv

        def call(x):
            return Bare.apply(*x)
    else:
        from fla.ops.simple_gla import chunk_simple_gla

        def call(x):
            return chunk_simple_gla(*x, g_gamma=g_gamma, scale=1.0)[0]

    def step() -> list:
        x = [t.detach().requires_grad_(True) for t in (q, k, v)]
        call(x).backward(do)
        return [t.grad for t in x]

    ref = step()  # compiles and autotunes
    for _ in range(20):
        step()
    torch.cuda.synchronize()
    host = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(CALLS):
        t0 = time.perf_counter()
        step()
        host.append((time.perf_counter() - t0) * 1e3)
    end.record()
    torch.cuda.synchronize()
    return {"variant": variant, "host_ms_median": statistics.median(host), "host_ms_p10": sorted(host)[CALLS // 10],
            "host_ms_p90": sorted(host)[CALLS * 9 // 10], "gpu_wall_ms_per_call": start.elapsed_time(end) / CALLS,
            "grads": [float(g.float().pow(2).mean()) for g in ref]}


def main() -> None:
    if len(sys.argv) > 1:
        print("RESULT " + json.dumps(_one(sys.argv[1])), flush=True)
        return
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for variant, dispatch_off in VARIANTS.items():
        env = {**os.environ, "FLA_DISABLE_BACKEND_DISPATCH": dispatch_off}
        p = subprocess.run([sys.executable, __file__, variant], env=env, capture_output=True, text=True, timeout=240)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        r = json.loads(lines[-1][7:]) if lines else {"variant": variant, "error": p.stderr[-800:]}
        results.append(r)
        print(json.dumps(r), flush=True)
    (out / "fla_host.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
