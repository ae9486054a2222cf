"""Official-code peers (torchscale 0.3.0, flash-linear-attention): build, pre-filled state, decode, sizes."""
from __future__ import annotations

import sys

import pytest
import torch

from retnet.config import VOCAB_SIZE
from retnet_bench.baselines import peers
from retnet_bench.baselines.peers import fla as fla_mod
from retnet_bench.baselines.peers import torchscale as ts_mod
from retnet_bench.baselines.peers import (build_fla_retnet_peer, build_torchscale_retnet_peer,
                                          build_torchscale_transformer_peer)

# the test's own short names for the three peer builders (the impl names live in suites/contestants/peers.py)
BUILDERS = {"torchscale-retnet": build_torchscale_retnet_peer,
            "torchscale-transformer": build_torchscale_transformer_peer, "fla-retnet": build_fla_retnet_peer}


def build_peer(name, preset, dtype, device):
    return BUILDERS[name](preset, dtype, device)


def peer_available(name):
    return peers.fla_available() if name == "fla-retnet" else peers.torchscale_available()


TORCHSCALE_OK, TORCHSCALE_WHY = peers.torchscale_available()
needs_torchscale = pytest.mark.skipif(not TORCHSCALE_OK, reason=TORCHSCALE_WHY)
TS_PEERS = ("torchscale-retnet", "torchscale-transformer")
PRESETS = ("tiny", "small", "1.3b", "2.7b", "6.7b")
V = VOCAB_SIZE


def test_every_peer_has_a_contestant_spec_with_its_library_availability():
    from retnet_bench.suites.contestants.spec import load_specs

    official = {n for n, s in load_specs().items() if s.source == "official"}
    assert official == set(BUILDERS)


@needs_torchscale
@pytest.mark.parametrize("name", TS_PEERS)
def test_prefilled_decode_gives_finite_logits_and_tracks_state(name):
    torch.manual_seed(0)
    peer = build_peer(name, "tiny", torch.float32, torch.device("cpu"))
    B, T = 2, 12
    peer.prefill_state(B, T)
    first = peer.state_bytes()
    layers = peer.model.layers
    if name == "torchscale-retnet":
        ret = layers[0].retention  # state (B, H, dv, dk) fp32 + scale (H,) fp32 per layer
        assert first == len(layers) * 4 * (B * ret.num_heads * ret.head_dim * ret.key_dim + ret.num_heads)
    else:
        attn = layers[0].self_attn  # K and V (B, H, T, hd) fp32 per layer
        per_token = len(layers) * 2 * B * attn.num_heads * attn.head_dim * 4
        assert first == T * per_token
    assert peer.state_bytes_at(B, T) == first  # the analytic size capacity searches plan with
    for i in range(3):
        logits = peer.step()
        assert logits.shape == (B, 1, V) and torch.isfinite(logits).all()
    assert peer.pos == T + 3
    if name == "torchscale-retnet":  # greedy feed: the next id is the argmax of the last logits
        assert torch.equal(peer.tokens[:, peer.pos], logits[:, -1].argmax(-1))
    if name == "torchscale-retnet":
        assert peer.state_bytes() == first  # recurrent: constant size
    else:
        assert peer.state_bytes() == first + 3 * per_token  # cat-grown cache
        peer.rewind()
        assert peer.state_bytes() == first and peer.pos == T
        assert peer.step().shape == (B, 1, V)
    assert "pre-filled with random" in peer.notes


@needs_torchscale
@pytest.mark.parametrize("name", TS_PEERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefilled_state_has_the_structure_torchscale_builds_itself(name, dtype):
    """Decode T tokens through torchscale from an empty state, and compare with the state we pre-fill at T."""
    torch.manual_seed(0)
    peer = build_peer(name, "tiny", dtype, "cpu")
    B, T = 2, 5
    peer.prefill_state(B, 0)
    for t in range(T):
        peer.step(torch.randint(0, V, (B,)))
    real = peer.state
    peer.prefill_state(B, T)
    ours = peer.state
    assert set(real) == set(ours) == set(range(len(peer.model.layers)))
    for i in real:
        assert set(real[i]) == set(ours[i])
        for key, tensor in real[i].items():
            assert ours[i][key].shape == tensor.shape and ours[i][key].dtype == tensor.dtype, (i, key)
    if name == "torchscale-retnet":  # the running normaliser is deterministic: sum_{i<T} gamma^i
        torch.testing.assert_close(ours[0]["scale"], real[0]["scale"], rtol=2e-2 if dtype != torch.float32 else 1e-6,
                                   atol=0)


@needs_torchscale
@pytest.mark.parametrize("name", TS_PEERS)
def test_peer_step_replays_the_decoders_parallel_forward(name):
    """Driving torchscale's incremental decoding through `step` gives its own full-sequence logits: the prefix
    view and the positions are passed the way the decoder expects."""
    torch.manual_seed(0)
    peer = build_peer(name, "tiny", torch.float32, "cpu")
    B, T = 2, 7
    ids = torch.randint(0, V, (B, T))
    with torch.no_grad():
        full, _ = peer.model(ids)  # (B, T, V)
    peer.prefill_state(B, 0)
    steps = torch.cat([peer.step(ids[:, t]) for t in range(T)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-4)


def _contract_params(d: int, n_layers: int) -> int:
    return 12 * d * d * n_layers + 2 * V * d  # CONTRACTS.md: both architectures, untied embeddings


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@needs_torchscale
@pytest.mark.parametrize("preset", PRESETS)
def test_parameter_counts_match_our_presets(preset):
    """Built on the meta device (no memory), so the paper sizes are checked too."""
    from retnet_bench.baselines.config import TransformerConfig
    from retnet.config import RetNetConfig

    rcfg, tcfg = RetNetConfig.from_name(preset), TransformerConfig.from_name(preset)
    with torch.device("meta"):
        ts_retnet = _count(peers.build_torchscale_retnet(preset))
        ts_transformer = _count(peers.build_torchscale_transformer(preset))
    targets = {"retnet": [_contract_params(rcfg.d_model, rcfg.n_layers)],
               "transformer": [_contract_params(tcfg.d_model, tcfg.n_layers)]}
    try:  # and the models as built, when they import
        import retnet
        from retnet_bench.baselines.transformer import Transformer

        with torch.device("meta"):
            targets["retnet"].append(_count(retnet.RetNet(rcfg)))
            targets["transformer"].append(_count(Transformer(tcfg)))
    except (ImportError, AttributeError):
        pass
    for ours in targets["retnet"]:
        assert abs(ts_retnet / ours - 1) < 0.02, (preset, ts_retnet, ours)
    for ours in targets["transformer"]:
        assert abs(ts_transformer / ours - 1) < 0.02, (preset, ts_transformer, ours)


def test_missing_torchscale_is_reported_not_raised(monkeypatch):
    for mod in [m for m in sys.modules if m == "torchscale" or m.startswith("torchscale.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setitem(sys.modules, "torchscale", None)
    for name in TS_PEERS:
        ok, why = peer_available(name)
        assert not ok and why.startswith("torchscale not installed: pip install --no-deps torchscale==0.3.0")
    with pytest.raises(RuntimeError, match="torchscale not installed"):
        build_peer("torchscale-retnet", "tiny", torch.float32, "cpu")


@needs_torchscale
def test_missing_fairscale_is_reported(monkeypatch):
    for mod in [m for m in sys.modules if m.startswith("torchscale.")]:
        parent, _, child = mod.rpartition(".")
        if sys.modules.get(parent) is not None and hasattr(sys.modules[parent], child):
            monkeypatch.setattr(sys.modules[parent], child, getattr(sys.modules[parent], child))  # restored after
        monkeypatch.delitem(sys.modules, mod)  # force a fresh import that needs fairscale
    monkeypatch.setitem(sys.modules, "fairscale", None)
    monkeypatch.setitem(sys.modules, "fairscale.nn", None)
    ok, why = peer_available("torchscale-retnet")
    assert not ok and why.startswith("fairscale not installed")


@needs_torchscale
def test_timm_stand_in_is_scoped_to_the_torchscale_import():
    import importlib.util

    from torchscale.component import droppath

    if importlib.util.find_spec("timm") is None:
        assert "timm" not in sys.modules  # the stand-in does not leak to other libraries
        assert droppath.drop_path is ts_mod._timm_drop_path
    x = torch.ones(64, 3)
    assert ts_mod._timm_drop_path(x, 0.5, training=False) is x
    dropped = ts_mod._timm_drop_path(x, 0.5, training=True)
    assert set(dropped[:, 0].tolist()) <= {0.0, 2.0} and (dropped == dropped[:, :1]).all()


@needs_torchscale
def test_from_torchscale_agrees_with_the_adapter():
    """Our RetNet converted from the peer's decoder gives the same parallel logits for the same weights."""
    try:
        from retnet import from_torchscale
    except (ImportError, AttributeError) as e:
        pytest.skip(f"retnet.from_torchscale not available yet: {e}")
    torch.manual_seed(0)
    peer = build_peer("torchscale-retnet", "tiny", torch.float32, "cpu")
    ours = from_torchscale(peer.model).eval()
    ids = torch.randint(0, V, (2, 24))
    with torch.no_grad():
        theirs, _ = peer.model(ids)
        mine = ours(ids, mode="parallel")
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_fla_availability_has_a_reason():
    ok, why = peers.fla_available()
    if not torch.cuda.is_available():
        assert not ok and why
    if not ok:
        assert peer_available("fla-retnet") == (False, why)
        with pytest.raises(RuntimeError, match="flash-linear-attention|fla"):
            build_peer("fla-retnet", "tiny", torch.bfloat16, "cpu")


def test_fla_other_versions_are_refused_with_the_install_line(monkeypatch):
    assert peers.FLA_VERSION == "0.6.0"
    monkeypatch.setattr(fla_mod, "_fla_installed_version", lambda: None)
    assert peers.fla_available() == (False, f"flash-linear-attention not installed: {peers.FLA_INSTALL}")
    for old in ("0.3.2", "unknown"):
        monkeypatch.setattr(fla_mod, "_fla_installed_version", lambda old=old: old)
        ok, why = peers.fla_available()
        assert not ok and old in why and "written for 0.6.0" in why and why.endswith(peers.FLA_INSTALL)
    monkeypatch.setattr(fla_mod, "_fla_installed_version", lambda: peers.FLA_VERSION)
    ok, why = peers.fla_available()
    if not torch.cuda.is_available():  # the version passes; triton or the GPU is what is missing here
        assert not ok and "written for" not in why and ("triton" in why or "CUDA" in why), why


def test_fla_extra_pins_the_version_the_peer_is_written_for():
    import pathlib
    import tomllib

    pyproject = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["optional-dependencies"]["fla"] == [f"flash-linear-attention=={peers.FLA_VERSION}"]


@pytest.mark.parametrize("preset", PRESETS)
def test_fla_config_matches_our_presets(preset):
    """The fla RetNetConfig kwargs (pure: fla is not imported) give our sizes, dims fla accepts, and parameters
    within 2% of our RetNet (the count itself is checked against the built model on the GPU)."""
    from retnet.config import RetNetConfig

    cfg = RetNetConfig.from_name(preset)
    kw = peers.fla_retnet_kwargs(preset)
    assert (kw["hidden_size"], kw["num_hidden_layers"], kw["num_heads"]) == (cfg.d_model, cfg.n_layers, cfg.n_heads)
    assert kw["vocab_size"] == V and kw["tie_word_embeddings"] is False and kw["intermediate_size"] % 8 == 0
    key_dim, value_dim = kw["hidden_size"] * kw["expand_k"], kw["hidden_size"] * kw["expand_v"]
    assert (key_dim, value_dim) == (cfg.d_model, cfg.value_dim)  # fla asserts these are integers
    assert key_dim // cfg.n_heads == cfg.qk_head_dim <= 256  # fla's rotary caps the qk head dim at 256
    n_fla = peers.fla_retnet_param_count(kw)
    targets = [_contract_params(cfg.d_model, cfg.n_layers)]
    try:
        import retnet

        with torch.device("meta"):
            targets.append(_count(retnet.RetNet(cfg)))
    except (ImportError, AttributeError):
        pass
    for ours in targets:
        assert abs(n_fla / ours - 1) < 0.02, (preset, n_fla, ours)


def test_fla_param_count_follows_the_module_layout():
    """Per block: 2 norms (d) + q,k (d*dk) + v,g,o (d*dv) + head norm (dv/H) + SwiGLU (3*d*f); plus 2*V*d + d."""
    kw = dict(hidden_size=8, num_heads=2, expand_k=1.0, expand_v=2.0, intermediate_size=16, num_hidden_layers=3,
              vocab_size=10)
    per_block = 2 * 8 + 2 * 8 * 8 + 3 * 8 * 16 + 16 // 2 + 3 * 8 * 16
    assert peers.fla_retnet_param_count(kw) == 3 * per_block + 2 * 10 * 8 + 8


FLA_OK, FLA_WHY = peers.fla_available()
needs_fla = pytest.mark.skipif(not FLA_OK, reason=FLA_WHY or "fla available")


@needs_fla
def test_fla_peer_decodes_and_matches_its_own_forward():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    peer = build_peer("fla-retnet", "tiny", torch.float32, dev)
    from retnet.config import RetNetConfig

    cfg = RetNetConfig.from_name("tiny")
    assert peer.n_params == peers.fla_retnet_param_count(peers.fla_retnet_kwargs("tiny"))
    assert abs(peer.n_params / _contract_params(cfg.d_model, cfg.n_layers) - 1) < 0.02
    B, T = 2, 6
    peer.prefill_state(B, T)
    assert peer.step().shape == (B, 1, V) and torch.isfinite(peer.step()).all()
    ids = torch.randint(0, V, (B, T), device=dev)
    with torch.no_grad():
        full = peer.model(input_ids=ids).logits
    peer.prefill_state(B, 0)
    steps = torch.cat([peer.step(ids[:, t]) for t in range(T)], dim=1)
    torch.testing.assert_close(steps, full, rtol=2e-3, atol=2e-3)


@needs_fla
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fla_prefilled_cache_has_the_structure_fla_builds_itself(dtype):
    """Decode T tokens through fla from an empty cache, and compare with the cache we pre-fill at T: same cache
    class, per-layer state keys, tensor shapes/dtypes and seen-token counts; then a recurrent state stays put."""
    torch.manual_seed(0)
    peer = build_peer("fla-retnet", "tiny", dtype, "cuda")
    B, T = 2, 5
    peer.prefill_state(B, 0)
    for _ in range(T):
        peer.step(torch.randint(0, V, (B,), device="cuda"))
    real = peer.cache
    peer.prefill_state(B, T)
    ours = peer.cache
    n_layers = len(peer.model.model.layers)
    assert type(ours) is type(real) and len(ours) == len(real) == n_layers
    for i in range(n_layers):
        assert ours.get_seq_length(i) == real.get_seq_length(i) == T
        assert set(ours[i]) == set(real[i])
        for key, value in real[i].items():
            if value is None:
                assert ours[i][key] is None, (i, key)
            else:
                assert ours[i][key].shape == value.shape and ours[i][key].dtype == value.dtype, (i, key)
    first = peer.state_bytes()
    assert first == n_layers * B * real[0]["recurrent_state"][0].numel() * 4  # float32 state, whatever the dtype
    assert peer.state_bytes_at(B, T) == first
    for _ in range(3):
        assert torch.isfinite(peer.step()).all()
    assert peer.state_bytes() == first and peer.pos == T + 3 and peer.cache.get_seq_length(0) == T + 3


@needs_torchscale
def test_torchscale_id_buffer_grows_past_its_headroom(monkeypatch):
    monkeypatch.setattr(ts_mod, "TOKEN_HEADROOM", 1)
    peer = build_peer("torchscale-retnet", "tiny", torch.float32, "cpu")
    peer.prefill_state(1, 3)
    for _ in range(6):
        logits = peer.step()
    assert peer.tokens.shape[1] > peer.pos and torch.equal(peer.tokens[:, peer.pos], logits[:, -1].argmax(-1))


def test_timm_present_and_torchscale_missing_is_still_reported(monkeypatch):
    """With timm installed (as on the GPU image), a failing torchscale import must surface as 'not installed'."""
    import types as _types

    fake = {n: _types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers")}
    for n, m in fake.items():
        monkeypatch.setitem(sys.modules, n, m)
    for mod in [m for m in sys.modules if m == "torchscale" or m.startswith("torchscale.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setitem(sys.modules, "torchscale", None)
    ok, why = peer_available("torchscale-retnet")
    assert not ok and why.startswith("torchscale not installed"), why


@needs_torchscale
def test_torchscale_trains_in_its_chunkwise_form_like_its_parallel_form():
    """The paper's training pipeline (Table 4): torchscale's RetNet runs its chunkwise recurrent form when trained
    through the suite (its first chunk equals the parallel form; later chunks do not, torchscale 0.3.0's known
    chunkwise normalisation discrepancy, microsoft/torchscale issue #77: the rows time the published code as it is),
    and both peers' training steps give finite gradients through the suite's contestant."""
    from retnet_bench.baselines.peers import build_torchscale_for_training
    from retnet_bench.suites.contestants.spec import BuildArgs, get_spec

    torch.manual_seed(0)
    chunked = build_torchscale_for_training("retnet", "tiny", torch.float64, "cpu", chunk_size=16)
    whole = build_torchscale_for_training("retnet", "tiny", torch.float64, "cpu", chunk_size=16)
    whole.load_state_dict(chunked.state_dict())
    whole.chunkwise_recurrent = False
    ids = torch.randint(0, V, (2, 48))
    a, b = chunked(ids)[0], whole(ids)[0]  # (B, T, V)
    torch.testing.assert_close(a[:, :16], b[:, :16], rtol=1e-6, atol=1e-8)
    assert (a[:, 16:] - b[:, 16:]).abs().max() > 1e-6  # the chunked path really ran for the later chunks
    for name in ("torchscale-retnet", "torchscale-transformer"):
        spec = get_spec(name)
        c = spec.build(spec, BuildArgs("tiny", "torchscale", torch.device("cpu"), torch.float32, chunk_size=16,
                                       use_graph=False, scenario="train"))
        logits, _ = c.model(torch.randint(0, V, (2, 40)))
        c._lm_loss(logits, torch.randint(0, V, (2, 40))).backward()
        grads = [p.grad for p in c.model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads) and "forward + backward" in c.notes
