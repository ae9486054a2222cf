"""Time RetNet's parallel-side retention, forward + backward, per chunk kernel (GPU; issue #12's measurement).

Two levels, B=1, bf16, the paper's head dims (dk=256, dv=512), H of the preset (1.3B: 8 heads, 6.7B: 16):
  op     the retention alone on bf16 (B, T, H, d) inputs: `chunk_retention(kernel=torch|fla)` (unnormalised),
         `torch-normalised` (today's model path: fp32 copies, (B, H, T, d) transposes, row-sum normaliser,
         retnet.retention.chunkwise_retention: the issue's "ours today") and, when fla imports, fla's own
         `chunk_retention` (torchscale's decay; the issue's 1.95 / 7.6 ms row) as a cross-check.
  layer  one MultiScaleRetention (projections, rotation, kernel, head norm, gate, output projection) with the
         model's chunk_kernel torch vs fla: what training and prefill pay around the kernel.
Median of CUDA-event timings (>= 10 repeats and >= 1 s after 3 warm-ups), peak allocated memory per point, and
for fla the RMS ratio of its head-normed output vs torch's (a parity check at full size). Writes
$OUT/retention_check.json (or ./retention_check.json) and prints one line per point.

    python scripts/gpu_retention_check.py [--presets 1.3b,6.7b] [--seq 8192,32768] [--levels op,layer]
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Callable

import torch
import torch.nn.functional as F

from retnet import RetNet, RetNetConfig
from retnet.kernels import chunk_kernel_available, chunk_retention
from retnet.kernels.chunk import fla_version
from retnet.retention import chunkwise_retention, log_decay, position_tables, rotary_angle
from retnet_bench.suites.trackers import LatencyTracker

# issue #12, H200 at f66f8c0, one layer fwd+bwd, B=1 (ms)
ISSUE_REFERENCE_MS = {
    "ours today (torch-normalised)": {"1.3b/8192": 10.3, "1.3b/32768": 63.8, "6.7b/8192": 19.4, "6.7b/32768": 122.0},
    "fla chunk_retention": {"1.3b/8192": 1.95, "1.3b/32768": 7.6, "6.7b/8192": 3.74, "6.7b/32768": 15.0},
    "sdpa cudnn (transformer dims)": {"1.3b/8192": 1.91, "1.3b/32768": 27.9, "6.7b/8192": 3.66, "6.7b/32768": 55.8},
}


def time_ms(fn: Callable[[], object], min_reps: int = 10, min_seconds: float = 1.0) -> dict[str, float]:
    """The suites' own timer (CUDA events, >= min_reps calls and >= min_seconds, at most 200) after 3 warm-up calls."""
    for _ in range(3):
        fn()
    t = LatencyTracker(torch.device("cuda"), min_reps, min_seconds, 200).time(fn)
    return {"ms_median": t.ms_median, "ms_p10": t.ms_p10, "ms_p90": t.ms_p90, "n_repeats": t.n}


def rms_ratio(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach().float(), ref.detach().float()
    return ((ours - ref).square().mean().sqrt() / ref.square().mean().sqrt()).item()


def op_fns(H: int, T: int, dk: int = 256, dv: int = 512) -> dict[str, Callable[[], torch.Tensor]]:
    """name -> fwd+bwd closure over shared bf16 leaves; each returns its head-normed output (for parity)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, T, H, d, device="cuda", dtype=torch.bfloat16, generator=g) for d in (dk, dk, dv))
    k = k * dk**-0.5
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    do = torch.randn(1, T, H, dv, device="cuda", dtype=torch.bfloat16, generator=g)
    lam = log_decay(H, "paper").cuda()
    _, _, row_norm = position_tables(torch.arange(T, device="cuda"), rotary_angle(dk).cuda(), lam, torch.float32)

    def run(out: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(out.float(), (dv,), eps=1e-6)
        torch.autograd.grad(normed, (q, k, v), do)
        return normed.detach()

    def normalised() -> torch.Tensor:  # the model's torch path: fp32 copies, head-major, normaliser
        qh, kh, vh = (t.transpose(1, 2).float() for t in (q, k, v))
        o, _, _ = chunkwise_retention(qh, kh, vh, lam.float(), row_norm, chunk_size=512)
        return run(o.transpose(1, 2))

    fns = {
        "torch": lambda: run(chunk_retention(q, k, v, lam, kernel="torch", chunk_size=512)[0]),
        "torch-normalised": normalised,
    }
    if chunk_kernel_available("fla", "cuda")[0]:
        from fla.ops.retention import chunk_retention as fla_chunk_retention

        fns["fla"] = lambda: run(chunk_retention(q, k, v, lam, kernel="fla")[0])
        fns["fla-chunk_retention (torchscale decay)"] = lambda: run(fla_chunk_retention(q, k, v, scale=1.0)[0])
    return fns


def layer_fns(preset: str, T: int) -> dict[str, Callable[[], torch.Tensor]]:
    cfg = RetNetConfig.from_name(preset, n_layers=1, vocab_size=256)
    model = RetNet(cfg).to("cuda", torch.bfloat16)
    block = model.layers[0]
    tables = model._tables(torch.arange(T, device="cuda"), torch.float32)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, T, cfg.d_model, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    dy = torch.randn(1, T, cfg.d_model, device="cuda", dtype=torch.bfloat16, generator=g)
    params = [x, *block.retention.parameters()]

    def run(kernel: str) -> torch.Tensor:
        y, _ = block.retention(block.retention_norm(x), tables, "chunkwise", 512, None, kernel)
        torch.autograd.grad(y, params, dy)
        return y.detach()

    kernels = ["torch"] + (["fla"] if chunk_kernel_available("fla", "cuda")[0] else [])
    return {k: (lambda k=k: run(k)) for k in kernels}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="1.3b,6.7b")
    ap.add_argument("--seq", default="8192,32768")
    ap.add_argument("--levels", default="op,layer")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    out_dir = os.environ.get("OUT", ".")
    ok, why = chunk_kernel_available("fla", "cuda")
    result = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "fla_core": fla_version(),
        "fla_available": ok, "fla_reason": why, "dtype": "bfloat16", "batch": 1, "dk": 256, "dv": 512,
        "issue_reference_ms": ISSUE_REFERENCE_MS, "rows": [],
    }
    for level in args.levels.split(","):
        for preset in args.presets.split(","):
            H = RetNetConfig.from_name(preset).n_heads
            for T in (int(t) for t in args.seq.split(",")):
                fns = op_fns(H, T) if level == "op" else layer_fns(preset, T)
                reference = None
                for name, fn in fns.items():
                    row = {"level": level, "preset": preset, "n_heads": H, "seq_len": T, "kernel": name}
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    try:
                        out = fn()
                        if name == "torch":  # both levels start with it: the parity reference
                            reference = out
                        elif name == "fla":
                            row["rms_vs_torch"] = rms_ratio(out, reference)
                        row.update(time_ms(fn), status="ok")
                        row["peak_alloc_gb"] = torch.cuda.max_memory_allocated() / 2**30
                    except torch.cuda.OutOfMemoryError as exc:
                        row.update(status="oom", error=str(exc).splitlines()[0][:200])
                    except Exception as exc:  # a kernel that cannot run here is a row, not the end of the check
                        row.update(status="error", error=f"{type(exc).__name__}: {exc}"[:300])
                    result["rows"].append(row)
                    print(json.dumps(row), flush=True)
                del fns, reference
    path = os.path.join(out_dir, "retention_check.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
