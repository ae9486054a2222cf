"""The decode steps' Triton projection (`retnet.kernels.skinny_linear`): the kernel against an fp32 reference, its
domain and fallbacks, and both decoders' steps with it against their F.linear steps.

Kernel tests run on CUDA when there is a GPU, else under the Triton interpreter in a child process started by the
wrapper test (tests/triton_testing.py says why).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from triton_testing import CUDA, DEV, interpreter_wrapper, run_under_interpreter, runs_kernels  # noqa: E402

from retnet import RetNet, RetNetConfig  # noqa: E402
from retnet.kernels.skinny_linear import (  # noqa: E402
    DECODE_GEMMS, MAX_ROWS, project, resolve_decode_gemm, skinny_linear, skinny_linear_applies, skinny_linear_triton,
)
from retnet_bench.baselines import Transformer, TransformerConfig  # noqa: E402

# (K, N): N not a multiple of any BLOCK_N (a masked tail of output features), K one and several BLOCK_K steps;
# on a GPU also the 6.7B models' weakest cuBLAS shape (8192 -> 4096)
SHAPES = [(64, 40), (192, 72)] + ([(8192, 4096), (4096, 24576)] if CUDA else [])


def _ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x.double(), w.double(), None if b is None else b.double())


@runs_kernels
@pytest.mark.parametrize("K,N", SHAPES)
@pytest.mark.parametrize("M", [1, 3, 8, 16])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_matches_fp64_reference(K, N, M, dtype):
    g = torch.Generator().manual_seed(M * 1000 + N)
    x = torch.randn(M, K, generator=g).to(dtype).to(DEV)
    w = (torch.randn(N, K, generator=g) * K**-0.5).to(dtype).to(DEV)
    b = torch.randn(N, generator=g).to(dtype).to(DEV)
    for bias in (None, b):
        out = skinny_linear_triton(x, w, bias)
        assert out.shape == (M, N) and out.dtype == dtype
        ref = _ref(x, w, bias)
        # fp32 accumulation, one rounding to the 16-bit output (plus one more for the bias add)
        ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
        tol = 2 * ulp * ref.abs().max().item() + 1e-3
        assert (out.double() - ref).abs().max().item() <= tol


@runs_kernels
def test_strided_rows_and_leading_dims():
    """x may be a row-strided view (a slice of a wider activation) and carry leading dims (B, 1, K)."""
    g = torch.Generator().manual_seed(1)
    wide = torch.randn(5, 2, 128, generator=g).to(torch.bfloat16).to(DEV)
    x = wide[:, 0]  # (5, 128), row stride 256
    w = (torch.randn(48, 128, generator=g) * 0.1).to(torch.bfloat16).to(DEV)
    assert skinny_linear_applies(x, w)
    assert (skinny_linear_triton(x, w).double() - _ref(x, w, None)).abs().max().item() < 0.05
    y = skinny_linear(x.view(5, 1, 128), w)
    assert y.shape == (5, 1, 48)
    assert torch.equal(y.view(5, 48), skinny_linear_triton(x.contiguous(), w))


def test_the_row_contract_knows_the_kernels_row_limit():
    """suites.contract (read by reports, without torch) keeps its own copy of the limit beyond which a step ran
    F.linear whatever decode_gemm said: the two must agree."""
    from retnet_bench.suites.contract import DECODE_GEMM_MAX_ROWS, DECODE_GEMMS as ROW_VALUES, decode_gemm_ran

    assert DECODE_GEMM_MAX_ROWS == MAX_ROWS and ROW_VALUES == DECODE_GEMMS
    assert decode_gemm_ran("triton", MAX_ROWS) == "triton" and decode_gemm_ran("triton", MAX_ROWS + 1) == "torch"
    assert decode_gemm_ran("triton", None) == "triton" and decode_gemm_ran(None, 4) is None


def test_domain_and_fallbacks():
    """Outside the kernel's domain skinny_linear is F.linear itself (bit for bit); the kernel refuses it in one
    clear error; "auto" picks the kernel only on CUDA with 16-bit weights."""
    w = torch.randn(48, 128).to(torch.bfloat16)
    for x in (torch.randn(MAX_ROWS + 1, 128).to(torch.bfloat16),  # too many rows (prefill, training)
              torch.randn(4, 128),  # fp32
              ):
        w_ = w.to(x.dtype)
        assert not skinny_linear_applies(x, w_)
        assert torch.equal(skinny_linear(x, w_), F.linear(x, w_))
        with pytest.raises(ValueError, match="outside the kernel's domain"):
            skinny_linear_triton(x, w_)
    assert not skinny_linear_applies(torch.randn(4, 96).to(torch.bfloat16), torch.randn(8, 96).to(torch.bfloat16))
    assert resolve_decode_gemm("auto", torch.device("cpu"), torch.bfloat16) == "torch"
    assert resolve_decode_gemm("auto", torch.device("cuda"), torch.float32) == "torch"
    with pytest.raises(ValueError, match="needs a CUDA GPU"):  # never a "triton" row for an F.linear step
        resolve_decode_gemm("triton", torch.device("cpu" if not CUDA else "cuda"), torch.float32)
    with pytest.raises(ValueError, match="decode_gemm='cublas'"):
        resolve_decode_gemm("cublas", torch.device("cpu"), torch.float32)
    model = RetNet(RetNetConfig.from_name("tiny"))
    with pytest.raises(ValueError, match="decode_gemm='cublas'"):
        model.decode_gemm = "cublas"
    lin = torch.nn.Linear(128, 48, bias=False).to(torch.bfloat16)
    x = torch.randn(3, 128).to(torch.bfloat16)
    assert torch.equal(project(x, lin, "torch"), lin(x))
    # where autograd needs a backward the kernel (which has none) is never used: gradients flow as through F.linear
    y = project(x, lin, "triton")
    assert y.requires_grad and y.grad_fn is not None


def _same_tokens(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(-1) == b.argmax(-1)).float().mean().item()


@pytest.fixture
def kernel_calls(monkeypatch) -> list:
    """Counts the kernel's launches, so a step test fails if every projection fell back to F.linear."""
    import retnet.kernels.skinny_linear as sl

    calls: list = []
    real = sl.skinny_linear_triton

    def counted(x, weight, bias=None):
        calls.append(tuple(weight.shape))
        return real(x, weight, bias)

    monkeypatch.setattr(sl, "skinny_linear_triton", counted)
    return calls


@runs_kernels
def test_retnet_step_with_triton_projections(kernel_calls):
    """Teacher-forced decode of a small bf16 RetNet: the step with the Triton projections against the same step with
    F.linear, logits to bf16 rounding and the same next token (the state is updated the same way)."""
    torch.manual_seed(0)
    cfg = RetNetConfig.from_name("tiny", vocab_size=256, d_model=128, n_heads=2)
    model = RetNet(cfg).to(DEV).to(torch.bfloat16).eval()
    ids = torch.randint(0, 256, (3, 6), device=DEV)
    out = {}
    for gemm in ("torch", "triton"):
        model.decode_gemm = gemm
        assert model.decode_gemm == gemm
        state = model.init_state(3, device=DEV)
        logits = [model.step(ids[:, t], state)[0] for t in range(ids.shape[1])]
        out[gemm] = (torch.cat(logits, 1).float(), state.kv.clone())
    per_step = {(cfg.d_model * 2 + cfg.value_dim * 2, cfg.d_model), (cfg.d_model, cfg.value_dim),
                (cfg.ffn_dim, cfg.d_model), (cfg.d_model, cfg.ffn_dim), (256, cfg.d_model)}
    assert set(kernel_calls) == per_step and len(kernel_calls) == ids.shape[1] * (4 * cfg.n_layers + 1)
    (lt, st), (lx, sx) = out["torch"], out["triton"]
    assert (lx - lt).abs().max().item() <= 0.05 * lt.abs().max().item()
    assert (sx - st).abs().max().item() <= 0.05 * st.abs().max().item()
    assert _same_tokens(lx, lt) >= 0.9


@runs_kernels
@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_static_transformer_step_with_triton_projections(n_kv_heads, kernel_calls):
    """The `static` Transformer's step likewise (MHA and GQA): Triton projections against F.linear."""
    torch.manual_seed(0)
    over = dict(vocab_size=256, n_layers=2, d_model=128, head_dim=32)  # 4 query heads
    cfg = TransformerConfig.from_name("tiny", **over, **({} if n_kv_heads is None else dict(n_kv_heads=n_kv_heads)))
    model = Transformer(cfg, kernel="sdpa").to(DEV).to(torch.bfloat16).eval()
    prompt = torch.randint(0, 256, (2, 5), device=DEV)
    out = {}
    for gemm in ("torch", "triton"):
        model.decode_gemm = gemm
        cache = model.new_static_cache(2, 12, device=DEV)
        with torch.no_grad():
            model.prefill(prompt, cache)
            ids = prompt[:, -1]
            logits = [model.step(ids, cache) for _ in range(4)]
        out[gemm] = torch.cat(logits, 1).float()
    assert len(kernel_calls) == 4 * (4 * cfg.n_layers + 1)  # wqkv, wo, fc1, fc2 per layer and the head, per step
    assert (out["triton"] - out["torch"]).abs().max().item() <= 0.05 * out["torch"].abs().max().item()
    assert _same_tokens(out["triton"], out["torch"]) >= 0.9


@interpreter_wrapper
def test_kernels_under_triton_interpreter():
    run_under_interpreter(__file__, "not interpreter")
