"""Chunkwise retention kernels by name (retnet.kernels.chunk).

CPU: the torch twin against the parallel and recurrent forms in float64 (outputs, final state, gradients), the
normaliser-invariance the fused path relies on, key_sum, availability. GPU (CUDA + fla-core): fla vs torch.
"""

import pytest
import torch
import torch.nn.functional as F

from retnet.kernels import CHUNK_KERNELS, chunk_kernel_available, chunk_retention, key_sum
from retnet.retention import chunkwise_retention, log_decay, position_tables, rotary_angle


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def _inputs(B, T, H, dk, dv, dtype=torch.float64, device="cpu", seed=0, with_state=False):
    g = torch.Generator(device=device).manual_seed(seed)
    q, k = (torch.randn(B, T, H, dk, dtype=dtype, device=device, generator=g) for _ in range(2))
    k = k * dk**-0.5  # as the model feeds it
    v = torch.randn(B, T, H, dv, dtype=dtype, device=device, generator=g)
    s0 = torch.randn(B, H, dk, dv, dtype=torch.float32 if dtype != torch.float64 else dtype, device=device,
                     generator=g) if with_state else None
    return q, k, v, s0


def _parallel_reference(q, k, v, lam, scale, s0):
    """Dense parallel form with an initial state, (B, T, H, d) layout: o (B, T, H, dv), S_T (B, H, dk, dv)."""
    T = q.shape[1]
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
    n = torch.arange(T, dtype=torch.float64)
    age = n[:, None] - n[None, :]
    decay = torch.where(age >= 0, torch.exp(age.clamp(min=0) * lam[:, None, None]), 0.0)  # (H, T, T)
    o = ((qh @ kh.transpose(-1, -2)) * decay) @ vh * scale
    key_decay = torch.exp((T - 1 - n)[None, :, None] * lam[:, None, None])  # (H, T, 1)
    state = (kh * key_decay).transpose(-1, -2) @ vh  # (B, H, dk, dv)
    if s0 is not None:
        o = o + (qh * torch.exp((n + 1)[None, :, None] * lam[:, None, None])) @ s0 * scale
        state = state + torch.exp(T * lam)[:, None, None] * s0
    return o.transpose(1, 2), state


def _recurrent_reference(q, k, v, lam, scale, s0):
    """Token loop: S_n = gamma S_{n-1} + k_n^T v_n, o_n = scale q_n S_n."""
    B, T, H, dk = q.shape
    state = s0.clone() if s0 is not None else q.new_zeros(B, H, dk, v.shape[-1])
    gamma = lam.exp()[:, None, None]
    outs = []
    for t in range(T):
        state = gamma * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(scale * (q[:, t, :, None, :] @ state).squeeze(-2))
    return torch.stack(outs, dim=1), state


@pytest.mark.parametrize("T,chunk", [(1, 4), (16, 4), (19, 4), (37, 8), (64, 64), (50, 64), (33, 1)])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.7])
def test_torch_kernel_matches_parallel_and_recurrent_float64(T, chunk, with_state, scale):
    B, H, dk, dv = 2, 3, 8, 6
    q, k, v, s0 = _inputs(B, T, H, dk, dv, with_state=with_state)
    lam = log_decay(H, "paper")
    leaves = [t.requires_grad_() for t in (q, k, v) + ((s0,) if s0 is not None else ())]
    o, state = chunk_retention(q, k, v, lam, kernel="torch", scale=scale, chunk_size=chunk, initial_state=s0,
                               output_final_state=True)
    assert o.shape == (B, T, H, dv) and o.dtype == torch.float64 and state.shape == (B, H, dk, dv)
    ref_o, ref_state = _parallel_reference(q, k, v, lam, scale, s0)
    rec_o, rec_state = _recurrent_reference(q, k, v, lam, scale, s0)
    assert _rel(o, ref_o) <= 1e-12 and _rel(state, ref_state) <= 1e-12
    assert _rel(rec_o, ref_o) <= 1e-12 and _rel(rec_state, ref_state) <= 1e-12
    # gradients through both outputs, with random upstream grads
    g = torch.Generator().manual_seed(5)
    do, dstate = torch.randn(o.shape, generator=g, dtype=o.dtype), torch.randn(state.shape, generator=g, dtype=o.dtype)
    ours = torch.autograd.grad((o * do).sum() + (state * dstate).sum(), leaves)
    refs = torch.autograd.grad((ref_o * do).sum() + (ref_state * dstate).sum(), leaves)
    for name, a, b in zip(("dq", "dk", "dv", "ds0"), ours, refs):
        assert _rel(a, b) <= 1e-11, name


def test_torch_kernel_without_final_state_and_half_inputs():
    q, k, v, _ = _inputs(1, 40, 2, 8, 4)
    lam = log_decay(2, "torchscale")
    o, state = chunk_retention(q, k, v, lam, kernel="torch", chunk_size=16)
    assert state is None
    o32, state32 = chunk_retention(q.float(), k.float(), v.float(), lam, kernel="torch", output_final_state=True)
    assert o32.dtype == torch.float32 and state32.dtype == torch.float32
    assert _rel(o32.double(), o) <= 1e-5
    o_bf, state_bf = chunk_retention(q.bfloat16(), k.bfloat16(), v.bfloat16(), lam, kernel="torch",
                                     output_final_state=True)
    assert o_bf.dtype == torch.bfloat16 and state_bf.dtype == torch.float32  # fp32 maths, fp32 state
    assert _rel(o_bf.double(), o) <= 3e-2


def test_bad_kernel_and_shapes():
    q, k, v, _ = _inputs(1, 4, 2, 8, 4)
    lam = log_decay(2, "paper")
    with pytest.raises(ValueError, match="chunk kernel"):
        chunk_retention(q, k, v, lam, kernel="cuda-magic")
    with pytest.raises(ValueError, match="expected q, k"):
        chunk_retention(q.transpose(1, 2), k, v, lam, kernel="torch")
    with pytest.raises(ValueError):
        chunk_kernel_available("cuda-magic", "cpu")


def test_availability_on_this_machine():
    assert CHUNK_KERNELS == ("torch", "fla", "fla-graphs")
    assert chunk_kernel_available("torch", "cpu") == (True, "")
    for name in ("fla", "fla-graphs"):
        ok, reason = chunk_kernel_available(name, "cpu")
        assert not ok and "CUDA" in reason
    try:
        import fla.ops.simple_gla  # noqa: F401
    except Exception:
        ok, reason = chunk_kernel_available("fla", "cuda")
        assert not ok and "pip install fla-core==0.6.0" in reason
        q, k, v, _ = _inputs(1, 4, 2, 8, 4, dtype=torch.bfloat16)
        with pytest.raises(RuntimeError, match="unavailable"):
            chunk_retention(q, k, v, log_decay(2, "paper"), kernel="fla")


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_head_norm_removes_the_normaliser(norm):
    """What the fused model path relies on: norm(U) == norm(U / max(|u|, sqrt c)) up to the norm's eps."""
    B, T, H, dk, dv, P = 2, 45, 4, 8, 16, 13
    lam = log_decay(H, "paper")
    q, k, v, _ = _inputs(B, P + T, H, dk, dv, seed=3)
    _, _, row_norm = position_tables(torch.arange(P + T), rotary_angle(dk), lam, torch.float64)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    # a real state after P tokens, then continue: both forms start from it
    _, kv0, z0 = chunkwise_retention(qh[:, :, :P], kh[:, :, :P], vh[:, :, :P], lam, row_norm[:, :P], chunk_size=8)
    normalised, _, _ = chunkwise_retention(qh[:, :, P:], kh[:, :, P:], vh[:, :, P:], lam, row_norm[:, P:], kv0, z0, 8)
    raw, _ = chunk_retention(q[:, P:], k[:, P:], v[:, P:], lam, kernel="torch", chunk_size=8, initial_state=kv0)
    fn = F.layer_norm if norm == "layernorm" else F.rms_norm
    exact = fn(normalised.transpose(1, 2), (dv,), eps=0.0)
    assert _rel(fn(raw, (dv,), eps=0.0), exact) <= 1e-12
    assert _rel(fn(raw, (dv,), eps=1e-6), fn(normalised.transpose(1, 2), (dv,), eps=1e-6)) <= 1e-4
    assert _rel(raw, normalised.transpose(1, 2)) > 0.1  # the normaliser is not a no-op here


@pytest.mark.parametrize("T", [1, 7, 300])
def test_key_sum_matches_the_chunkwise_row_sum_state(T):
    B, H, dk, dv = 2, 4, 8, 4
    lam = log_decay(H, "paper")
    q, k, v, _ = _inputs(B, T, H, dk, dv, seed=4)
    z0 = torch.randn(B, H, dk, dtype=torch.float64)
    _, _, row_norm = position_tables(torch.arange(T), rotary_angle(dk), lam, torch.float64)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    _, _, z_ref = chunkwise_retention(qh, kh, vh, lam, row_norm, k_sum=z0, chunk_size=16)
    assert _rel(key_sum(k, lam, z0), z_ref) <= 1e-12
    assert _rel(key_sum(k, lam), chunkwise_retention(qh, kh, vh, lam, row_norm, chunk_size=16)[2]) <= 1e-12
    assert key_sum(k.float(), lam.float()).dtype == torch.float32


# ---- GPU: fla vs torch ----------------------------------------------------------------------------------------
def _fla_ready() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "needs a CUDA GPU (fla's Triton kernels)"
    return chunk_kernel_available("fla", "cuda")


_FLA_OK, _FLA_WHY = _fla_ready()
gpu_fla = pytest.mark.skipif(not _FLA_OK, reason=_FLA_WHY)


def _rms_ratio(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """fla's own test metric: RMS(ours - ref) / RMS(ref)."""
    ours, ref = ours.detach().double(), ref.detach().double()
    return ((ours - ref).square().mean().sqrt() / ref.square().mean().sqrt()).item()


# bf16 tolerance (RMS ratio). bf16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3); fla rounds its inputs,
# its per-chunk states and its intra-chunk score block to bf16 and the output to bf16, so a correct kernel lands
# at a few 1e-3 against fp32 maths on the same bf16 inputs (fla's own tests use 5e-3 against a naive reference).
# 2e-2 leaves room for the gradients' longer chains, and a wrong decay or a lost chunk costs O(0.1-1) (checked).
BF16_RMS = 2e-2


@gpu_fla
@pytest.mark.parametrize("T", [512, 1000, 4096])
@pytest.mark.parametrize("prefix", [0, 300])
def test_fla_matches_torch_after_head_norm(T, prefix):
    """Paper head dims (dk=256, dv=512), bf16 inputs; with prefix > 0 both start from a real state after it."""
    B, H, dk, dv, dev = 2, 4, 256, 512, "cuda"
    lam = log_decay(H, "paper").to(dev)
    q, k, v, _ = _inputs(B, prefix + T, H, dk, dv, dtype=torch.bfloat16, device=dev, seed=7)
    s0 = None
    if prefix:
        _, s0 = chunk_retention(q[:, :prefix], k[:, :prefix], v[:, :prefix], lam, kernel="torch",
                                output_final_state=True)
    q, k, v = (t[:, prefix:].contiguous().requires_grad_() for t in (q, k, v))
    g = torch.Generator(device=dev).manual_seed(9)
    do = torch.randn(B, T, H, dv, device=dev, generator=g)
    dstate = torch.randn(B, H, dk, dv, device=dev, generator=g) * 1e-2
    results = {}
    for kernel in ("torch", "fla"):
        o, state = chunk_retention(q, k, v, lam, kernel=kernel, initial_state=s0, output_final_state=True)
        normed = F.layer_norm(o.float(), (dv,), eps=1e-6)
        grads = torch.autograd.grad((normed * do).sum() + (state * dstate).sum(), (q, k, v))
        results[kernel] = (o, normed, state, *grads)
    names = ("o (unnormalised)", "head-normed o", "final state", "dq", "dk", "dv")
    errors = {n: _rms_ratio(a, b) for n, a, b in zip(names, results["fla"], results["torch"])}
    assert all(e <= BF16_RMS for e in errors.values()), errors
    assert results["fla"][2].dtype == torch.float32
    # the tolerance can fail: torchscale's decay instead of ours is far outside it
    wrong, _ = chunk_retention(q, k, v, log_decay(H, "torchscale").to(dev), kernel="fla", initial_state=s0)
    assert _rms_ratio(wrong, results["torch"][0]) > 10 * BF16_RMS
