"""Profile the RetNet decode step (issue #16): timed CUDA-graph step, per-kernel breakdown of one layer, GEMM
bandwidth, and (--drift) how far bf16-state logits drift from fp32-state logits.

    OUT=/tmp/out python scripts/profile_retnet_step.py                       # 6.7B, batch 1,8,16, triton vs old path
    OUT=/tmp/out python scripts/profile_retnet_step.py --kernels triton --batch 16 --state-dtype bfloat16
    OUT=/tmp/out python scripts/profile_retnet_step.py --drift --drift-steps 300

Writes $OUT/step_profile.json and $OUT/step_profile.txt (and $OUT/drift.json with --drift). Meant to finish in
well under a minute on an H200. The model has random weights (speed needs no checkpoint); the state is filled with
random values at position --seq, as the suites' `fill` does, and the step is captured in one CUDA graph per point
exactly as the suites capture it (warm-up on a side stream, then capture).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from retnet import RetNet, RetNetConfig
from retnet import analytic as ra
from retnet_bench.suites.contestants.base import cuda_graph  # the suites' own capture: profile what they time
from retnet_bench.suites.trackers import LatencyTracker

GB = 1e9
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul")


def time_ms(fn, reps: int) -> float:
    """Median ms of `fn` over `reps` calls, timed as the suites time them (CUDA events)."""
    return LatencyTracker(torch.device("cuda"), reps, 0.0, reps).time(fn).ms_median


def copy_bandwidth_gbps(nbytes: int = 2 * 1024**3) -> float:
    """Device-to-device copy bandwidth counting bytes read + written (as suites/trackers.py measures it)."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = time_ms(lambda: dst.copy_(src), 10)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms / 1e3) / GB


def build_model(preset: str, dtype: torch.dtype, state_dtype: torch.dtype) -> RetNet:
    """Random weights straight in `dtype` on the GPU (meta -> to_empty -> init: no fp32 copy of 6.7B weights)."""
    cfg = RetNetConfig.from_name(preset, state_dtype=state_dtype)
    with torch.device("meta"):
        model = RetNet(cfg).to(dtype)
    model.to_empty(device="cuda")
    torch.manual_seed(0)
    model.reset_parameters()
    return model.eval()


def filled_state(model: RetNet, batch: int, seq: int):
    state = model.init_state(batch, device="cuda")
    state.kv.normal_(std=0.02)
    state.k_sum.normal_(std=0.02)
    state.pos.fill_(seq)
    return state


# ---- bytes of the kernels we know -----------------------------------------------------------------------
def triton_kernel_bytes(name: str, cfg: RetNetConfig, B: int, kernel: str, act: int, ss: int) -> int | None:
    """Bytes one launch of our Triton kernels moves (act: activation itemsize, ss: state itemsize)."""
    H, dk, dv, d = cfg.n_heads, cfg.qk_head_dim, cfg.v_head_dim, cfg.d_model
    if "recurrent_step_kernel" in name:  # state read + write, q/k/v read, o (fp32) written; z r/w on the old path
        z = 3 * B * H * dk * ss if kernel == "triton-statepass" else 0  # read k_sum, write k_sum_next
        return 2 * B * H * dk * dv * ss + B * H * (2 * dk + dv) * act + B * H * dv * 4 + z
    if "epilogue_kernel" in name:  # numer (fp32), q, k, g read; z read + written; gated written
        return B * H * dv * 4 + B * H * 2 * dk * act + 2 * B * H * dv * act + 2 * B * H * dk * ss
    if "add_norm_kernel" in name:  # x, delta read; x, h written; weight (+ bias) read
        return 4 * B * d * act + 2 * d * act
    return None


def gemm_bytes(shapes, act: int) -> int | None:
    """(M, K) @ (K, N) from a profiled op's input shapes -> bytes read + written (all in the weights' dtype)."""
    mats = [s for s in shapes if isinstance(s, (list, tuple)) and len(s) == 2]
    if len(mats) < 2:
        return None
    (m, k), (k2, n) = mats[-2], mats[-1]
    if k != k2:  # aten::linear passes the weight as (N, K)
        n = k2
    return (m * k + k * n + m * n) * act


def kernel_table(events, n_steps: int, cfg: RetNetConfig, B: int, kernel: str, act: int, ss: int) -> list[dict]:
    """Per kernel (GEMMs split by shape): count and time per step, bytes and GB/s where known."""
    rows: dict[str, dict] = defaultdict(lambda: dict(count=0, us=0.0, bytes=0, bytes_known=True))
    attributed: dict[str, int] = defaultdict(int)  # kernel name -> launches already placed under a CPU op
    for e in events:
        kernels = getattr(e, "kernels", None) or []
        if e.device_type == torch.autograd.DeviceType.CPU and kernels and e.name in GEMM_OPS:
            # one row per GEMM op and shape, all its kernels together (cuBLAS may add a split-K reduction)
            shapes = [list(s) for s in (e.input_shapes or [])]
            nbytes = gemm_bytes(shapes, act)
            row = rows[f"{e.name} {shapes[:2]}: " + " + ".join(k.name[:80] for k in kernels)]
            row["count"] += 1
            row["us"] += sum(k.duration for k in kernels)
            row["bytes"] += nbytes or 0
            row["bytes_known"] &= nbytes is not None
            for kern in kernels:
                attributed[kern.name] += 1
    for e in events:  # device-side kernels not under a GEMM op: ours (Triton) and torch's elementwise ones
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if attributed.get(e.name, 0) > 0:
            attributed[e.name] -= 1
            continue
        row = rows[e.name[:120]]
        row["count"] += 1
        row["us"] += e.time_range.elapsed_us()
        nbytes = triton_kernel_bytes(e.name, cfg, B, kernel, act, ss)
        row["bytes"] += nbytes or 0
        row["bytes_known"] &= nbytes is not None
    out = []
    for name, r in rows.items():
        per_step_us = r["us"] / n_steps
        per_step_bytes = r["bytes"] / n_steps if r["bytes_known"] else None
        out.append(dict(
            kernel=name, count_per_step=r["count"] / n_steps, per_layer=r["count"] / n_steps / cfg.n_layers,
            us_per_step=round(per_step_us, 2), us_per_launch=round(r["us"] / max(r["count"], 1), 2),
            bytes_per_step=per_step_bytes,
            gbps=round(per_step_bytes / (per_step_us * 1e-6) / GB, 1) if per_step_bytes and per_step_us else None,
        ))
    return sorted(out, key=lambda r: -r["us_per_step"])


def profile_point(model: RetNet, B: int, seq: int, kernel: str, reps: int, peak_gbps: float, act: int) -> dict:
    cfg = model.cfg
    model.step_kernel = kernel
    state = filled_state(model, B, seq)
    ids = torch.randint(0, cfg.vocab_size, (B,), device="cuda")

    def step():  # what the suite's RetNet contestant captures
        logits, _ = model.step(ids, state)
        ids.copy_(logits[:, -1].argmax(-1))

    with torch.inference_mode():
        graph = cuda_graph(step)
        for _ in range(3):
            graph.replay()
        ms = time_ms(graph.replay, reps)
        ss = state.kv.element_size()
        nbytes = ra.decode_bytes_per_step(cfg, B, model.embed.weight.dtype, state.kv.dtype)
        point = dict(batch=B, kernel=kernel, state_dtype=str(state.kv.dtype).removeprefix("torch."),
                     ms_per_step=round(ms, 4), tok_per_s=round(B / ms * 1e3, 1), bytes_per_step=nbytes,
                     gbps=round(nbytes / (ms * 1e-3) / GB, 1), pct_copy_bw=round(100 * nbytes / (ms * 1e-3) / GB / peak_gbps, 1))
        n_prof = 3
        try:  # eager: kernels attributed to their ops (GEMM shapes); graph: the same kernels as replayed
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
                for _ in range(n_prof):
                    step()
                torch.cuda.synchronize()
            point["kernels_eager"] = kernel_table(prof.events(), n_prof, cfg, B, kernel, act, ss)
            with profile(activities=[ProfilerActivity.CUDA]) as prof_g:
                for _ in range(n_prof):
                    graph.replay()
                torch.cuda.synchronize()
            graph_rows = kernel_table(prof_g.events(), n_prof, cfg, B, kernel, act, ss)
            point["kernels_graph"] = graph_rows
            busy_us = sum(r["us_per_step"] for r in graph_rows)
            point["graph_kernel_busy_ms"] = round(busy_us / 1e3, 4)  # the rest of ms_per_step: gaps between kernels
            point["launches_per_step"] = round(sum(r["count_per_step"] for r in graph_rows), 1)
        except Exception as exc:  # the timing above stands on its own
            point["profile_error"] = f"{type(exc).__name__}: {exc}"
    del graph, state
    torch.cuda.empty_cache()
    return point


def gemm_bandwidth(model: RetNet, B: int, reps: int) -> list[dict]:
    """Each weight GEMM of a layer (and the LM head) alone at batch B, 10 calls per CUDA graph: us and GB/s."""
    layer = model.layers[0]
    mats = {"qkvg": layer.retention.qkvg, "out_proj": layer.retention.out_proj, "fc_in": layer.ffn.fc_in,
            "fc_out": layer.ffn.fc_out, "lm_head": model.lm_head}
    rows = []
    with torch.inference_mode():
        for name, lin in mats.items():
            x = torch.randn(B, lin.in_features, device="cuda", dtype=lin.weight.dtype)
            graph = cuda_graph(lambda: [lin(x) for _ in range(10)])
            ms = time_ms(graph.replay, reps) / 10
            nbytes = (lin.weight.numel() + B * (lin.in_features + lin.out_features)) * lin.weight.element_size()
            rows.append(dict(gemm=name, shape=[B, lin.in_features, lin.out_features], us=round(ms * 1e3, 2),
                             gbps=round(nbytes / (ms * 1e-3) / GB, 1)))
    return rows


def drift(model: RetNet, steps: int, batch: int, prompt: int) -> dict:
    """Teacher-forced decode from one fp32-state prefill: fp32 state vs the same state rounded to bf16."""
    cfg = model.cfg
    g = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (batch, prompt + steps), generator=g).cuda()
    with torch.inference_mode():
        _, state32 = model.prefill(ids[:, :prompt], model.init_state(batch, device="cuda", dtype=torch.float32))
        state16 = model.init_state(batch, device="cuda", dtype=torch.bfloat16)
        state16.copy_(state32)
        static_ids = ids[:, prompt].clone()
        graphs, outs = {}, {}
        for name, st in (("fp32", state32), ("bf16", state16)):
            start = st.clone()
            graphs[name] = cuda_graph(lambda st=st, name=name: outs.__setitem__(name, model.step(static_ids, st)[0]))
            st.copy_(start)  # warm-up and capture advanced it
        max_abs = torch.zeros((), device="cuda")
        sum_abs = torch.zeros((), device="cuda")
        agree = torch.zeros((), device="cuda")
        scale = torch.zeros((), device="cuda")
        per_step_max = []
        for t in range(steps):
            static_ids.copy_(ids[:, prompt + t])
            graphs["fp32"].replay()
            graphs["bf16"].replay()
            a, b = outs["fp32"].float(), outs["bf16"].float()  # (B, 1, V)
            diff = (a - b).abs()
            max_abs = torch.maximum(max_abs, diff.max())
            sum_abs += diff.mean()
            scale += a.std()
            agree += (a.argmax(-1) == b.argmax(-1)).float().mean()
            if t % 50 == 0 or t == steps - 1:
                per_step_max.append((t, diff.max()))
    return dict(
        preset=cfg.name, batch=batch, prompt=prompt, steps=steps, kernel=model.step_kernel,
        max_abs_logit_diff=max_abs.item(), mean_abs_logit_diff=(sum_abs / steps).item(),
        mean_logit_std=(scale / steps).item(), top1_agreement=(agree / steps).item(),
        max_abs_diff_at_step={int(t): v.item() for t, v in per_step_max},
        note="random weights: the logit scale is not a trained model's; compare the diff to mean_logit_std",
    )


def text_report(result: dict) -> str:
    lines = [f"RetNet decode step profile: {result['preset']}, T={result['seq']}, copy bandwidth "
             f"{result['copy_gbps']:.0f} GB/s, {result['gpu']}"]
    for p in result["points"]:
        lines.append(f"\n== batch {p['batch']} kernel {p['kernel']} state {p['state_dtype']}: {p['ms_per_step']:.3f} ms/step,"
                     f" {p['tok_per_s']} tok/s, {p['gbps']} GB/s = {p['pct_copy_bw']}% of copy bandwidth")
        if "profile_error" in p:
            lines.append(f"   profile failed: {p['profile_error']}")
            continue
        lines.append(f"   graph: {p.get('launches_per_step')} launches/step, kernels busy {p.get('graph_kernel_busy_ms')} ms"
                     f" of {p['ms_per_step']} ms")
        L = result["n_layers"]
        for source in ("kernels_graph", "kernels_eager"):
            lines.append(f"   {source} (ONE layer: per-step values / {L} for kernels launched a multiple of {L} times):")
            lines.append(f"   {'us/layer':>9} {'per layer':>9} {'us/launch':>9} {'GB/s':>7}  kernel")
            for r in p.get(source, []):
                per_layer = r["count_per_step"] / L
                scope = per_layer if per_layer >= 1 and float(per_layer).is_integer() else None
                us = r["us_per_step"] / L if scope else r["us_per_step"]
                tag = f"{scope:g}" if scope else f"{r['count_per_step']:g}/step"
                lines.append(f"   {us:9.2f} {tag:>9} {r['us_per_launch']:9.2f} {r['gbps'] or '':>7}  {r['kernel'][:110]}")
    for B, rows in result.get("gemms", {}).items():
        lines.append(f"\n== GEMMs alone at batch {B}: " + ", ".join(f"{r['gemm']} {r['us']} us {r['gbps']} GB/s" for r in rows))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="6.7b")
    ap.add_argument("--batch", default="1,8,16", help="comma-separated batch sizes")
    ap.add_argument("--seq", type=int, default=8192, help="position the filled state sits at")
    ap.add_argument("--kernels", default="triton,triton-statepass", help="model step kernels to compare")
    ap.add_argument("--state-dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--no-gemms", action="store_true", help="skip the GEMM-alone bandwidth table")
    ap.add_argument("--drift", action="store_true", help="also measure bf16- vs fp32-state logit drift")
    ap.add_argument("--drift-steps", type=int, default=300)
    ap.add_argument("--drift-batch", type=int, default=2)
    ap.add_argument("--drift-prompt", type=int, default=256)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    peak = copy_bandwidth_gbps()
    model = build_model(args.preset, torch.bfloat16, DTYPES[args.state_dtype])
    act = model.embed.weight.element_size()
    result = dict(preset=args.preset, seq=args.seq, gpu=torch.cuda.get_device_name(), copy_gbps=round(peak, 1),
                  n_layers=model.cfg.n_layers, torch=torch.__version__, points=[], gemms={})
    batches = [int(b) for b in args.batch.split(",")]
    for B in batches:
        for kernel in args.kernels.split(","):
            result["points"].append(profile_point(model, B, args.seq, kernel, args.reps, peak, act))
            p = result["points"][-1]
            print(f"batch {B} {kernel}: {p['ms_per_step']} ms/step, {p['pct_copy_bw']}% of copy bandwidth", flush=True)
        if not args.no_gemms:
            result["gemms"][B] = gemm_bandwidth(model, B, args.reps)
    if args.drift:
        model.step_kernel = "auto"
        result["drift"] = drift(model, args.drift_steps, args.drift_batch, args.drift_prompt)
        (out / "drift.json").write_text(json.dumps(result["drift"], indent=1))
        print("drift:", json.dumps(result["drift"]), flush=True)
    result["wall_s"] = round(time.time() - t0, 1)
    (out / "step_profile.json").write_text(json.dumps(result, indent=1))
    (out / "step_profile.txt").write_text(text_report(result))
    print(text_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
