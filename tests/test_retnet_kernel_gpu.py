"""GPU only: fused Triton step == torch reference (outputs and new state); a CUDA-graph-captured step == eager."""

import pytest
import torch

from retnet import RetNet, RetNetConfig
from retnet.kernels import triton_available
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
def test_model_triton_step_matches_torch_step():
    model = _gpu_model()
    assert model.step_kernel == "triton"  # the CUDA default when triton imports
    ids = torch.randint(0, 512, (4, 40), device="cuda")
    _, state = model.prefill(ids[:, :32], chunk_size=16)
    ref_state = state.clone()
    for t in range(32, 40):
        model.step_kernel = "triton"
        logits, state = model.step(ids[:, t], state)
        model.step_kernel = "torch"
        ref_logits, ref_state = model.step(ids[:, t], ref_state)
        assert _rel(logits, ref_logits) < 2e-2
    assert _rel(state.kv, ref_state.kv) < 1e-2


@pytest.mark.parametrize("kernel", ["torch", pytest.param("triton", marks=needs_triton)])
def test_step_captured_in_cuda_graph_matches_eager(kernel):
    model = _gpu_model()
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
