"""RetNet: parallel == chunkwise == recurrent (float64), prefill + step == parallel, chunkwise grads == parallel grads."""

import pytest
import torch

from retnet import RetNet, RetNetConfig
from retnet.kernels import recurrent_step_torch
from retnet.retention import _causal_decay, chunkwise_retention, log_decay, parallel_retention, position_tables, rotary_angle

VOCAB = 53


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def _model(weight_std: float = 0.02, **overrides) -> RetNet:
    torch.manual_seed(0)
    cfg = RetNetConfig.from_name("tiny", vocab_size=VOCAB, **{"n_heads": 4, **overrides})
    model = RetNet(cfg).double()
    if weight_std != 0.02:  # larger weights push |q.k| sums past sqrt(c_n): both branches of the normaliser
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, weight_std)
    return model


def _retention_inputs(B, H, T, dk, dv, scale, decay="paper"):
    torch.manual_seed(1)
    q, k = (torch.randn(B, H, T, dk, dtype=torch.float64) * scale for _ in range(2))
    v = torch.randn(B, H, T, dv, dtype=torch.float64)
    lam = log_decay(H, decay)
    _, _, row_norm = position_tables(torch.arange(T), rotary_angle(dk), lam, torch.float64)
    return q, k, v, lam, row_norm


@pytest.mark.parametrize("scale", [0.05, 3.0])
def test_retention_kernels_agree_and_normaliser_branches(scale):
    """Retention level: both normaliser branches occur at scale 3; parallel == chunkwise == torch step loop."""
    B, H, T, dk, dv = 2, 3, 19, 8, 6
    q, k, v, lam, row_norm = _retention_inputs(B, H, T, dk, dv, scale)
    ref = parallel_retention(q, k, v, lam, row_norm)
    for chunk in (1, 4, 7, 19, 64):
        out, _, _ = chunkwise_retention(q, k, v, lam, row_norm, chunk_size=chunk)
        assert _rel(out, ref) <= 1e-12, chunk
    # unrotated step reference with identity rotation and k_scale 1 on the same inputs
    kv, k_sum = torch.zeros(B, H, dk, dv, dtype=torch.float64), torch.zeros(B, H, dk, dtype=torch.float64)
    cos, sin = torch.ones(dk // 2, dtype=torch.float64), torch.zeros(dk // 2, dtype=torch.float64)
    steps = [recurrent_step_torch(q[:, :, t], k[:, :, t], v[:, :, t], kv, k_sum, k_sum, cos, sin, lam, row_norm[:, t], 1.0)
             for t in range(T)]
    assert _rel(torch.stack(steps, dim=2), ref) <= 1e-12
    decay = torch.exp(torch.arange(T, dtype=torch.float64).flip(0)[None, :, None] * lam[:, None, None])  # (H, T, 1)
    assert torch.allclose(kv, (k * decay).transpose(-1, -2) @ (v))  # state = sum_m gamma^(T-1-m) k_m^T v_m
    u = ((q @ k.transpose(-1, -2)) * _causal_decay(T, lam, torch.float64)).sum(-1).abs()  # (B, H, T)
    assert (u < row_norm).any()  # the sqrt(c_n) branch of max(|u|, sqrt(c_n)) ...
    assert (u > row_norm).any().item() == (scale > 1)  # ... and the |u| branch at scale 3


@pytest.mark.parametrize(
    "B,T,chunk,overrides",
    [
        (2, 37, 8, {}),
        (3, 13, 1, {"decay": "torchscale", "head_norm": "rmsnorm"}),
        (2, 9, 32, {"norm": "rmsnorm", "ffn": "glu", "decay": "torchscale"}),
        (1, 24, 6, {"head_norm": "rmsnorm", "bias": True, "ffn_activation": "swish"}),
    ],
)
@pytest.mark.parametrize("weight_std", [0.02, 0.5])
def test_three_forms_match_float64(B, T, chunk, overrides, weight_std):
    model = _model(weight_std, **overrides)
    ids = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        parallel = model(ids, mode="parallel")
        chunkwise = model(ids, mode="chunkwise", chunk_size=chunk)
        recurrent = model(ids, mode="recurrent")
    assert parallel.shape == (B, T, VOCAB)
    assert _rel(chunkwise, parallel) <= 1e-9
    assert _rel(recurrent, parallel) <= 1e-9


@pytest.mark.parametrize("split,chunk", [(1, 4), (10, 4), (17, 32), (23, 1)])
def test_prefill_then_step_matches_parallel(split, chunk):
    model = _model(0.5, decay="torchscale")
    B, T = 2, 24
    ids = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        parallel = model(ids, mode="parallel")
    state = model.init_state(B)
    assert state.kv.dtype == torch.float64 and state.pos.item() == 0
    logits, returned = model.prefill(ids[:, :split], state=state, chunk_size=chunk, last_only=False)
    assert returned is state and state.pos.item() == split
    assert _rel(logits, parallel[:, :split]) <= 1e-9
    kv_storage = state.kv.data_ptr()
    outputs = [logits[:, -1:]]
    for t in range(split, T):
        next_ids = ids[:, t] if t % 2 else ids[:, t : t + 1]  # (B,) and (B, 1) both accepted
        step_logits, state = model.step(next_ids, state)
        assert step_logits.shape == (B, 1, VOCAB)
        outputs.append(step_logits)
    assert state.kv.data_ptr() == kv_storage and state.pos.item() == T  # updated in place
    assert _rel(torch.cat(outputs, dim=1), parallel[:, split - 1 :]) <= 1e-9


def test_prefill_continues_from_state_and_last_only():
    model = _model(0.5)
    ids = torch.randint(0, VOCAB, (2, 21), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        parallel = model(ids, mode="parallel")
    last, state = model.prefill(ids[:, :8], chunk_size=3)
    assert last.shape == (2, 1, VOCAB)
    rest, state = model.prefill(ids[:, 8:], state=state, chunk_size=5, last_only=False)  # second prompt piece
    assert _rel(rest, parallel[:, 8:]) <= 1e-9 and state.pos.item() == 21


def test_chunkwise_gradients_match_parallel():
    model = _model(0.5, ffn="glu")
    ids = torch.randint(0, VOCAB, (2, 15), generator=torch.Generator().manual_seed(5))
    grads = {}
    for mode, chunk in (("parallel", 0), ("chunkwise", 4), ("chunkwise", 1)):
        model.zero_grad()
        logits = model(ids, mode=mode, chunk_size=max(chunk, 1))
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        grads[(mode, chunk)] = [p.grad.clone() for p in model.parameters()]
    ref = grads[("parallel", 0)]
    assert any(g.abs().max() > 0 for g in ref)
    for key in (("chunkwise", 4), ("chunkwise", 1)):
        for g, r in zip(grads[key], ref):
            assert ((g - r).abs().max() / r.abs().max().clamp(min=1e-30)).item() <= 1e-9


def test_input_validation_and_kernel_choice():
    model = _model()
    with pytest.raises(ValueError):
        model(torch.zeros(2, 3, dtype=torch.long), mode="bogus")
    with pytest.raises(ValueError):
        model(torch.zeros(1, model.cfg.max_seq_len + 1, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(3, dtype=torch.long))
    assert model.step_kernel == "torch"  # CPU
    model.step_kernel = "triton"
    assert model.step_kernel == "triton"
    with pytest.raises(ValueError):
        model.step_kernel = "cuda-magic"


def test_bfloat16_model_is_finite():
    torch.manual_seed(0)
    model = RetNet(RetNetConfig.from_name("tiny")).to(torch.bfloat16)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 12))
    with torch.no_grad():
        ref = model(ids, mode="chunkwise", chunk_size=4)
        _, state = model.prefill(ids[:, :6])
        assert state.kv.dtype == torch.float32
        logits, _ = model.step(ids[:, 6], state)
    assert torch.isfinite(ref).all() and torch.isfinite(logits).all()
    assert _rel(logits[:, 0].float(), ref[:, 6].float()) < 5e-2
