"""RetNet's fused read-out `silu(g) * norm(o)` (training and prefill): the Triton kernel against the torch reference
in outputs and gradients of o and g, for the layer norm and the RMS norm, with g a strided slice of a projection.

Kernel parity runs on CUDA when there is a GPU, else under the Triton interpreter in a child process (see
tests/triton_testing.py for why a child process).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from triton_testing import DEV, interpreter_wrapper, run_under_interpreter, runs_kernels  # noqa: E402

from retnet.kernels.gate import norm_gate, norm_gate_torch


def _inputs(B, T, H, dv, o_dtype, g_dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    o = (torch.randn(B, T, H, dv, generator=gen) * 3 + 0.5).to(DEV, o_dtype)
    wide = torch.randn(B, T, 3 * H * dv, generator=gen).to(DEV, g_dtype)
    g = wide[..., H * dv:2 * H * dv]  # the gate as the model has it: a slice of the fused q|k|v|g projection
    grad = torch.randn(B, T, H * dv, generator=gen).to(DEV, g_dtype)
    return o, g, grad


@runs_kernels
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("o_dtype,g_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                             (torch.float32, torch.bfloat16)])
def test_kernel_matches_reference_in_output_and_gradients(rms, o_dtype, g_dtype):
    o, g, grad = _inputs(2, 5, 3, 16, o_dtype, g_dtype)
    o_ref, g_ref = o.clone().requires_grad_(True), g.clone().requires_grad_(True)
    o_fus, g_fus = o.clone().requires_grad_(True), g.clone().requires_grad_(True)
    ref = norm_gate_torch(o_ref.double(), g_ref.double(), 1e-6, rms)  # fp64 truth
    out = norm_gate(o_fus, g_fus, 1e-6, rms, fused=True)
    assert out.dtype == g_dtype and out.shape == g.shape
    half = torch.bfloat16 in (o_dtype, g_dtype)
    tol = dict(rtol=2e-2, atol=3e-2) if half else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.double(), ref, **tol)
    ref.backward(grad.double())
    out.backward(grad)
    assert o_fus.grad.dtype == o_dtype and g_fus.grad.dtype == g_dtype
    torch.testing.assert_close(o_fus.grad.double(), o_ref.grad.double(), **tol)
    torch.testing.assert_close(g_fus.grad.double(), g_ref.grad.double(), **tol)


def _saved_storages(fn) -> list[int]:
    """data_ptr of the storage of every tensor autograd saves while `fn` runs."""
    ptrs: list[int] = []

    def pack(t):
        ptrs.append(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return ptrs


@runs_kernels
def test_kernel_keeps_no_view_of_the_projection_g_is_sliced_from():
    """Saving g as a view would keep the whole q|k|v|g projection output alive until backward."""
    o, g, grad = _inputs(1, 6, 2, 16, torch.float32, torch.float32)
    o.requires_grad_(True)
    projection = g._base.detach().requires_grad_(True)  # the projection output g is a slice of
    g = projection[..., 2 * 16:4 * 16]
    out_box = []
    saved = _saved_storages(lambda: out_box.append(norm_gate(o, g, 1e-6, fused=True)))
    assert projection.untyped_storage().data_ptr() not in saved and saved
    out_box[0].backward(grad)  # and the copy it saved gives the reference gradient
    ref_g = g.detach().clone().requires_grad_(True)
    norm_gate_torch(o.detach(), ref_g, 1e-6).backward(grad)
    torch.testing.assert_close(projection.grad[..., 2 * 16:4 * 16], ref_g.grad, rtol=1e-4, atol=1e-5)


@runs_kernels
def test_kernel_without_autograd_gives_the_same_output():
    """Prefill (no autograd): the kernel alone, without the copy of g that training saves."""
    o, g, _ = _inputs(2, 5, 3, 16, torch.float32, torch.float32)
    with torch.no_grad():
        out = norm_gate(o, g, 1e-6, fused=True)
    assert out.grad_fn is None
    torch.testing.assert_close(out, norm_gate_torch(o, g, 1e-6), rtol=1e-5, atol=1e-6)


@runs_kernels
def test_kernel_takes_the_decode_steps_three_dim_layout():
    o, g, _ = _inputs(1, 4, 2, 8, torch.float32, torch.float32)
    o3, g3 = o[0], g[0]  # (B, H, dv) and (B, H * dv): the step's shapes
    torch.testing.assert_close(norm_gate(o3, g3, 1e-6, fused=True), norm_gate_torch(o3, g3, 1e-6), rtol=1e-5,
                               atol=1e-6)


def test_reference_is_the_models_read_out_and_fp64_stays_on_it():
    o, g, _ = _inputs(1, 3, 2, 8, torch.float64, torch.float64)
    want = torch.nn.functional.silu(g) * torch.nn.functional.layer_norm(o, (8,), eps=1e-6).flatten(-2)
    torch.testing.assert_close(norm_gate(o, g, 1e-6, fused=True), want, rtol=0, atol=1e-12)


@interpreter_wrapper
def test_kernels_under_triton_interpreter():
    run_under_interpreter(__file__, "kernel and not interpreter")


@runs_kernels
def test_kernels_in_the_retention_layer_match_its_reference_path(monkeypatch):
    """The fused chunkwise layer (rotation, chunk kernel, read-out, out_proj) with the Triton rotation and read-out
    against the same layer on the torch references: output and gradients of the input and every parameter."""
    import functools

    import retnet.model as model_mod
    from retnet import RetNet, RetNetConfig

    torch.manual_seed(0)
    net = RetNet(RetNetConfig.from_name("tiny", vocab_size=64)).to(DEV)
    layer = net.layers[0].retention
    T = 24
    x = torch.randn(2, T, net.cfg.d_model, device=DEV)
    tables = net._tables(torch.arange(T, device=DEV), torch.float32)

    def run(fused: bool):
        monkeypatch.setattr(model_mod, "rotate", functools.partial(model_mod.rotate, fused=fused))
        monkeypatch.setattr(model_mod, "norm_gate",
                            lambda o, g, eps, rms, _fused=None: norm_gate(o, g, eps, rms, fused))
        layer.zero_grad()
        xin = x.clone().requires_grad_(True)
        out, _ = layer._forward_fused(xin, tables, "torch", 8, None)  # the chunk kernel's torch twin
        out.pow(2).mean().backward()
        monkeypatch.undo()
        return out.detach(), xin.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}

    ref_out, ref_dx, ref_grads = run(False)
    out, dx, grads = run(True)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dx, ref_dx, rtol=1e-4, atol=1e-5)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)
