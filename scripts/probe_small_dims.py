"""Which kernel fails at small head dims? (GPU diagnostic, not part of the suites.)

Session 12's H200 run of tests/test_training_gpu.py hit "an illegal memory access" in the forward + backward step of
the `tiny` RetNet (d_model 64, 2 heads: dk 32, dv 64) with the fla kernel, reported at fla's first sync (the
autotuner of `chunk_bwd_kernel_dqkwg`), so any kernel launched before it may be the one. Each case here runs in its
own process (an illegal access poisons the CUDA context) with CUDA_LAUNCH_BLOCKING=1, so the failing launch is the
one in the traceback:
  fla:B,T,H,dk,dv      fla's chunk_simple_gla forward + backward alone (bf16), checked against the torch kernel
  model:PRESET:KERNEL  one forward + backward of the RetNet contestant (bf16 weights, batch 2, T 256)
    python scripts/probe_small_dims.py            # every case; writes small_dims.json to $OUT (or the cwd)
    python scripts/probe_small_dims.py --case fla:2,256,2,32,64
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CASES = [
    "fla:2,256,2,64,128", "fla:2,256,2,32,64", "fla:1,256,2,32,64", "fla:2,256,2,16,32", "fla:2,256,2,32,32",
    "fla:2,256,2,64,64", "fla:2,1024,2,32,64", "fla:2,256,2,128,256",
    "model:tiny:torch", "model:tiny:fla", "model:small:fla",
]


def _rms_ratio(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).square().mean().sqrt() / b.square().mean().sqrt()).item()


def run_fla(B: int, T: int, H: int, dk: int, dv: int) -> dict:
    import torch

    from retnet.kernels.chunk import chunk_retention
    from retnet.retention import log_decay

    dev = torch.device("cuda", 0)
    g = torch.Generator(device=dev).manual_seed(0)
    q, k = (torch.randn(B, T, H, dk, device=dev, dtype=torch.bfloat16, generator=g) * dk ** -0.5 for _ in range(2))
    v = torch.randn(B, T, H, dv, device=dev, dtype=torch.bfloat16, generator=g)
    do = torch.randn(B, T, H, dv, device=dev, dtype=torch.bfloat16, generator=g)
    lam = log_decay(H, "paper").to(dev)
    out = {}
    for kernel in ("torch", "fla"):
        x = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        o, _ = chunk_retention(*x, lam, kernel=kernel)
        o.backward(do)
        torch.cuda.synchronize()
        out[kernel] = (o, *(t.grad for t in x))
    return {n: round(_rms_ratio(a, b), 5) for n, a, b in zip(("o", "dq", "dk", "dv"), out["fla"], out["torch"])}


def run_model(preset: str, kernel: str) -> dict:
    import torch

    from retnet_bench.suites.contestants.spec import BuildArgs, get_spec

    dev = torch.device("cuda", 0)
    spec = get_spec("retnet-chunkwise")
    c = spec.build(spec, BuildArgs(preset, kernel, dev, torch.bfloat16, chunk_size=128, use_graph=False,
                                   scenario="train"))
    c.train_step(2, 256)
    torch.cuda.synchronize()
    return {"ok": True}


def one(case: str) -> dict:
    kind, _, rest = case.partition(":")
    if kind == "fla":
        return run_fla(*(int(x) for x in rest.split(",")))
    preset, kernel = rest.split(":")
    return run_model(preset, kernel)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", help="run one case in this process and print its JSON")
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(one(args.case)))
        return
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    results = []
    for case in CASES:
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, __file__, "--case", case], env=env, capture_output=True, text=True,
                               timeout=240)
            rc, text = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            rc, text = 124, "timeout"
        res = [line[7:] for line in text.splitlines() if line.startswith("RESULT ")]
        tail = [line for line in text.splitlines() if line.strip()][-25:] if rc else []
        row = dict(case=case, rc=rc, s=round(time.perf_counter() - t0, 1), result=json.loads(res[0]) if res else None,
                   tail=tail)
        print(json.dumps({k: row[k] for k in ("case", "rc", "s", "result")}), flush=True)
        results.append(row)
        out = Path(os.environ.get("OUT", ".")) / "small_dims.json"
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
