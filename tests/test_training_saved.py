"""The saved-tensor census (suites/training/saved.py): what a training forward keeps for backward, per module, with
each storage counted once and weights left out. Hand counts on modules whose saved tensors are known."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from retnet_bench.suites.training.saved import SavedTensorCensus


class Fused(nn.Module):
    """One projection whose output is split into views (the fused q|k|v pattern), then two ops that save them."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, 3 * d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.proj(x).chunk(3, dim=-1)  # three views of one (T, 3d) storage
        return (a * b) * c                       # mul saves a and b, then (a*b) and c


class Net(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Fused(d), Fused(d)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return F.gelu(x)  # saved by the root ("")


def test_census_counts_each_storage_once_skips_weights_and_names_the_module():
    T, d = 8, 4
    net = Net(d)
    x = torch.randn(T, d, requires_grad=True)  # a leaf that requires grad, but an activation, not a weight
    with SavedTensorCensus(net) as census:
        y = net(x)
    y.sum().backward()  # the hooks leave autograd intact
    f4 = 4  # bytes per fp32 value
    # layer 0: proj saves its input x (T x d) and its weight (skipped); the mul ops save the views of the
    # projection output (one storage, T x 3d) and the product a*b (T x d)
    # layer 1: proj saves its input (layer 0's output, T x d), then the same as layer 0
    by = census.by_module()
    assert by["layers.0"] == T * 3 * d * f4 + T * d * f4
    assert by["layers.0.proj"] == T * d * f4
    assert by["layers.1.proj"] == T * d * f4
    assert by["layers.1"] == T * 3 * d * f4 + T * d * f4
    assert by[""] == T * d * f4  # gelu's input: layer 1's output
    assert census.total_bytes() == sum(by.values())
    assert {e.module for e in census.block_entries(1)} == {"layers.1", "layers.1.proj"}
    # views of one storage appear as entries, but only the first carries bytes
    views = [e for e in census.entries if e.module == "layers.0" and e.shape == (T, d)]
    assert len(views) >= 3 and sum(e.nbytes > 0 for e in views) == 2  # the projection storage and a*b


class _SavesAViewOfItsInput(torch.autograd.Function):
    """The fused read-out's pattern (retnet.kernels.gate._NormGate): forward reshapes its input and saves the view."""

    @staticmethod
    def forward(ctx, o):
        o2 = o.reshape(-1, o.shape[-1]).contiguous()  # made without grad: a leaf that requires grad, like a weight
        ctx.save_for_backward(o2)
        ctx.shape = o.shape
        return o2 * 2

    @staticmethod
    def backward(ctx, grad):
        return (grad * 2).view(ctx.shape)


class ReadOut(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.proj(x).view(x.shape[0], 2, -1)  # (T, 2, d/2)
        return _SavesAViewOfItsInput.apply(o)


def test_census_counts_what_a_custom_function_saves_of_its_input():
    """Regression: the census took any leaf that requires grad for a weight, and a view a custom Function makes of
    its input inside forward is one. It missed RetNet's retention output (2d per token and layer, 4.3 GB at 6.7B),
    which the allocator showed: the forward kept 4.3 GB more than the census listed."""
    T, d = 8, 4
    net = ReadOut(d)
    with SavedTensorCensus(net) as census:
        net(torch.randn(T, d))
    by = census.by_module()
    assert by[""] == T * d * 4  # proj's output, saved (as a view) by the function: counted
    assert by["proj"] == T * d * 4  # proj's input


def test_census_removes_its_hooks():
    net = Net(4)
    with SavedTensorCensus(net) as census:
        net(torch.randn(2, 4))
    n = len(census.entries)
    net(torch.randn(2, 4, requires_grad=True))
    assert len(census.entries) == n
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in net.modules())


def test_memory_profile_script_on_the_cpu(tmp_path):
    """scripts/profile_train_memory.py --cpu-check: one block's census times the layer count is what all blocks
    saved (identical blocks), up to what blocks share (rotation tables, decay masks): layer 0 holds its first count."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "profile_train_memory.py"
    env = {**os.environ, "OUT": str(tmp_path), "MASTER_PORT": "29541"}
    subprocess.run([sys.executable, str(script), "--cpu-check", "--preset", "tiny", "--seq", "64",
                    "--family", "retnet:torch", "transformer:sdpa-math"], env=env, check=True, capture_output=True)
    results = json.loads((tmp_path / "train_memory.json").read_text())
    assert [r["family"] for r in results] == ["retnet", "transformer"]
    for r in results:
        assert "error" not in r, r
        assert r["layer1_bytes"] > 0
        assert 0.8 < r["layer1_bytes"] * r["n_layers"] / r["saved_layers_bytes"] <= 1.0
        modules = set(r["layer1_by_module"])
        assert {"ln1", "ln2"} <= modules or {"retention_norm", "ffn_norm"} <= modules
    # Hand count of one tiny Transformer block under FSDP2 (fp32 on the CPU, so 2 units per d-wide tensor; T=64,
    # 2 heads of 32): LayerNorm inputs 2 + 2 and their mean/rstd 4 x 0.03125; the q|k|v projection's input 2; the
    # math attention's q, k, v 2 + 2 + 2 and its probabilities 2 x 64 x 64 x 4 B / (64 x 128 B) = 4; wo's input 2;
    # fc1's input 2; GELU's input (4d) 8; fc2's input 8. = 36.125. Blocks run after FSDP2 freed an earlier block's
    # parameters, whose addresses the allocator hands on: a census that skipped those lost tensors here (34.125).
    assert results[1]["layer1_d_units"] == pytest.approx(36.125, abs=1e-3)


def test_a_finished_modules_parameter_address_does_not_hide_a_later_activation():
    """FSDP2 frees a block's unsharded parameters after its forward and the allocator hands their memory to later
    activations: a storage is a weight only while its module runs. Simulated with one buffer seen first as module
    a's parameter, then saved as an activation after a has returned."""
    buf = torch.randn(16)

    class A(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(buf[:4])  # shares buf's storage

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w  # saves x and the parameter: the parameter is skipped

    net = nn.ModuleDict(dict(a=A()))
    x = torch.randn(4, requires_grad=True)
    with SavedTensorCensus(net) as census:
        y = net["a"](x)
        y = y * buf[4:8].view(4)  # buf is not a leaf requiring grad: saved under the root, while a is not running
    assert census.by_module().get("", 0) == buf.untyped_storage().nbytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the allocator's count of what the forward keeps")
@pytest.mark.parametrize("family,kernel", [("retnet", "fla"), ("transformer", "sdpa")])
def test_census_total_is_what_the_allocator_says_the_forward_keeps(family, kernel):
    """The census's total (every storage the forward saved for backward) against the caching allocator: memory
    allocated after a training forward, less before it and less the logits, is what autograd keeps. The census
    missed RetNet's retention output until 2026-11-29; the allocator showed it (4.3 GB at 6.7B)."""
    from retnet_bench.suites.training.recipe import ModelRecipe, build_model, model_forward

    device = torch.device("cuda")
    recipe = ModelRecipe(family, "small", kernel=kernel, overrides={"vocab_size": 512})
    torch.manual_seed(0)
    model = build_model(recipe, device, torch.bfloat16, torch.bfloat16)
    ids = torch.randint(0, 512, (1, 2048), device=device)
    with torch.no_grad():  # caches (rotation constants) exist before the count
        model_forward(model, recipe, ids, 512)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(device)
    with SavedTensorCensus(model) as census:
        logits = model_forward(model, recipe, ids, 512)
    torch.cuda.synchronize()
    kept = torch.cuda.memory_allocated(device) - before - logits.untyped_storage().nbytes()
    assert census.total_bytes() == pytest.approx(kept, rel=0.02)
    logits.float().sum().backward()
