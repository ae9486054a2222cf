"""The "fla-graphs" chunk kernel: fla's retention replayed from CUDA graphs in the training step.

GPU: the graphed model trains exactly like the eager `fla` one (outputs, loss and every gradient, over several steps
with fresh data, so the static buffers are refilled), on the engine too. CPU: the replay-order guard (a shared
memory pool is only safe in capture order), with the captured graphs replaced by the torch kernel: what is tested
there is the guard's bookkeeping, not the graphs; and the engine's refusal of checkpointing and compile.
"""
from __future__ import annotations

import pytest
import torch

import retnet
from retnet.kernels.chunk import ChunkKernelUnavailable, chunk_retention
from retnet.kernels.chunk_graphs import GraphOrderError, RetentionGraphs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: CUDA graphs of fla's kernels")


def _fla_missing() -> bool:
    try:
        import fla.ops.simple_gla  # noqa: F401
    except Exception:
        return True
    return False


# ---------------------------------------------------------------------------------------------- the order guard
class _TorchKernelGraphs(RetentionGraphs):
    """The guard of RetentionGraphs over the torch kernel instead of captured graphs (CPU)."""

    captures = 0

    def _capture(self, key, q, k, v, log_gamma) -> None:
        fn = lambda q, k, v: chunk_retention(q, k, v, log_gamma, kernel="torch", chunk_size=16)[0]  # noqa: E731
        self._fns = tuple(fn for _ in range(self.n_layers))
        self._key, self._next, self._awaiting_backward = key, 0, False
        self.captures += 1


def _inputs(T: int = 32):
    return [torch.randn(1, T, 2, d, requires_grad=True) for d in (8, 8, 16)]


def _pass(g: RetentionGraphs, layers: range, T: int = 32) -> torch.Tensor:
    lam = retnet.retention.log_decay(2, "paper")
    return sum(g(i, *_inputs(T), lam).sum() for i in layers)


def test_a_step_after_a_step_replays_without_capturing_again():
    g = _TorchKernelGraphs(3)
    for _ in range(3):  # forward in layer order, then its backward
        _pass(g, range(3)).backward()
    assert g.captures == 1


def test_a_second_forward_before_the_backward_is_refused():
    g = _TorchKernelGraphs(3)
    loss = _pass(g, range(3))
    with pytest.raises(GraphOrderError, match="after the last pass's backward"):
        _pass(g, range(3))
    loss.backward()  # the backward reaches layer 0: a new pass may begin
    _pass(g, range(3)).backward()


def test_layers_out_of_order_are_refused():
    g = _TorchKernelGraphs(3)
    with pytest.raises(GraphOrderError, match="expected layer 1"):
        _pass(g, [0, 2])


def test_a_new_shape_is_captured_again_at_layer_0_only():
    g = _TorchKernelGraphs(2)
    _pass(g, range(2)).backward()
    _pass(g, range(2), T=48).backward()
    assert g.captures == 2
    lam = retnet.retention.log_decay(2, "paper")
    g(0, *_inputs(48), lam)
    with pytest.raises(GraphOrderError, match="with q"):
        g(1, *_inputs(32), lam)


def test_the_recipe_refuses_the_graphed_kernel_with_checkpointing_or_compile():
    from retnet_bench.suites.training.recipe import ModelRecipe

    recipe = ModelRecipe("retnet", "tiny", kernel="fla-graphs")
    recipe.check_engine_settings("none", "none")  # no exception: it trains
    with pytest.raises(ChunkKernelUnavailable, match="checkpointing 'none'"):
        recipe.check_engine_settings("every-8", "none")
    with pytest.raises(ChunkKernelUnavailable, match="compile 'none'"):
        recipe.check_engine_settings("none", "blocks")
    ModelRecipe("retnet", "tiny", kernel="fla").check_engine_settings("full", "blocks")


def test_the_model_takes_the_kernel_by_name_and_a_forward_without_grad_runs_eagerly(monkeypatch):
    """No grad (prefill, evaluation): the graphs are not used; on the CPU the call goes to fla, which says why not."""
    model = retnet.RetNet(retnet.RetNetConfig.from_name("tiny", chunk_kernel="fla-graphs"))
    assert model.chunk_kernel == "fla-graphs"
    with torch.no_grad(), pytest.raises(RuntimeError, match="unavailable"):
        model(torch.zeros(1, 8, dtype=torch.long), mode="chunkwise")


# -------------------------------------------------------------------------------------------------- on the GPU
def _model(kernel: str) -> retnet.RetNet:
    torch.manual_seed(0)
    cfg = retnet.RetNetConfig.from_name("small", chunk_kernel=kernel, vocab_size=512)
    return retnet.RetNet(cfg).cuda().to(torch.bfloat16)


@cuda
@pytest.mark.skipif(_fla_missing(), reason="fla-core not installed: pip install fla-core==0.6.0")
def test_the_graphed_model_trains_bit_for_bit_like_eager_fla():
    eager, graphed = _model("fla"), _model("fla-graphs")
    graphed.load_state_dict(eager.state_dict())
    for step in range(3):  # fresh ids every step: the static inputs are refilled, not reused
        ids = torch.randint(0, 512, (2, 256), device="cuda", generator=torch.Generator("cuda").manual_seed(step))
        losses, grads = [], []
        for m in (eager, graphed):
            m.zero_grad(set_to_none=True)
            logits = m(ids[:, :-1], mode="chunkwise")
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            losses.append(loss.detach())
            grads.append({n: p.grad for n, p in m.named_parameters()})
        assert torch.equal(losses[0], losses[1]), step
        for name, g in grads[0].items():
            assert torch.equal(g, grads[1][name]), (step, name)
    assert graphed._retention_graphs is not None and graphed._retention_graphs._fns is not None


@cuda
@pytest.mark.skipif(_fla_missing(), reason="fla-core not installed: pip install fla-core==0.6.0")
def test_the_graphed_model_refuses_a_second_forward_before_backward_and_runs_prefill_eagerly():
    m = _model("fla-graphs")
    ids = torch.randint(0, 512, (1, 128), device="cuda")
    loss = m(ids, mode="chunkwise").float().sum()
    with pytest.raises(GraphOrderError):
        m(ids, mode="chunkwise")
    loss.backward()
    with torch.no_grad():  # eager fla: equal to the graphed forward's logits up to fla's own determinism
        ref = _model("fla")(ids, mode="chunkwise")
        out = m(ids, mode="chunkwise")
        logits, state = m.prefill(ids, last_only=False)
    assert torch.equal(out, ref) and torch.equal(logits, out)
    m(ids, mode="chunkwise").float().sum().backward()  # graphs still in order after the no-grad calls


@cuda
@pytest.mark.skipif(_fla_missing(), reason="fla-core not installed: pip install fla-core==0.6.0")
def test_an_engine_point_with_the_graphed_kernel_trains_like_fla():
    from retnet_bench.suites.training import TrainSettings, run_point
    from retnet_bench.suites.training.recipe import ModelRecipe

    settings = TrainSettings(seq_len=512, steps=3, warmup_steps=1, compute_dtype="bfloat16", nvml_sampling=False)
    points = {k: run_point(1, ModelRecipe("retnet", "small", kernel=k, overrides={"vocab_size": 512}), settings,
                           device_type="cuda") for k in ("fla", "fla-graphs")}
    fields = {k: p.row_fields(settings) for k, p in points.items()}
    assert fields["fla-graphs"]["status"] == "ok", fields["fla-graphs"].get("error")
    assert points["fla-graphs"].ranks[0].losses == points["fla"].ranks[0].losses
    checkpointed = TrainSettings(seq_len=512, steps=1, warmup_steps=0, checkpointing="full", nvml_sampling=False)
    p = run_point(1, ModelRecipe("retnet", "small", kernel="fla-graphs", overrides={"vocab_size": 512}), checkpointed,
                  device_type="cuda")
    assert p.row_fields(checkpointed)["status"] == "error" and "fla-graphs" in p.row_fields(checkpointed)["error"]
