"""How close can a decode step's two kinds of bytes get to the copy bandwidth? (GPU diagnostic, not a suite.)

1. Weight GEMMs at decode batch (M = 1, 8, 16) for every weight shape of the 6.7B RetNet and Transformer (MHA and
   GQA-8): cuBLAS (PyTorch's default), cuBLASLt, and `retnet.kernels.skinny_linear` (Triton, autotuned). Each
   timing replays a CUDA graph of 32 calls that rotate over enough weight copies (>= 256 MB) that no call finds
   its weight in the 50 MB L2, as in a real step where each layer has its own weights.
2. The retention state pass (`state_pass_triton`) at batch 1, 8, 16, 32 layers' states rotated, against a looped
   variant with software pipelining, and against torch's in-place `mul_` over the same bytes (what a plain
   read-modify-write stream reaches).
3. The whole 6.7B decode step at T=8192, batch 1, 8, 16 (CUDA graph, as the suites capture it), for RetNet and the
   `static` Transformer (SDPA cuDNN, MHA and GQA-8), with `decode_gemm` "torch" (cuBLAS) and "triton".

    OUT=/tmp/out python scripts/probe_decode_kernels.py [--quick]

Writes $OUT/decode_kernels.json and prints a table per part.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from retnet import RetNet, RetNetConfig
from retnet import analytic as ra
from retnet.config import VOCAB_SIZE
from retnet.kernels.recurrent_step import rotated_qk, state_pass_triton
from retnet.kernels.skinny_linear import skinny_linear_triton
from retnet_bench.baselines import Transformer, TransformerConfig
from retnet_bench.suites.contestants.base import cuda_graph

GB = 1e9
L2_DEFEAT_BYTES = 256 * 1024**2


def graph_us(fn, calls: int, reps: int = 20) -> float:
    """Median microseconds per call of `fn` replayed in one CUDA graph holding `calls` calls."""
    graph = cuda_graph(fn)
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / calls)
    return sorted(times)[len(times) // 2]


def copy_gbps() -> float:
    """Device-to-device copy bandwidth (bytes read + written), an eager copy timed by events as the suites measure
    it: inside a CUDA graph a copy becomes a memcpy node that runs on a copy engine at ~2.7 TB/s on the H200."""
    src = torch.empty(1024**3, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(10):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * 2 * 1024**3 / sorted(times)[5] / GB


# ---- 1. weight GEMMs ---------------------------------------------------------------------------------------
SHAPES = {  # (K, N) of y = x W^T
    "retnet qkvg": (4096, 24576), "retnet out_proj / fc_out": (8192, 4096), "retnet fc_in": (4096, 8192),
    "trm wqkv (MHA)": (4096, 12288), "trm wqkv (GQA-8)": (4096, 6144), "trm wo": (4096, 4096),
    "trm fc1": (4096, 16384), "trm fc2": (16384, 4096), "lm_head": (4096, VOCAB_SIZE),
}


def gemm_point(name: str, K: int, N: int, M: int, peak: float) -> dict:
    w_bytes = K * N * 2
    copies = max(2, -(-L2_DEFEAT_BYTES // w_bytes))
    ws = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    calls = 32
    ref = F.linear(x, ws[0]).float()
    row = dict(gemm=name, M=M, K=K, N=N)
    for label, fn in (("cublas", F.linear), ("triton", skinny_linear_triton)):
        err = (fn(x, ws[0]).float() - ref).abs().max().item()
        us = graph_us(lambda fn=fn: [fn(x, ws[i % copies]) for i in range(calls)], calls)
        row[label] = dict(us=round(us, 2), pct_copy=round(100 * (w_bytes + 2 * M * (K + N)) / (us * 1e-6) / GB / peak, 1),
                          max_abs_err_vs_cublas=err)
    torch.backends.cuda.preferred_blas_library("cublaslt")
    us = graph_us(lambda: [F.linear(x, ws[i % copies]) for i in range(calls)], calls)
    torch.backends.cuda.preferred_blas_library("cublas")
    row["cublaslt"] = dict(us=round(us, 2), pct_copy=round(100 * (w_bytes + 2 * M * (K + N)) / (us * 1e-6) / GB / peak, 1))
    del ws
    torch.cuda.empty_cache()
    return row


# ---- 2. the state pass -------------------------------------------------------------------------------------
@triton.autotune(
    configs=[triton.Config({"BLOCK_PC": pc, "BLOCK_V": bv}, num_warps=w, num_stages=s)
             for pc in (16, 32) for bv in (64, 128) for w in (4, 8) for s in (1, 2, 3)],
    key=["BH", "HALF_DK", "DV"], restore_value=["kv_ptr"],
)
@triton.jit
def _state_pass_looped(
    q_ptr, k_ptr, v_ptr, kv_ptr, o_ptr, cos_ptr, sin_ptr, log_decay_ptr, k_scale, H, BH,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
    HALF_DK: tl.constexpr, DV: tl.constexpr, BLOCK_PC: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """state_pass_triton's arithmetic, walking dk in BLOCK_PC row pairs so the loads of the next pairs are in
    flight while this pair's block is updated and stored (the original holds the whole dk x BLOCK_V tile)."""
    pid_bh = tl.program_id(0)
    pid_v = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    col_ok = cols < DV
    v = tl.load(v_ptr + b * stride_vb + h * stride_vh + cols, mask=col_ok, other=0.0).to(tl.float32)
    gamma = tl.exp(tl.load(log_decay_ptr + h).to(tl.float32))
    state_ty = kv_ptr.dtype.element_ty
    numer = tl.zeros((BLOCK_V,), dtype=tl.float32)
    for p0 in range(0, HALF_DK, BLOCK_PC):
        pair = p0 + tl.arange(0, BLOCK_PC)
        pair_ok = pair < HALF_DK
        qr_even, qr_odd, kr_even, kr_odd = rotated_qk(
            q_ptr + b * stride_qb + h * stride_qh, k_ptr + b * stride_kb + h * stride_kh, cos_ptr, sin_ptr,
            pair, pair_ok, k_scale)
        ok = pair_ok[:, None] & col_ok[None, :]
        even_ptrs = kv_ptr + pid_bh * (2 * HALF_DK * DV) + (2 * pair)[:, None] * DV + cols[None, :]
        s_even = tl.load(even_ptrs, mask=ok, other=0.0, eviction_policy="evict_first").to(tl.float32)
        s_odd = tl.load(even_ptrs + DV, mask=ok, other=0.0, eviction_policy="evict_first").to(tl.float32)
        s_even = (s_even * gamma + kr_even[:, None] * v[None, :]).to(state_ty)
        s_odd = (s_odd * gamma + kr_odd[:, None] * v[None, :]).to(state_ty)
        tl.store(even_ptrs, s_even, mask=ok)
        tl.store(even_ptrs + DV, s_odd, mask=ok)
        numer += tl.sum(qr_even[:, None] * s_even.to(tl.float32), axis=0)
        numer += tl.sum(qr_odd[:, None] * s_odd.to(tl.float32), axis=0)
    tl.store(o_ptr + pid_bh * DV + cols, numer, mask=col_ok)


def state_pass_looped(q, k, v, kv, cos, sin, log_decay, k_scale):
    B, H, dk = q.shape
    dv = v.shape[-1]
    o = torch.empty(B, H, dv, device=q.device, dtype=torch.float32)
    grid = lambda meta: (B * H, triton.cdiv(dv, meta["BLOCK_V"]))  # noqa: E731
    _state_pass_looped[grid](q, k, v, kv, o, cos, sin, log_decay, float(k_scale), H, B * H,
                             q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                             HALF_DK=dk // 2, DV=dv)
    return o


def state_point(B: int, state_dtype: torch.dtype, peak: float, layers: int = 32) -> dict:
    H, dk, dv = 16, 256, 512  # the 6.7B RetNet's heads
    g = torch.Generator(device="cuda").manual_seed(0)
    kvs = [torch.randn(B, H, dk, dv, device="cuda", generator=g).mul_(0.02).to(state_dtype) for _ in range(layers)]
    q, k = (torch.randn(B, H, dk, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(B, H, dv, device="cuda", dtype=torch.bfloat16)
    cos, sin = torch.rand(dk // 2, device="cuda"), torch.rand(dk // 2, device="cuda")
    lam = torch.full((H,), -0.01, device="cuda")
    nbytes = 2 * kvs[0].numel() * kvs[0].element_size()
    row = dict(batch=B, state_dtype=str(state_dtype).removeprefix("torch."), mb_per_layer=round(nbytes / 1e6, 1))
    a, b = kvs[0].clone(), kvs[0].clone()
    err = (state_pass_triton(q, k, v, a, cos, sin, lam, 0.0625) - state_pass_looped(q, k, v, b, cos, sin, lam, 0.0625)).abs().max().item()
    row["looped_max_abs_diff"] = err
    row["looped_state_equal"] = bool(torch.equal(a, b))
    for label, fn in (("current", lambda s: state_pass_triton(q, k, v, s, cos, sin, lam, 0.0625)),
                      ("looped", lambda s: state_pass_looped(q, k, v, s, cos, sin, lam, 0.0625)),
                      ("torch mul_", lambda s: s.mul_(0.999))):
        us = graph_us(lambda fn=fn: [fn(s) for s in kvs], layers)
        row[label] = dict(us=round(us, 2), pct_copy=round(100 * nbytes / (us * 1e-6) / GB / peak, 1))
    del kvs
    torch.cuda.empty_cache()
    return row


# ---- 3. whole steps ----------------------------------------------------------------------------------------
def both_projections(model, step, label: str, B: int, seq: int, nbytes: float, peak: float, pct_key: str) -> list[dict]:
    """One whole step timed with each decode_gemm (cuBLAS, then the Triton kernel), one CUDA graph each."""
    out = []
    for gemm in ("torch", "triton"):
        model.decode_gemm = gemm
        with torch.inference_mode():
            us = graph_us(step, 1, reps=30)
        out.append({"model": label, "batch": B, "seq": seq, "decode_gemm": gemm, "ms": round(us / 1e3, 4),
                    "tok_per_s": round(B / us * 1e6, 1), pct_key: round(100 * nbytes / (us * 1e-6) / GB / peak, 1)})
        print(out[-1], flush=True)
    return out


def retnet_step_points(batches, seq: int, peak: float) -> list[dict]:
    cfg = RetNetConfig.from_name("6.7b")
    with torch.device("meta"):
        model = RetNet(cfg).to(torch.bfloat16)
    model.to_empty(device="cuda")
    torch.manual_seed(0)
    model.reset_parameters()
    model.eval()
    out = []
    for B in batches:
        state = model.init_state(B, device="cuda")
        state.kv.normal_(std=0.02)
        state.k_sum.normal_(std=0.02)
        state.pos.fill_(seq)
        ids = torch.randint(0, cfg.vocab_size, (B,), device="cuda")
        nbytes = ra.decode_bytes_per_step(cfg, B, torch.bfloat16, state.kv.dtype)

        def step():
            logits, _ = model.step(ids, state)
            ids.copy_(logits[:, -1].argmax(-1))
        out += both_projections(model, step, "retnet", B, seq, nbytes, peak, "pct_copy")
        del state
        torch.cuda.empty_cache()
    del model
    torch.cuda.empty_cache()
    return out


def static_step_points(batches, seq: int, peak: float, n_kv_heads: int | None) -> list[dict]:
    cfg = TransformerConfig.from_name("6.7b") if n_kv_heads is None else TransformerConfig.from_name("6.7b", n_kv_heads=n_kv_heads)
    with torch.device("cuda"):
        model = Transformer(cfg, kernel="sdpa-cudnn").to(torch.bfloat16).eval()
    weights = sum(p.numel() for p in model.parameters()) * 2
    out = []
    for B in batches:
        cache = model.new_static_cache(B, seq + 1, device="cuda", dtype=torch.bfloat16)
        cache.k.normal_()
        cache.v.normal_()
        ids = torch.zeros(B, dtype=torch.long, device="cuda")
        nbytes = weights + cache.k.nbytes + cache.v.nbytes  # upper bound on what the step reads

        def step():
            cache.pos.fill_(seq)
            logits = model.step(ids, cache)
            ids.copy_(logits[:, -1].argmax(-1))
        label = f"static {'MHA' if n_kv_heads is None else f'GQA-{n_kv_heads}'}"
        out += both_projections(model, step, label, B, seq, nbytes, peak, "pct_copy_upper")
        del cache
        torch.cuda.empty_cache()
    del model
    torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one shape per part (a smoke run)")
    ap.add_argument("--parts", default="gemm,state,steps")
    args = ap.parse_args()
    out_dir = Path(os.environ.get("OUT", "."))
    peak = copy_gbps()
    result: dict = dict(copy_gbps=round(peak, 1), device=torch.cuda.get_device_name())
    print(result, flush=True)
    parts = args.parts.split(",")
    batches = (1, 8, 16)
    if "gemm" in parts:
        shapes = list(SHAPES.items())[:2] if args.quick else list(SHAPES.items())
        result["gemm"] = [gemm_point(n, K, N, M, peak) for n, (K, N) in shapes for M in batches]
        for r in result["gemm"]:
            print(r, flush=True)
        (out_dir / "decode_kernels.json").write_text(json.dumps(result, indent=1))
    if "state" in parts:
        result["state"] = [state_point(B, dt, peak) for B in batches for dt in (torch.float32, torch.bfloat16)]
        for r in result["state"]:
            print(r, flush=True)
        (out_dir / "decode_kernels.json").write_text(json.dumps(result, indent=1))
    if "steps" in parts:
        result["steps"] = retnet_step_points(batches, 8192, peak)
        result["steps"] += static_step_points(batches, 8192, peak, None)
        result["steps"] += static_step_points(batches, 8192, peak, 8)
    (out_dir / "decode_kernels.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
