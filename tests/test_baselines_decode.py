"""Every decoding flavour of our Transformer == the full causal forward (float64, tiny preset)."""
import pytest
import torch

from retnet_bench.baselines import CatKVCache, StaticKVCache, Transformer, TransformerConfig

B, T, N = 2, 9, 6  # batch, prompt length, decode steps


@pytest.fixture(scope="module")
def model_and_ids():
    torch.manual_seed(0)
    cfg = TransformerConfig.from_name("tiny")
    model = Transformer(cfg, kernel="sdpa-math", dtype=torch.float64).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, T + N))
    with torch.no_grad():
        full = model(ids)  # (B, T+N, V)
    return model, ids, full


@torch.no_grad()
@pytest.mark.parametrize("extra_capacity", [0, 21])  # exactly T+N slots, and a cache much larger than used
def test_static_prefill_and_steps_match_full_forward(model_and_ids, extra_capacity):
    model, ids, full = model_and_ids
    cache = model.new_static_cache(B, T + N + extra_capacity)
    assert isinstance(cache, StaticKVCache) and cache.capacity % 16 == 0 and cache.capacity >= T + N
    logits = [model.prefill(ids[:, :T], cache, last_only=False)]
    assert logits[0].shape == (B, T, model.cfg.vocab_size)
    for j in range(N):
        logits.append(model.step(ids[:, T + j], cache))
    torch.testing.assert_close(torch.cat(logits, 1), full, rtol=1e-10, atol=1e-10)
    assert cache.pos.item() == T + N and cache.pos.device == cache.k.device


@torch.no_grad()
def test_static_prefill_last_only_and_step_accepts_b1_ids(model_and_ids):
    model, ids, full = model_and_ids
    cache = model.new_static_cache(B, T + 1)
    last = model.prefill(ids[:, :T], cache)  # last_only defaults to True
    assert last.shape == (B, 1, model.cfg.vocab_size)
    torch.testing.assert_close(last[:, 0], full[:, T - 1], rtol=1e-10, atol=1e-10)
    nxt = model.step(ids[:, T:T + 1], cache)  # (B, 1) ids
    torch.testing.assert_close(nxt[:, 0], full[:, T], rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_static_step_rewound_by_pos_fill_is_repeatable(model_and_ids):
    """The runner decodes at a fixed context length by resetting pos before each step."""
    model, ids, full = model_and_ids
    cache = model.new_static_cache(B, T + 1)
    model.prefill(ids[:, :T], cache)
    for _ in range(3):
        cache.pos.fill_(T)
        out = model.step(ids[:, T], cache)
        torch.testing.assert_close(out[:, 0], full[:, T], rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_stale_slots_beyond_pos_are_masked(model_and_ids):
    """Garbage in slots >= pos must not leak into attention (mask built from cache.pos on device)."""
    model, ids, full = model_and_ids
    cache = model.new_static_cache(B, T + N)
    model.prefill(ids[:, :T], cache)
    cache.k[:, :, :, T:].normal_()  # (L, B, H, S, D): fill empty slots with noise
    cache.v[:, :, :, T:].normal_()
    out = model.step(ids[:, T], cache)
    torch.testing.assert_close(out[:, 0], full[:, T], rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_paper_like_prefill_cat_and_steps_match_full_forward(model_and_ids):
    model, ids, full = model_and_ids
    cat = model.prefill_cat(ids[:, :T])
    assert isinstance(cat, CatKVCache) and cat.seq_len == T
    logits = [model.step_cat(ids[:, T + j], cat) for j in range(N)]
    assert cat.seq_len == T + N  # grown by torch.cat, one position per step
    torch.testing.assert_close(torch.cat(logits, 1), full[:, T:], rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_paper_like_keeps_unrotated_keys(model_and_ids):
    model, ids, full = model_and_ids
    cat = model.prefill_cat(ids[:, :T])
    # stored keys are the raw projections: position 0 and the rotated key at position 0 coincide (angle 0),
    # but later positions differ from the rotated ones a static cache stores
    static = model.new_static_cache(B, T)
    model.prefill(ids[:, :T], static)
    k_static = static.k[0][:, :, :T].transpose(1, 2).reshape(B, T, -1)  # (B, T, H*D) rotated
    k_cat = cat.k[0].view(B, model.cfg.n_heads, T, -1).transpose(1, 2).reshape(B, T, -1)
    torch.testing.assert_close(k_cat[:, 0], k_static[:, 0])
    assert not torch.allclose(k_cat[:, 1:], k_static[:, 1:T])


def test_unknown_kernel_and_preset_raise_one_clear_line():
    cfg = TransformerConfig.from_name("tiny")
    with pytest.raises(ValueError, match=r"unknown attention kernel 'flash3'; known: sdpa, ") as e:
        Transformer(cfg, kernel="flash3")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"unknown Transformer preset '7b'; known: tiny, small, 1.3b"):
        TransformerConfig.from_name("7b")


def test_builds_on_meta_device():
    cfg = TransformerConfig.from_name("6.7b")
    with torch.device("meta"):
        model = Transformer(cfg, kernel="sdpa-cudnn")
    assert model.lm_head.weight.is_meta


@torch.no_grad()
def test_paper_like_rewind_in_place_is_contiguous_and_repeatable(model_and_ids):
    model, ids, full = model_and_ids
    cat = model.prefill_cat(ids[:, :T])
    for _ in range(3):
        out = model.step_cat(ids[:, T], cat)  # grows to T+1
        assert cat.seq_len == T + 1
        torch.testing.assert_close(out[:, 0], full[:, T], rtol=1e-10, atol=1e-10)
        cat.rewind_(T)
        assert cat.seq_len == T and all(t.is_contiguous() for t in cat.k + cat.v)
    with pytest.raises(ValueError, match="cannot rewind"):
        cat.rewind_(T + 1)
