"""Named attention kernels: availability answers, equal outputs where available, clear errors otherwise."""
import pytest
import torch

from retnet_bench.baselines import KERNELS, KernelUnavailableError, Transformer, TransformerConfig, kernel_available
from retnet_bench.baselines.kernels import causal_attention, decode_attention_sdpa, reference_attention, sdpa_context

CPU = torch.device("cpu")


def test_kernel_names_and_cpu_availability():
    assert KERNELS == ("sdpa", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math", "flash-attn",
                       "flash-attn-4")
    for name in ("sdpa", "sdpa-math"):
        assert kernel_available(name, CPU, torch.float32) == (True, "")
        assert kernel_available(name, "cpu", torch.float32, phase="decode") == (True, "")
    ok, why = kernel_available("sdpa-flash", CPU, torch.float32, phase="decode")
    assert not ok and "attn_mask" in why
    ok, why = kernel_available("sdpa-cudnn", CPU, torch.float32)
    assert not ok and why.startswith("sdpa-cudnn")


@pytest.mark.parametrize("name", ["flash-attn", "flash-attn-4"])
def test_flash_packages_guarded(name):
    ok, why = kernel_available(name, CPU, torch.bfloat16)
    assert not ok
    # the import error itself is kept in the reason (a broken install must be told apart from a missing one)
    assert why.startswith(f"{name} not installed: ") or why == f"{name} runs on CUDA GPUs only (device cpu)"


def test_unknown_kernel_or_phase():
    with pytest.raises(ValueError, match="unknown attention kernel 'xformers'"):
        kernel_available("xformers", CPU, torch.float32)
    with pytest.raises(ValueError, match="unknown phase 'backward'"):
        kernel_available("sdpa", CPU, torch.float32, phase="backward")


@pytest.mark.parametrize("name", KERNELS)
def test_causal_attention_matches_reference(name):
    if not kernel_available(name, CPU, torch.float32)[0]:
        pytest.skip(kernel_available(name, CPU, torch.float32)[1])
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 11, 3, 32) for _ in range(3))  # (B, T, H, D)
    with sdpa_context(name):
        out = causal_attention(q, k, v, name)
    ref = reference_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", KERNELS)
def test_decode_attention_matches_reference(name):
    if not kernel_available(name, CPU, torch.float32, phase="decode")[0] or name.startswith("flash-attn"):
        pytest.skip("not available for masked static decode on CPU")
    torch.manual_seed(0)
    q = torch.randn(2, 3, 1, 32)
    k, v = torch.randn(2, 3, 16, 32), torch.randn(2, 3, 16, 32)  # capacity 16, 10 valid
    mask = torch.full((1, 1, 1, 16), float("-inf"))
    mask[..., :10] = 0
    with sdpa_context(name):
        out = decode_attention_sdpa(q, k, v, mask, name)
    torch.testing.assert_close(out, reference_attention(q, k, v, n_valid=10), rtol=1e-5, atol=1e-5)


def test_models_with_cpu_kernels_agree():
    cfg = TransformerConfig.from_name("tiny")
    ids = torch.randint(0, cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    outs = {}
    for name in KERNELS:
        if kernel_available(name, CPU, torch.float32)[0]:
            torch.manual_seed(0)
            with torch.no_grad():
                outs[name] = Transformer(cfg, kernel=name)(ids)
    assert {"sdpa", "sdpa-math"} <= set(outs)
    for name, out in outs.items():
        torch.testing.assert_close(out, outs["sdpa-math"], rtol=1e-4, atol=1e-4, msg=name)


def test_forced_backend_that_cannot_run_raises_clearly():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.from_name("tiny"), kernel="sdpa-cudnn")
    with pytest.raises(KernelUnavailableError, match=r"^sdpa-cudnn: PyTorch's CUDNN_ATTENTION backend cannot run"):
        model(torch.zeros(1, 4, dtype=torch.long))
    flash = Transformer(TransformerConfig.from_name("tiny"), kernel="sdpa-flash")
    cache = flash.new_static_cache(1, 8)
    flash.prefill(torch.zeros(1, 4, dtype=torch.long), cache)  # prefill (no mask) runs on CPU
    with pytest.raises(KernelUnavailableError, match="accepts no attn_mask"):
        flash.step(torch.zeros(1, dtype=torch.long), cache)
    fa = Transformer(TransformerConfig.from_name("tiny"), kernel="flash-attn")
    with pytest.raises(KernelUnavailableError, match="flash-attn not installed"):
        fa(torch.zeros(1, 4, dtype=torch.long))


def test_flash_package_caches_use_bshd_layout():
    model = Transformer(TransformerConfig.from_name("tiny"), kernel="flash-attn-4")
    cache = model.new_static_cache(3, 20)
    assert cache.layout == "bshd" and cache.k.shape == (2, 3, 32, 2, 32)  # (L, B, S, H, D), S rounded up to 32


def check_static_decode_matches_math(cfg: TransformerConfig, name: str) -> tuple[Transformer, torch.Tensor]:
    """On the GPU, bf16: `name`'s static-cache prefill (32 tokens) + 8 decode steps give the logits of the sdpa-math
    model's full forward. Returns the kernel's model and the ids, for further checks. Skips where `name` cannot run."""
    dev, dt = torch.device("cuda"), torch.bfloat16
    ok, why = kernel_available(name, dev, dt, phase="decode", head_dim=cfg.head_dim)
    if not ok:
        pytest.skip(why)
    torch.manual_seed(0)
    ref = Transformer(cfg, kernel="sdpa-math", device=dev, dtype=dt).eval()
    model = Transformer(cfg, kernel=name, device=dev, dtype=dt).eval()
    model.load_state_dict(ref.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, 40), device=dev)
    with torch.no_grad():
        full = ref(ids).float()
        cache = model.new_static_cache(2, 64)
        logits = [model.prefill(ids[:, :32], cache, last_only=False)]
        logits += [model.step(ids[:, j], cache) for j in range(32, 40)]
    torch.testing.assert_close(torch.cat(logits, 1).float(), full, rtol=0.05, atol=0.05)
    return model, ids


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", KERNELS)
def test_gpu_static_decode_matches_math(name):
    check_static_decode_matches_math(TransformerConfig.from_name("small", head_dim=64), name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (Triton kernel)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_delta", [True, False])
def test_fused_add_layer_norm_matches_reference(dtype, with_delta):
    from retnet.kernels.add_norm import add_norm_torch, add_norm_triton, triton_available

    if not triton_available():
        pytest.skip("needs triton")
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(4096, eps=1e-5, device="cuda", dtype=dtype)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(16, 1, 4096, device="cuda", dtype=dtype)
    delta = torch.randn_like(x) if with_delta else None
    ref_x, ref_h = add_norm_torch(x, delta, norm)
    out_x, out_h = add_norm_triton(x, delta, norm)
    torch.testing.assert_close(out_x, ref_x, rtol=0, atol=0)  # the same rounded sum
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out_h, ref_h, rtol=tol, atol=tol)
