"""The fused rotary rotation (training and prefill, both models): the reference equals each model's own rotation,
and the Triton kernel equals the reference in outputs and in gradients, for both pair layouts.

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

from retnet.kernels.rotation import rotate, rotate_torch
from retnet.retention import theta_shift
from retnet_bench.baselines.rotary import apply_rotary, rotary_tables


def _tables(T: int, half: int, dtype=torch.float64, offset: int = 0):
    angle = torch.rand(half, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theta = torch.arange(offset, offset + T, dtype=torch.float64)[:, None] * angle[None]
    return theta.cos().to(dtype), theta.sin().to(dtype)


def _projection_view(B: int, T: int, H: int, D: int, dtype, extra: int = 24, device: str = "cpu", seed: int = 0):
    """x as the models have it: a (B, T, H, D) view of a wider fused projection output (row stride > H * D)."""
    g = torch.Generator().manual_seed(seed)
    wide = torch.randn(B, T, H * D + extra, generator=g).to(device, dtype)
    return wide[..., :H * D].view(B, T, H, D)


def test_reference_is_retnets_theta_shift_and_the_transformers_rotate_half():
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64)
    cos, sin = _tables(5, 4)
    assert torch.equal(rotate_torch(x, cos, sin, interleaved=True), theta_shift(x, cos[:, None], sin[:, None]))
    c_full, s_full = rotary_tables(5, 8, 10000.0)
    want = apply_rotary(x, c_full[:, None].double(), s_full[:, None].double())
    got = rotate_torch(x, c_full[:, :4].double(), s_full[:, :4].double(), interleaved=False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_scale_and_out_dtype_of_the_reference():
    x = torch.randn(1, 4, 2, 6, dtype=torch.bfloat16)
    cos, sin = _tables(4, 3, torch.float32)
    out = rotate_torch(x, cos, sin, scale=0.25, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, rotate_torch(x.float(), cos, sin) * 0.25)


@runs_kernels
@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_reference_in_output_and_gradient(interleaved, dtype):
    B, T, H, D, scale = 2, 7, 3, 16, 0.3
    cos, sin = (t.to(DEV) for t in _tables(T, D // 2, torch.float32, offset=1000))
    x = _projection_view(B, T, H, D, dtype, device=DEV).requires_grad_(False)
    x_ref = x.detach().clone().requires_grad_(True)
    x_fused = x.detach().clone().requires_grad_(True)
    grad = torch.randn(B, T, H, D, generator=torch.Generator().manual_seed(3)).to(DEV, dtype)
    ref = rotate_torch(x_ref, cos, sin, interleaved, scale)
    out = rotate(x_fused, cos, sin, interleaved, scale, fused=True)
    assert out.is_contiguous() and out.dtype == dtype and out.shape == (B, T, H, D)
    tol = dict(rtol=0, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out, ref, **tol)
    ref.backward(grad)
    out.backward(grad)
    torch.testing.assert_close(x_fused.grad, x_ref.grad, **tol)


@runs_kernels
def test_kernel_takes_a_strided_view_and_gives_fp32_out_for_bf16_in():
    B, T, H, D = 1, 5, 2, 8
    cos, sin = (t.to(DEV) for t in _tables(T, D // 2, torch.float32))
    wide = torch.randn(B, T, 3 * H * D, generator=torch.Generator().manual_seed(0)).to(DEV, torch.bfloat16)
    k = wide[..., H * D:2 * H * D].view(B, T, H, D)  # the middle slice of a fused q|k|v projection
    out = rotate(k, cos, sin, True, 0.5, out_dtype=torch.float32, fused=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, rotate_torch(k, cos, sin, True, 0.5, torch.float32), rtol=0, atol=1e-6)


@runs_kernels
def test_kernel_saves_nothing_of_its_input():
    """A rotation is linear: its backward needs only the tables, so the projection x is sliced from can be freed."""
    cos, sin = (t.to(DEV) for t in _tables(5, 4, torch.float32))
    x = _projection_view(1, 5, 2, 8, torch.float32, device=DEV).requires_grad_(True)
    saved: list[int] = []

    def pack(t):
        saved.append(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        rotate(x, cos, sin, True, 0.5, fused=True)
    assert x.untyped_storage().data_ptr() not in saved
    assert set(saved) <= {cos.untyped_storage().data_ptr(), sin.untyped_storage().data_ptr()}


def test_fp64_and_cpu_inputs_stay_on_the_reference():
    x = torch.randn(1, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    cos, sin = _tables(3, 2)
    out = rotate(x, cos, sin)  # fused=None on CPU: the reference, fp64 maths
    assert out.grad_fn is not None and "Rotate" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, theta_shift(x, cos[:, None], sin[:, None]))


@interpreter_wrapper
def test_kernels_under_triton_interpreter():
    run_under_interpreter(__file__, "kernel and not interpreter")
