"""Grouped-query attention (GQA / MQA) in the Transformer baselines: matched presets, every decode path equal to the
full forward, MHA unchanged bit for bit, HF and analytic sizes agree with the built caches (issue #18)."""
import sys
from pathlib import Path

import pytest
import torch

from retnet_bench.baselines import Transformer, TransformerConfig, analytic, build_hf_llama, hf_prefill, hf_step
from retnet_bench.baselines import kernels as kernels_mod
from retnet_bench.baselines.kernels import causal_attention, gqa_support, sdpa_context
from retnet_bench.baselines.quantized_kv import fp8_kv_cache_available
from retnet.kernels.rotation import rotate
from retnet_bench.baselines.rotary import rotary_tables

sys.path.insert(0, str(Path(__file__).parent))
from test_baselines_kernels import check_static_decode_matches_math  # noqa: E402  (the shared GPU decode check)

try:
    from retnet import RetNetConfig
    from retnet.analytic import param_count as retnet_param_count
except ImportError:
    RetNetConfig = None

B, T, N = 2, 9, 6  # batch, prompt length, decode steps
PAPER = ("1.3b", "2.7b", "6.7b", "13b")
# K/V head counts per paper preset: MHA, GQA with 8 K/V heads (2.7B has 20 query heads, so 5: groups of 4 as at
# 6.7B), MQA
KV_HEADS = {"1.3b": (16, 8, 1), "2.7b": (20, 5, 1), "6.7b": (32, 8, 1), "13b": (40, 8, 1)}


def _small_cfg(n_kv_heads: int | None, **kw) -> TransformerConfig:
    return TransformerConfig(name="gqa-test", d_model=64, n_layers=2, head_dim=16, n_kv_heads=n_kv_heads,
                             vocab_size=97, **kw)


# ------------------------------------------------------------------------------------------------ config
def test_from_name_derives_the_matched_ffn():
    cfg = TransformerConfig.from_name("6.7b", n_kv_heads=8)
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.kv_dim, cfg.kv_groups) == (32, 8, 1024, 4)
    assert cfg.ffn_dim == 5 * 4096 - 1024 == 19456 and cfg.attention_kind == "GQA-8"
    mha = TransformerConfig.from_name("6.7b")
    assert (mha.n_kv_heads, mha.ffn_dim, mha.attention_kind) == (32, 4 * 4096, "MHA")
    mqa = TransformerConfig.from_name("6.7b", n_kv_heads=1)
    assert (mqa.ffn_dim, mqa.attention_kind) == (20352, "MQA")
    assert TransformerConfig.from_name("6.7b", n_kv_heads=8, ffn_dim=16384).ffn_dim == 16384  # given: kept
    assert TransformerConfig.from_name("13b").n_heads == 40


def test_kv_heads_must_divide_query_heads():
    with pytest.raises(ValueError, match=r"n_kv_heads=8 must divide n_heads=20 .*choose one of \[1, 2, 4, 5, 10, 20\]"):
        TransformerConfig.from_name("2.7b", n_kv_heads=8)
    with pytest.raises(ValueError, match="n_kv_heads=0"):
        TransformerConfig.from_name("tiny", n_kv_heads=0)


def _meta_param_count(cfg: TransformerConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in Transformer(cfg).parameters())


@pytest.mark.parametrize("name", PAPER)
@pytest.mark.parametrize("which", [0, 1, 2], ids=["mha", "gqa", "mqa"])
def test_matched_param_counts_on_meta(name, which):
    cfg = TransformerConfig.from_name(name, n_kv_heads=KV_HEADS[name][which])
    ours = _meta_param_count(cfg)
    assert analytic.param_count(cfg) == ours
    # head_dim 128 makes the rule exact: the same count as MHA
    assert ours == analytic.param_count(TransformerConfig.from_name(name))
    if RetNetConfig is not None:
        theirs = retnet_param_count(RetNetConfig.from_name(name))
    else:
        theirs = 12 * cfg.d_model ** 2 * cfg.n_layers + 2 * cfg.vocab_size * cfg.d_model
    assert abs(ours - theirs) / theirs < 0.02, (name, cfg.attention_kind, ours, theirs)


# ------------------------------------------------------------------------------------------------ MHA unchanged
def _mha_reference_forward(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """The forward as written before GQA: fused QKV split as (3, H, D), causal attention, pre-LN blocks."""
    cfg, (b, t) = model.cfg, ids.shape
    cos, sin = rotary_tables(t, cfg.head_dim, cfg.rope_theta)
    x = model.tok_emb(ids)
    with sdpa_context(model.kernel):
        for layer in model.layers:
            q, k, v = layer.attn.wqkv(layer.ln1(x)).view(b, t, 3, cfg.n_heads, cfg.head_dim).unbind(2)
            half = cfg.head_dim // 2  # the models' rotation (rotate-half pairs, maths in fp32)
            q, k = (rotate(t_, cos[:, :half], sin[:, :half], interleaved=False) for t_ in (q, k))
            x = x + layer.attn.wo(causal_attention(q, k, v, model.kernel).reshape(b, t, -1))
            x = x + layer.ffn(x)
    return model.lm_head(model.norm(x))


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_heads_equal_to_heads_is_todays_mha_bit_for_bit(dtype):
    torch.manual_seed(0)
    mha = Transformer(TransformerConfig.from_name("small"), kernel="sdpa-math", dtype=dtype).eval()
    explicit = Transformer(TransformerConfig.from_name("small", n_kv_heads=4), kernel="sdpa-math", dtype=dtype).eval()
    explicit.load_state_dict(mha.state_dict())  # same parameter shapes: wqkv is (3d, d) in both
    ids = torch.randint(0, mha.cfg.vocab_size, (B, T + N))
    ref = _mha_reference_forward(mha, ids)
    assert torch.equal(mha(ids), ref) and torch.equal(explicit(ids), ref)
    cache = explicit.new_static_cache(B, T + N)
    logits = [explicit.prefill(ids[:, :T], cache, last_only=False)] + [explicit.step(ids[:, j], cache)
                                                                          for j in range(T, T + N)]
    cat = explicit.prefill_cat(ids[:, :T])
    cat_logits = [explicit.step_cat(ids[:, j], cat) for j in range(T, T + N)]
    # decode differs from the forward only by summation order; against the reference, same tolerance as before
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=0.05, atol=0.05)
    torch.testing.assert_close(torch.cat(logits, 1), ref, **tol)
    torch.testing.assert_close(torch.cat(cat_logits, 1), ref[:, T:], **tol)


@torch.no_grad()
@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_gqa_equals_mha_with_repeated_kv_weights(n_kv_heads):
    """GQA is MHA whose K/V heads are tied in groups: copy each K/V head's rows to its query heads."""
    torch.manual_seed(0)
    gqa = Transformer(_small_cfg(n_kv_heads), kernel="sdpa-math", dtype=torch.float64).eval()
    mha = Transformer(_small_cfg(None, ffn_dim=gqa.cfg.ffn_dim), kernel="sdpa-math", dtype=torch.float64).eval()
    state = dict(gqa.state_dict())
    d, hd, g = 64, 16, gqa.cfg.kv_groups
    for i in range(2):
        w = state[f"layers.{i}.attn.wqkv.weight"]  # (d + 2 kv_dim, d): q | k | v rows
        q, k, v = w.split((d, gqa.cfg.kv_dim, gqa.cfg.kv_dim))
        rep = lambda m: m.view(-1, hd, d).repeat_interleave(g, 0).reshape(d, d)  # noqa: E731
        state[f"layers.{i}.attn.wqkv.weight"] = torch.cat([q, rep(k), rep(v)])
    mha.load_state_dict(state)
    ids = torch.randint(0, 97, (B, T + N))
    torch.testing.assert_close(gqa(ids), mha(ids), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ decode paths
@pytest.fixture(scope="module", params=[2, 1], ids=["gqa2", "mqa"])
def gqa_model_and_ids(request):
    torch.manual_seed(0)
    model = Transformer(_small_cfg(request.param), kernel="sdpa-math", dtype=torch.float64).eval()
    ids = torch.randint(0, 97, (B, T + N))
    with torch.no_grad():
        full = model(ids)
    return model, ids, full


def _static_decode(model, ids, capacity):
    cache = model.new_static_cache(B, capacity)
    logits = [model.prefill(ids[:, :T], cache, last_only=False)]
    logits += [model.step(ids[:, j], cache) for j in range(T, T + N)]
    return cache, torch.cat(logits, 1)


@torch.no_grad()
@pytest.mark.parametrize("kernel", ["sdpa-math", "sdpa"])
def test_static_decode_matches_full_forward(gqa_model_and_ids, kernel):
    model, ids, full = gqa_model_and_ids
    model.kernel = kernel  # the forward stays the sdpa-math reference
    for layer in model.layers:
        layer.attn.kernel = kernel
    try:
        cache, logits = _static_decode(model, ids, T + N + 21)
    finally:
        model.kernel = "sdpa-math"
        for layer in model.layers:
            layer.attn.kernel = "sdpa-math"
    cfg = model.cfg
    assert cache.k.shape == (cfg.n_layers, B, cfg.n_kv_heads, cache.capacity, cfg.head_dim)
    torch.testing.assert_close(logits, full, rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_repeat_interleave_fallback_matches_full_forward(gqa_model_and_ids, monkeypatch):
    """The labelled fallback (a backend without enable_gqa) gives the same logits."""
    model, ids, full = gqa_model_and_ids
    calls = []
    monkeypatch.setattr(kernels_mod, "gqa_support", lambda *a: calls.append(a) or (False, "forced for the test"))
    _, logits = _static_decode(model, ids, T + N)
    torch.testing.assert_close(logits, full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model(ids), full, rtol=1e-10, atol=1e-10)
    assert {c[3] for c in calls} == {"prefill", "decode"}


@torch.no_grad()
def test_paper_like_cat_decode_matches_full_forward(gqa_model_and_ids):
    model, ids, full = gqa_model_and_ids
    cat = model.prefill_cat(ids[:, :T])
    assert cat.k[0].shape == (B * model.cfg.n_kv_heads, T, model.cfg.head_dim)
    logits = [model.step_cat(ids[:, T + j], cat) for j in range(N)]
    torch.testing.assert_close(torch.cat(logits, 1), full[:, T:], rtol=1e-10, atol=1e-10)
    assert cat.nbytes == analytic.kv_cache_bytes(model.cfg, B, T + N, torch.float64)


@torch.no_grad()
def test_static_cache_bytes_equal_analytic(gqa_model_and_ids):
    model, _, _ = gqa_model_and_ids
    cache = model.new_static_cache(B, 32)  # capacity 32, already a multiple of 16
    assert cache.nbytes == analytic.kv_cache_bytes(model.cfg, B, 32, torch.float64)
    assert cache.nbytes * model.cfg.kv_groups == analytic.kv_cache_bytes(_small_cfg(None), B, 32, torch.float64)
    fa4 = Transformer(model.cfg, kernel="flash-attn-4")
    assert fa4.new_static_cache(B, 20).k.shape == (2, B, 32, model.cfg.n_kv_heads, 16)  # (L, B, S, Hkv, D)


def test_training_backward_through_gqa():
    torch.manual_seed(0)
    model = Transformer(_small_cfg(2), kernel="sdpa")
    ids = torch.randint(0, 97, (B, 12))
    model(ids).logsumexp(-1).mean().backward()
    wqkv = model.layers[0].attn.wqkv.weight
    assert wqkv.shape == (64 + 2 * 32, 64) and wqkv.grad is not None and wqkv.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ analytic
def test_analytic_gqa_by_hand():
    cfg = TransformerConfig.from_name("6.7b", n_kv_heads=8)
    mha = TransformerConfig.from_name("6.7b")
    d, L, V, b, t, kv = 4096, 32, 32000, 16, 8192, 1024
    assert analytic.kv_cache_bytes(cfg, b, t, torch.bfloat16) == 2 * L * b * t * kv * 2
    assert analytic.kv_cache_bytes(mha, b, t, torch.bfloat16) == 4 * analytic.kv_cache_bytes(cfg, b, t, torch.bfloat16)
    weights_read = 2 * (analytic.param_count(cfg) - V * d + b * d)
    assert analytic.decode_bytes_per_step(cfg, b, t, torch.bfloat16) == (
        weights_read + 2 * L * b * t * kv * 2 + 2 * L * b * kv * 2)
    # matmul parameters are those of MHA (exact rule at head_dim 128); attention arithmetic uses the query heads
    assert analytic.flops_per_token(cfg, t) == analytic.flops_per_token(mha, t) == 2 * (12 * d * d * L + V * d) + 4 * L * t * d


# ------------------------------------------------------------------------------------------------ HF
@torch.no_grad()
@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_hf_gqa_cache_and_decode_agree_with_ours(kind):
    cfg = TransformerConfig.from_name("small", n_kv_heads=2)  # 4 query heads, 2 K/V heads
    torch.manual_seed(0)
    hf = build_hf_llama(cfg, dtype=torch.float64, device="cpu")
    assert (hf.config.num_attention_heads, hf.config.num_key_value_heads) == (4, 2)
    ids = torch.randint(0, cfg.vocab_size, (B, 16 + N))
    full = hf(input_ids=ids).logits
    past = hf_prefill(hf, ids[:, :16], cache=kind, max_len=16)
    ours = Transformer(cfg, dtype=torch.float64).new_static_cache(B, 16)  # capacity 16: no rounding
    for i, layer in enumerate(past.cache.layers):
        assert layer.keys.shape == ours.k[i].shape == (B, 2, 16, 64)  # (B, Hkv, S, D) both
    hf_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in past.cache.layers)
    assert hf_bytes == ours.nbytes == analytic.kv_cache_bytes(cfg, B, 16, torch.float64)
    if kind == "static":
        past = hf_prefill(hf, ids[:, :16], cache=kind, max_len=16 + N)
    logits = [hf_step(hf, ids[:, 16 + j], past) for j in range(N)]
    torch.testing.assert_close(torch.cat(logits, 1), full[:, 16:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", PAPER)
@pytest.mark.parametrize("which", [1, 2], ids=["gqa", "mqa"])
def test_hf_gqa_param_count_within_2_percent(name, which):
    cfg = TransformerConfig.from_name(name, n_kv_heads=KV_HEADS[name][which])
    hf = build_hf_llama(cfg, device="meta")
    assert hf.config.num_key_value_heads == cfg.n_kv_heads
    n_hf, ours = sum(p.numel() for p in hf.parameters()), analytic.param_count(cfg)
    assert abs(n_hf - ours) / ours < 0.02, (name, n_hf, ours)


# ------------------------------------------------------------------------------------------------ kernels
def test_gqa_support_on_cpu():
    assert gqa_support("sdpa-math", "cpu", torch.float32, "decode", 32) == (True, "")
    assert gqa_support("sdpa", "cpu", torch.float32, "train", 32) == (True, "")
    ok, why = gqa_support("flash-attn", "cpu", torch.bfloat16)
    assert not ok and why.startswith("flash-attn")  # the kernel itself cannot run here
    with pytest.raises(ValueError, match="unknown phase"):
        gqa_support("sdpa", "cpu", torch.float32, "backward")


def test_fp8_kv_cache_is_reported_unavailable():
    ok, why = fp8_kv_cache_available("cpu")
    assert not ok and "CUDA" in why
    with pytest.raises(ValueError, match="unknown attention kernel"):
        fp8_kv_cache_available("cpu", "fp8-attn")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", kernels_mod.KERNELS)
def test_gpu_gqa_static_decode_and_training_match_math(name):
    cfg = TransformerConfig.from_name("small", n_kv_heads=2)
    model, ids = check_static_decode_matches_math(cfg, name)
    dev, dt = torch.device("cuda"), torch.bfloat16
    if kernels_mod.kernel_available(name, dev, dt, phase="train", head_dim=cfg.head_dim)[0]:
        model.train()
        model(ids).float().logsumexp(-1).mean().backward()
        assert model.layers[0].attn.wqkv.weight.grad.isfinite().all()
