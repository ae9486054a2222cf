"""Transformer presets are matched to the RetNet presets; analytic sizes agree with the built model."""
import pytest
import torch

from retnet_bench.baselines import PRESETS, Transformer, TransformerConfig, analytic

try:
    from retnet import RetNetConfig
    from retnet.analytic import param_count as retnet_param_count
except ImportError:  # retnet not importable: compare against the closed form 12 d^2 L + 2 V d
    RetNetConfig = None


def _meta_param_count(cfg: TransformerConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in Transformer(cfg).parameters())


@pytest.mark.parametrize("name", list(PRESETS))
def test_analytic_param_count_is_exact(name):
    cfg = TransformerConfig.from_name(name)
    assert analytic.param_count(cfg) == _meta_param_count(cfg)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_match_retnet_within_2_percent(name):
    cfg = TransformerConfig.from_name(name)
    ours = analytic.param_count(cfg)
    if RetNetConfig is not None:
        rcfg = RetNetConfig.from_name(name)
        assert (cfg.d_model, cfg.n_layers, cfg.vocab_size) == (rcfg.d_model, rcfg.n_layers, rcfg.vocab_size)
        theirs = retnet_param_count(rcfg)
    else:
        theirs = 12 * cfg.d_model ** 2 * cfg.n_layers + 2 * cfg.vocab_size * cfg.d_model
    assert abs(ours - theirs) / theirs < 0.02, (ours, theirs)


def test_paper_sizes_and_head_dim():
    names = ("1.3b", "2.7b", "6.7b", "13b")
    sizes = {n: analytic.param_count(TransformerConfig.from_name(n)) / 1e9 for n in names}
    assert sizes == pytest.approx({"1.3b": 1.34, "2.7b": 2.68, "6.7b": 6.71, "13b": 12.91}, abs=0.01)
    assert [TransformerConfig.from_name(n).n_heads for n in names] == [16, 20, 32, 40]


def test_analytic_decode_bytes_and_flops_by_hand():
    cfg = TransformerConfig.from_name("6.7b")
    d, L, V, b, t = 4096, 32, 32000, 16, 8192
    kv = 2 * L * b * t * d * 2
    assert analytic.kv_cache_bytes(cfg, b, t, torch.bfloat16) == kv
    assert analytic.weight_bytes(cfg, torch.bfloat16) == 2 * analytic.param_count(cfg)
    weights_read = 2 * (analytic.param_count(cfg) - V * d + b * d)  # input table: only B rows are read
    assert analytic.decode_bytes_per_step(cfg, b, t, torch.bfloat16) == weights_read + kv + 2 * L * b * d * 2
    assert analytic.flops_per_token(cfg, t) == 2 * (12 * d * d * L + V * d) + 4 * L * t * d
