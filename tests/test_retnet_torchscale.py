"""from_torchscale: same weights, same logits as torchscale 0.3.0 (parallel and recurrent incremental decoding)."""

import sys
import types

import pytest
import torch

from retnet import from_torchscale


@pytest.fixture(scope="module")
def torchscale_retnet():
    """Import torchscale's RetNetDecoder; stub `timm.models.layers.drop_path` (only used for drop-path) if absent."""
    pytest.importorskip("fairscale")
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        stub = {name: types.ModuleType(name) for name in ("timm", "timm.models", "timm.models.layers")}
        stub["timm.models.layers"].drop_path = lambda x, drop_prob=0.0, training=False: x
        for name, module in stub.items():
            sys.modules.setdefault(name, module)
    config = pytest.importorskip("torchscale.architecture.config")
    retnet = pytest.importorskip("torchscale.architecture.retnet")
    return config.RetNetConfig, retnet.RetNetDecoder


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("scale_embedding", [False, True])
def test_from_torchscale_matches(torchscale_retnet, scale_embedding):
    TSConfig, RetNetDecoder = torchscale_retnet
    torch.manual_seed(0)
    vocab, T = 97, 11
    args = TSConfig(
        decoder_embed_dim=64, decoder_value_embed_dim=128, decoder_retention_heads=4, decoder_ffn_embed_dim=96,
        decoder_layers=2, vocab_size=vocab, no_scale_embedding=not scale_embedding, layernorm_embedding=scale_embedding,
    )
    decoder = RetNetDecoder(args, embed_tokens=torch.nn.Embedding(vocab, 64)).eval()
    with torch.no_grad():  # non-trivial norm weights so a mis-mapped norm cannot pass
        for name, p in decoder.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    model = from_torchscale(decoder).eval()
    assert model.cfg.decay == "torchscale" and model.cfg.ffn == "glu" and model.cfg.n_heads == 4
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in decoder.parameters())

    ids = torch.randint(0, vocab, (2, T))
    with torch.no_grad():
        ref_parallel = decoder(ids)[0]
        incremental_state: dict = {}
        ref_recurrent = torch.cat(
            [decoder(ids[:, : t + 1], incremental_state=incremental_state)[0] for t in range(T)], dim=1
        )
        for mode in ("parallel", "chunkwise", "recurrent"):
            ours = model(ids, mode=mode, chunk_size=4)
            assert _rel(ours, ref_parallel) <= 1e-5, mode
            assert _rel(ours, ref_recurrent) <= 1e-5, mode
        prompt_logits, state = model.prefill(ids[:, :5], chunk_size=4, last_only=False)
        steps = [model.step(ids[:, t], state)[0] for t in range(5, T)]
        assert _rel(torch.cat([prompt_logits, *steps], dim=1), ref_recurrent) <= 1e-5
