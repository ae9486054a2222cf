"""GPU only: fused Triton step == torch reference (outputs and new state); a CUDA-graph-captured step == eager.
The fused pieces at their 6.7B shapes (state pass + epilogue, add+norm) are here; their small-shape parity tests,
which also run on a CPU under the Triton interpreter, are in test_retnet_step_fused.py."""

import pytest
import torch

from retnet import RetNet, RetNetConfig
from retnet.kernels import triton_available
from retnet.kernels.add_norm import add_norm_torch, add_norm_triton
from retnet.kernels.fused_step import MODEL_STEP_KERNELS, retention_step_torch, retention_step_triton
from retnet.kernels.recurrent_step import recurrent_step_torch, recurrent_step_triton

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_triton = pytest.mark.skipif(not triton_available(), reason="needs triton")


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


@needs_triton
@pytest.mark.parametrize("B,H,dk,dv", [(1, 16, 256, 512), (16, 4, 256, 512), (3, 2, 24, 40)])
@pytest.mark.parametrize("in_dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
def test_triton_step_matches_reference(B, H, dk, dv, in_dtype, tol):
    torch.manual_seed(0)
    dev = "cuda"
    proj = torch.randn(B, H * (2 * dk + 2 * dv), device=dev).to(in_dtype)  # q, k, v as strided slices
    q = proj[:, : H * dk].view(B, H, dk)
    k = proj[:, H * dk : 2 * H * dk].view(B, H, dk)
    v = proj[:, 2 * H * dk : 2 * H * dk + H * dv].view(B, H, dv)
    kv = torch.randn(B, H, dk, dv, device=dev)
    k_sum = torch.randn(B, H, dk, device=dev)
    theta = torch.rand(dk // 2, device=dev) * 100
    lam = torch.log1p(-torch.rand(H, device=dev) / 16)
    row_norm = torch.rand(H, device=dev) * 10 + 1
    args = (theta.cos(), theta.sin(), lam, row_norm, dk**-0.5)
    kv_ref, k_sum_ref = kv.clone(), torch.empty_like(k_sum)
    kv_tri, k_sum_tri = kv.clone(), torch.empty_like(k_sum)
    o_ref = recurrent_step_torch(q, k, v, kv_ref, k_sum, k_sum_ref, *args)
    o_tri = recurrent_step_triton(q, k, v, kv_tri, k_sum, k_sum_tri, *args)
    torch.cuda.synchronize()
    # both compute in fp32 from the same (possibly bf16) inputs: only summation order differs
    assert _rel(o_tri, o_ref) <= tol
    assert _rel(kv_tri, kv_ref) <= tol
    assert _rel(k_sum_tri, k_sum_ref) <= tol
    assert not torch.equal(kv_tri, kv)  # really updated in place


def _gpu_model(state_dtype=torch.float32) -> RetNet:
    torch.manual_seed(0)
    cfg = RetNetConfig.from_name("small", vocab_size=512, state_dtype=state_dtype)
    return RetNet(cfg).cuda().to(torch.bfloat16).eval()


@needs_triton
@pytest.mark.parametrize("B", [1, 16])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_norm", ["layernorm", "rmsnorm"])
def test_fused_retention_step_matches_reference_at_6p7b_shapes(B, state_dtype, head_norm):
    """State pass + epilogue (key sum in place, denominator, head norm, swish gate, cast) vs the torch twin."""
    torch.manual_seed(0)
    H, dk, dv = 16, 256, 512
    proj = torch.randn(B, H * (2 * dk + 2 * dv), device="cuda").to(torch.bfloat16)  # one qkvg output
    q, k = proj[:, : H * dk].view(B, H, dk), proj[:, H * dk : 2 * H * dk].view(B, H, dk)
    v = proj[:, 2 * H * dk : 2 * H * dk + H * dv].view(B, H, dv)
    g = proj[:, 2 * H * dk + H * dv :]
    kv = (torch.randn(B, H, dk, dv, device="cuda") * 0.1).to(state_dtype)
    k_sum = torch.randn(B, H, dk, device="cuda").to(state_dtype)
    theta = torch.rand(dk // 2, device="cuda") * 100
    args = (theta.cos(), theta.sin(), torch.log1p(-torch.rand(H, device="cuda") / 16),
            torch.rand(H, device="cuda") * 10 + 1, dk**-0.5, head_norm, 1e-6)
    kv_ref, z_ref = kv.clone(), k_sum.clone()
    out = retention_step_triton(q, k, v, g, kv, k_sum, *args)
    ref = retention_step_torch(q, k, v, g, kv_ref, z_ref, *args)
    torch.cuda.synchronize()
    state_tol = 1e-5 if state_dtype == torch.float32 else 1e-2
    assert _rel(kv, kv_ref) <= state_tol
    assert _rel(k_sum, z_ref) <= state_tol
    assert out.dtype == torch.bfloat16 and _rel(out, ref) <= 2e-2  # bf16 output: an ulp of rounding


@needs_triton
@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_add_norm_matches_reference_at_6p7b_width(kind):
    torch.manual_seed(0)
    norm = (torch.nn.LayerNorm(4096, eps=1e-6) if kind == "layernorm" else torch.nn.RMSNorm(4096, eps=1e-6))
    norm = norm.to("cuda", torch.bfloat16)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(16, 4096, device="cuda", dtype=torch.bfloat16)
    delta = torch.randn_like(x)
    ref_x, ref_h = add_norm_torch(x, delta, norm)
    out_x, out_h = add_norm_triton(x, delta, norm)
    torch.testing.assert_close(out_x, ref_x, rtol=0, atol=0)  # the same rounded sum
    torch.testing.assert_close(out_h, ref_h, rtol=2e-2, atol=2e-2)


@needs_triton
@pytest.mark.parametrize("kernel", ["triton", "triton-statepass"])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_model_triton_step_matches_torch_step(kernel, state_dtype):
    model = _gpu_model(state_dtype)
    assert model.step_kernel == "triton"  # the CUDA default when triton imports: the fused step
    ids = torch.randint(0, 512, (4, 40), device="cuda")
    _, state = model.prefill(ids[:, :32], chunk_size=16)
    ref_state = state.clone()
    for t in range(32, 40):
        model.step_kernel = kernel
        logits, state = model.step(ids[:, t], state)
        model.step_kernel = "torch"
        ref_logits, ref_state = model.step(ids[:, t], ref_state)
        assert _rel(logits, ref_logits) < 2e-2
    assert _rel(state.kv, ref_state.kv) < 1e-2
    assert _rel(state.k_sum, ref_state.k_sum) < 1e-2


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", [k if k == "torch" else pytest.param(k, marks=needs_triton) for k in MODEL_STEP_KERNELS])
def test_step_captured_in_cuda_graph_matches_eager(kernel, state_dtype):
    model = _gpu_model(state_dtype)
    model.step_kernel = kernel
    B = 4
    ids = torch.randint(0, 512, (B, 48), device="cuda")
    _, state = model.prefill(ids[:, :40], chunk_size=16)
    start = state.clone()
    eager = []
    for t in range(40, 48):
        eager.append(model.step(ids[:, t], state)[0])

    state.copy_(start)
    static_ids = ids[:, 40].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (triton JIT, cuBLAS handles) outside the capture
        model.step(static_ids, state)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    state.copy_(start)
    with torch.cuda.graph(graph):
        static_logits, _ = model.step(static_ids, state)
    state.copy_(start)  # capture does not run kernels, but start clean regardless
    for i, t in enumerate(range(40, 48)):
        static_ids.copy_(ids[:, t])
        graph.replay()
        assert _rel(static_logits, eager[i]) < 2e-2, i  # bf16 weights
    assert state.pos.item() == 48
