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
  paired            one process, dispatch on at import; blocks of calls through the public entry point alternate
                    between fla's dispatch wrappers and the functions they wrap (swapped in every loaded fla module),
                    so the wrappers' cost is read without the 0.2-0.3 ms that separate fresh processes

    OUT=/tmp/out python scripts/probe_fla_host.py [VARIANT ...]   # all by default; writes $OUT/fla_host.json and
                                                                  # prints a line per variant
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"public": "0", "public-nodispatch": "1", "internal": "1", "paired": "0"}
ROUNDS, BLOCK = 20, 30  # paired: 20 rounds of one block per mode, the order swapped each round
B, T, H, DK, DV, CALLS = 1, 256, 8, 256, 512, 300


def _dispatch_swaps() -> list[tuple[dict, str, object, object]]:
    """(module globals, name, fla's dispatch wrapper, the function it wraps) for every wrapper bound in a loaded fla
    module. The wrapper is fla.backends' `BackendRegistry.dispatch.<locals>.wrapper` under torch.compiler.disable;
    the function it wraps keeps its own decorators (input_guard and the like)."""
    swaps = []
    for mod in [m for name, m in list(sys.modules.items()) if name.startswith("fla.") and m is not None]:
        for name, obj in list(vars(mod).items()):
            f = obj
            while callable(f) and hasattr(f, "__wrapped__"):
                code = getattr(f, "__code__", None)  # functools.wraps copied the name: read the code's own
                if code and code.co_name == "wrapper" and code.co_filename.endswith(os.path.join("fla", "backends.py")):
                    swaps.append((vars(mod), name, obj, f.__wrapped__))
                    break
                f = f.__wrapped__
    return swaps


def _paired(step) -> dict:
    import torch

    swaps = _dispatch_swaps()
    times: dict[str, list[float]] = {"dispatch": [], "bypassed": []}
    saved_per_round = []  # each round's median difference: the spread of the saving, not only its median
    for r in range(ROUNDS):
        block_median = {}
        for mode in (("dispatch", "bypassed") if r % 2 == 0 else ("bypassed", "dispatch")):
            for g, name, wrapper, inner in swaps:
                g[name] = wrapper if mode == "dispatch" else inner
            for _ in range(3):  # settle after the swap
                step()
            torch.cuda.synchronize()
            block = []
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                step()
                block.append((time.perf_counter() - t0) * 1e3)
            times[mode] += block
            block_median[mode] = statistics.median(block)
        saved_per_round.append(block_median["dispatch"] - block_median["bypassed"])
    for g, name, wrapper, _ in swaps:
        g[name] = wrapper
    med = {m: statistics.median(t) for m, t in times.items()}
    rounds = sorted(saved_per_round)
    return {"variant": "paired", "wrappers_swapped": sorted({n for _, n, _, _ in swaps}),
            "host_ms_median_dispatch": med["dispatch"], "host_ms_median_bypassed": med["bypassed"],
            "saved_ms_per_call": med["dispatch"] - med["bypassed"], "calls_per_mode": ROUNDS * BLOCK,
            "saved_ms_per_round_min_median_max": [rounds[0], statistics.median(rounds), rounds[-1]]}


def _one(variant: str) -> dict:
    import torch

    from retnet.retention import log_decay

    dev = torch.device("cuda")
    torch.manual_seed(0)  # the same inputs in every variant's process, so their gradient sums compare
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
    if variant == "paired":
        return _paired(step)
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
    if sys.argv[1:2] == ["--child"]:
        print("RESULT " + json.dumps(_one(sys.argv[2])), flush=True)
        return
    wanted = sys.argv[1:] or list(VARIANTS)
    if unknown := [v for v in wanted if v not in VARIANTS]:
        print(f"unknown variant(s) {unknown}: expected some of {list(VARIANTS)}", file=sys.stderr)
        sys.exit(2)
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for variant in wanted:
        env = {**os.environ, "FLA_DISABLE_BACKEND_DISPATCH": VARIANTS[variant]}
        p = subprocess.run([sys.executable, __file__, "--child", variant], env=env, capture_output=True, text=True,
                           timeout=240)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        r = json.loads(lines[-1][7:]) if lines else {"variant": variant, "error": p.stderr[-800:]}
        results.append(r)
        print(json.dumps(r), flush=True)
        (out / "fla_host.json").write_text(json.dumps(results, indent=1))  # after each: a timeout keeps the rest


if __name__ == "__main__":
    main()
