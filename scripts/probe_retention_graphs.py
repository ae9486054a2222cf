"""Would CUDA graphs take fla's launch cost out of RetNet's training step? (GPU diagnostic, before building them.)

A 1.3B training step at T=8192 gives the GPU ~170 ms of work; at T=256 the same step still takes the host 108-233 ms
to issue for RetNet against 88-204 ms for the Transformer, depending on the lease (2026-11-29-probes-s16). fla's
retention calls are RetNet's largest host cost. This times the retention part of a step alone: 24 layers of
fla's chunk_simple_gla at the 1.3B head dims (H 8, dk 256, dv 512, bf16, B 1), forward in layer order then one
backward through all of them, as a step runs them, two ways:

  eager    `chunk_retention(kernel="fla")`, as the model calls fla
  graphed  `RetentionGraphs`, the fla-graphs kernel (retnet/kernels/chunk_graphs.py: the same kernels through
           torch.cuda.make_graphed_callables, one forward and one backward graph per layer, one shared memory pool,
           captured in the order a step replays them). Session 16's run (tree 8ff96bc) called
           make_graphed_callables here directly, before the kernel existed

at T=256 (the GPU idles: wall time per step is host time) and T=8192 (GPU time). Checks first that the graphed
outputs and gradients equal the eager ones on the same inputs. Prints a line per (variant, T); writes
$OUT/retention_graphs.json.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

L, B, H, DK, DV, STEPS = 24, 1, 8, 256, 512, 20


def main() -> None:
    from retnet.kernels.chunk import chunk_retention
    from retnet.kernels.chunk_graphs import RetentionGraphs

    dev = torch.device("cuda")
    log_gamma = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float32, device=dev)))

    def layer(q, k, v):
        return chunk_retention(q, k, v, log_gamma, kernel="fla")[0]

    results = []
    for T in (256, 8192):
        mk = lambda d: (torch.randn(B, T, H, d, device=dev, dtype=torch.bfloat16) * 0.1).requires_grad_()  # noqa: E731
        xs = [(mk(DK), mk(DK), mk(DV)) for _ in range(L)]
        dos = [torch.randn(B, T, H, DV, device=dev, dtype=torch.bfloat16) for _ in range(L)]
        graphs = RetentionGraphs(L)  # captured at its first layer-0 call
        variants = {"eager": [layer] * L,
                    "graphed": [lambda q, k, v, i=i: graphs(i, q, k, v, log_gamma) for i in range(L)]}

        def step(fns):
            outs = [fn(*x) for fn, x in zip(fns, xs)]
            torch.autograd.backward(outs, dos)
            return outs

        # the same function: outputs and gradients of one step each way, on the same inputs
        ref = {}
        for name, fns in variants.items():
            for x in xs:
                for t in x:
                    t.grad = None
            outs = step(fns)
            torch.cuda.synchronize()
            ref[name] = [o.float().clone() for o in outs] + [t.grad.float().clone() for x in xs for t in x]
        err = max(((a - b).norm() / b.norm()).item() for a, b in zip(ref["graphed"], ref["eager"]))

        for name, fns in variants.items():
            for _ in range(3):
                step(fns)
            torch.cuda.synchronize()
            walls, gpus = [], []
            for _ in range(STEPS):
                for x in xs:
                    for t in x:
                        t.grad = None
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                t0 = time.perf_counter()
                a.record()
                step(fns)
                b.record()
                host = time.perf_counter() - t0  # the host's issue time (the GPU may still be running)
                torch.cuda.synchronize()
                walls.append(host * 1e3)
                gpus.append(a.elapsed_time(b))
            r = dict(variant=name, T=T, layers=L, host_ms=round(statistics.median(walls), 3),
                     event_ms=round(statistics.median(gpus), 3),
                     host_ms_per_layer=round(statistics.median(walls) / L, 4), rel_err_vs_eager=err)
            results.append(r)
            print(f"{name:8s} T={T:5d}: host {r['host_ms']:8.3f} ms per step ({r['host_ms_per_layer']:.4f} per layer),"
                  f" events {r['event_ms']:8.3f} ms; graphed vs eager rel. error {err:.2e}", flush=True)
        del graphs, variants, xs, dos
        torch.cuda.empty_cache()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "retention_graphs.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
