"""Hugging Face Llama baselines (`hf`, `hf-static`): build on CPU, decode == full forward, matched size."""
import pytest
import torch

from retnet_bench.baselines import TransformerConfig, analytic, build_hf_llama, hf_prefill, hf_rewind, hf_step

B, T, N = 2, 7, 4


@pytest.fixture(scope="module")
def hf_and_ids():
    cfg = TransformerConfig.from_name("tiny")
    torch.manual_seed(0)
    hf = build_hf_llama(cfg, dtype=torch.float64, device="cpu")
    ids = torch.randint(0, cfg.vocab_size, (B, T + N))
    with torch.no_grad():
        full = hf(input_ids=ids).logits
    return hf, ids, full


def test_builds_on_cpu_in_dtype(hf_and_ids):
    hf, _, _ = hf_and_ids
    assert {p.dtype for p in hf.parameters()} == {torch.float64}
    assert hf.config.tie_word_embeddings is False
    assert hf.config.num_attention_heads == TransformerConfig.from_name("tiny").n_heads


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@torch.no_grad()
def test_prefill_and_steps_match_full_forward(hf_and_ids, kind):
    hf, ids, full = hf_and_ids
    past = hf_prefill(hf, ids[:, :T], cache=kind, max_len=T + N + 5)  # static: capacity > used length
    logits = [hf_step(hf, ids[:, T + j], past) for j in range(N)]
    assert logits[0].shape == (B, 1, hf.config.vocab_size)
    torch.testing.assert_close(torch.cat(logits, 1), full[:, T:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@torch.no_grad()
def test_step_at_fixed_position_rewinds(hf_and_ids, kind):
    hf, ids, full = hf_and_ids
    past = hf_prefill(hf, ids[:, :T], cache=kind, max_len=T + 1)
    for _ in range(3):
        out = hf_step(hf, ids[:, T], past, position=T)
        torch.testing.assert_close(out[:, 0], full[:, T], rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_rewind_leaves_a_dynamic_cache_contiguous(hf_and_ids):
    hf, ids, full = hf_and_ids
    past = hf_prefill(hf, ids[:, :T], cache="dynamic")
    for _ in range(2):
        out = hf_step(hf, ids[:, T], past)
        torch.testing.assert_close(out[:, 0], full[:, T], rtol=1e-10, atol=1e-10)
        hf_rewind(past, T)
        assert past.length == T
        assert all(layer.keys.shape[-2] == T and layer.keys.is_contiguous() and layer.values.is_contiguous()
                   for layer in past.cache.layers)


@pytest.mark.parametrize("name", ["tiny", "small", "1.3b", "2.7b", "6.7b", "13b"])
def test_param_count_within_2_percent_of_ours(name):
    cfg = TransformerConfig.from_name(name)
    hf = build_hf_llama(cfg, device="meta")
    n_hf, ours = sum(p.numel() for p in hf.parameters()), analytic.param_count(cfg)
    assert abs(n_hf - ours) / ours < 0.02, (name, n_hf, ours)
    assert hf.config.intermediate_size % 8 == 0


def test_unknown_cache_kind_and_bad_static_length(hf_and_ids):
    hf, ids, _ = hf_and_ids
    with pytest.raises(ValueError, match="unknown HF cache kind 'paged'; known: dynamic, static"):
        hf_prefill(hf, ids[:, :T], cache="paged")
    with pytest.raises(ValueError, match="max_len"):
        hf_prefill(hf, ids[:, :T], cache="static", max_len=T - 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.compile on CPU takes ~1 min)")
@torch.no_grad()
def test_hf_static_compiled_on_gpu_matches_full_forward():
    cfg = TransformerConfig.from_name("tiny")
    hf = build_hf_llama(cfg, dtype=torch.float32, device="cuda")
    ids = torch.randint(0, cfg.vocab_size, (B, T + N), device="cuda")
    full = hf(input_ids=ids).logits
    past = hf_prefill(hf, ids[:, :T], cache="static", max_len=T + N)  # compiles by default on CUDA
    logits = [hf_step(hf, ids[:, T + j], past).clone() for j in range(N)]
    torch.testing.assert_close(torch.cat(logits, 1), full[:, T:], rtol=1e-3, atol=1e-3)
