"""RetNet presets and analytic costs, checked against models built on the meta device (no weights allocated)."""

import pytest
import torch

from retnet import VOCAB_SIZE, RetNet, RetNetConfig, analytic
from retnet.config import EXACT_POSITION_LIMIT, PRESETS

# arXiv 2307.08621 Table 2 sizes: (layers, d_model, heads, parameter range)
PAPER = {
    "1.3b": (24, 2048, 8, 1.25e9, 1.45e9),
    "2.7b": (32, 2560, 10, 2.55e9, 2.85e9),
    "6.7b": (32, 4096, 16, 6.4e9, 7.0e9),
    "13b": (40, 5120, 20, 12.5e9, 13.5e9),
}


def _meta_model(cfg: RetNetConfig) -> RetNet:
    with torch.device("meta"):
        return RetNet(cfg)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_param_count_matches_meta_model(name):
    cfg = RetNetConfig.from_name(name)
    model = _meta_model(cfg)
    assert model.embed.weight.is_meta
    n_params = sum(p.numel() for p in model.parameters())
    print(f"retnet {name}: {n_params / 1e9:.4f}B parameters (analytic {analytic.param_count(cfg)})")
    assert analytic.param_count(cfg) == n_params
    assert analytic.weight_bytes(cfg, torch.bfloat16) == 2 * n_params
    assert cfg.vocab_size == VOCAB_SIZE == 32000
    if name in PAPER:
        layers, d, heads, low, high = PAPER[name]
        assert (cfg.n_layers, cfg.d_model, cfg.n_heads) == (layers, d, heads)
        assert cfg.qk_head_dim == 256 and cfg.v_head_dim == 512 and cfg.ffn_dim == 2 * d
        assert analytic.layer_param_count(cfg) - 4 * d == 12 * d * d  # 12 d^2 + two LayerNorms
        assert low <= n_params <= high


@pytest.mark.parametrize(
    "overrides", [{}, {"norm": "rmsnorm", "ffn": "glu", "bias": True, "embed_norm": True}, {"tie_embeddings": True}]
)
def test_param_count_variants(overrides):
    cfg = RetNetConfig.from_name("tiny", **overrides)
    assert analytic.param_count(cfg) == sum(p.numel() for p in _meta_model(cfg).parameters())


def test_unknown_preset_and_bad_fields():
    with pytest.raises(ValueError, match="6.7b"):
        RetNetConfig.from_name("7b")
    with pytest.raises(ValueError):
        RetNetConfig.from_name("tiny", decay="linear")
    with pytest.raises(ValueError):
        RetNetConfig.from_name("tiny", not_a_field=1)
    assert RetNetConfig.from_name("tiny", d_model=128).value_dim == 256  # derived sizes follow overrides


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_match_real_state(state_dtype):
    cfg = RetNetConfig.from_name("small", vocab_size=64, state_dtype=state_dtype)
    model = RetNet(cfg)
    state = model.init_state(3)
    assert state.kv.shape == (cfg.n_layers, 3, cfg.n_heads, cfg.qk_head_dim, cfg.v_head_dim)
    assert state.kv.dtype == state_dtype and state.pos.dtype == torch.long
    assert analytic.state_bytes(cfg, 3, state_dtype) == state.nbytes


def test_paper_scale_state_and_decode_bytes():
    cfg = RetNetConfig.from_name("6.7b")
    # 32 layers * 16 heads * 256 * 512 * 4 B = 268 MB of kv state per sequence (+ 0.4% key sums)
    kv_bytes = 32 * 16 * 256 * 512 * 4
    assert kv_bytes <= analytic.state_bytes(cfg, 1) <= kv_bytes * 1.01
    one = analytic.decode_bytes_per_step(cfg, 1, torch.bfloat16, torch.float32)
    sixteen = analytic.decode_bytes_per_step(cfg, 16, torch.bfloat16, torch.float32)
    assert 13.0e9 < one < 13.8e9  # bf16 weights (embedding table excluded) + 2 state passes
    assert sixteen - one == pytest.approx(15 * (2 * kv_bytes), rel=0.01)


def test_flops_per_token():
    cfg = RetNetConfig.from_name("6.7b")
    recurrent = analytic.flops_per_token(cfg, 2048, mode="recurrent")
    assert 2 * 6.4e9 < recurrent < 2 * 7.0e9
    assert analytic.flops_per_token(cfg, 4096, mode="recurrent") == recurrent  # O(1) per token
    assert analytic.flops_per_token(cfg, 4096, "parallel") > analytic.flops_per_token(cfg, 2048, "parallel")
    with pytest.raises(ValueError):
        analytic.flops_per_token(cfg, 16, mode="bogus")


def test_meta_then_materialise():
    """The runner's path: build on meta, to_empty on the device, reset_parameters, run."""
    cfg = RetNetConfig.from_name("tiny", vocab_size=64)
    model = _meta_model(cfg).to_empty(device="cpu")
    model.reset_parameters()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert 0.015 < model.embed.weight.std().item() < 0.025  # really initialised, not left empty
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        ref = model(ids, mode="parallel")
        _, state = model.prefill(ids[:, :4])
        for t in range(4, 7):
            logits, state = model.step(ids[:, t], state)
    assert torch.isfinite(ref).all()
    assert torch.allclose(logits[:, 0], ref[:, -1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_length_limit_is_the_exact_position_limit(name):
    assert RetNetConfig.from_name(name).max_seq_len == EXACT_POSITION_LIMIT == 2**24


@pytest.mark.parametrize("pos", [2**20 - 1, 2**24 - 1, 2**24 - 12345])
def test_rotation_tables_exact_at_the_limit(pos):
    """fp32 cos/sin at large positions are within fp32 rounding (2^-24 absolute) of the exact value."""
    mpmath = pytest.importorskip("mpmath")
    from retnet.retention import log_decay, position_tables, rotary_angle

    mpmath.mp.dps = 40
    dk = 256
    cos, sin, row_norm = position_tables(torch.tensor([pos]), rotary_angle(dk), log_decay(16, "paper"), torch.float32)
    for i in (0, 1, 7, 64, dk // 2 - 1):
        theta = pos / mpmath.power(10000, mpmath.mpf(i) / (dk // 2 - 1))
        assert abs(cos[0, i].item() - float(mpmath.cos(theta))) <= 2**-24
        assert abs(sin[0, i].item() - float(mpmath.sin(theta))) <= 2**-24
    assert torch.isfinite(row_norm).all() and (row_norm >= 1).all()
