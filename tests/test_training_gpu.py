"""GPU only: a timed training step and the copy of its ids never make the host wait for the GPU.

The engine's loop (suites/training/launch.py) feeds each step with `batch_on_device` (a CPU test checks that it
does, before the step's timer starts) and syncs once, after the timed steps. A sync inside the loop drains the GPU's
queue at every step, so that every stretch where the host issues work more slowly than the kernels run becomes step
time; the model with more host work per step pays more. These tests run warmed-up steps of the engine's model,
optimizer and copy (FSDP2 on one rank, bf16 compute, AdamW, the GPU kernels), and of the forward + backward path,
under torch's sync debug mode set to "error", which raises on the synchronising CUDA calls it knows (a prototype:
torch's docs say it does not cover every operation, torch.distributed's among them).
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: a host-device sync")


def _engine(family: str, kernel: str):
    """The "small" model set up as a one-rank table4 point, warmed up: (forward, optimizer, batch maker, device)."""
    from retnet_bench.suites.training.fsdp import init_distributed
    from retnet_bench.suites.training.launch import prepare_for_training
    from retnet_bench.suites.training.recipe import ModelRecipe, build_model, model_forward
    from retnet_bench.suites.training.step import TrainSettings, synthetic_batch, train_step
    from retnet_bench.suites.transfer import batch_on_device

    device = torch.device("cuda", torch.cuda.current_device())
    settings = TrainSettings(seq_len=1024, chunk_size=256, steps=3, warmup_steps=2, compute_dtype="bfloat16")
    recipe = ModelRecipe(family, "small", kernel=kernel, overrides={"vocab_size": 512})
    mesh = init_distributed(device, 0, 1, settings.collective_timeout_s, dist.HashStore())
    torch.manual_seed(0)
    model = build_model(recipe, device, torch.float32, settings.torch_compute_dtype)
    opt = prepare_for_training(model, recipe, settings, mesh, device)
    fwd = lambda ids: model_forward(model, recipe, ids, settings.chunk_size)  # noqa: E731
    batch = lambda s: synthetic_batch(s, settings, 512, 1, 0)  # noqa: E731
    for s in range(settings.warmup_steps):  # autotuning, FSDP's lazy init: they may sync
        train_step(fwd, opt, batch_on_device(batch(s), device))
    torch.cuda.synchronize()
    return fwd, opt, batch, device, train_step, batch_on_device


@pytest.mark.parametrize("family,kernel", [("retnet", "fla"), ("retnet", "fla-graphs"), ("transformer", "sdpa-cudnn")])
def test_timed_training_steps_and_their_batch_copies_never_sync(family, kernel):
    from retnet_bench.suites.training.fsdp import shutdown_distributed

    fwd, opt, batch, device, train_step, batch_on_device = _engine(family, kernel)
    try:
        torch.cuda.set_sync_debug_mode("error")
        try:
            losses = [train_step(fwd, opt, batch_on_device(batch(10 + s), device)) for s in range(3)]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(torch.stack(losses)).all()
        # the control: the copy the loop used to make (pageable memory) is a sync, and the debug mode sees it
        torch.cuda.set_sync_debug_mode("error")
        try:
            with pytest.raises(RuntimeError, match="synchroniz"):
                batch(20).to(device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    finally:
        shutdown_distributed()


@pytest.mark.parametrize("impl,kernel", [("retnet-chunkwise", "fla"), ("transformer", "sdpa-cudnn")])
def test_forward_backward_steps_draw_their_ids_without_a_sync(impl, kernel):
    """The forward + backward path (the paper's pipeline, the peers, `optimizer = false`) draws each step's ids on the
    CPU inside the timed loop (`random_ids`); they reach the GPU without a sync, as the engine's batches do."""
    from retnet_bench.suites.contestants.spec import BuildArgs, get_spec

    device = torch.device("cuda", torch.cuda.current_device())
    spec = get_spec(impl)
    # "small" (head dim 64): fla refuses the tiny preset's 32 on Hopper (tests/test_fla_head_dims.py)
    c = spec.build(spec, BuildArgs("small", kernel, device, torch.bfloat16, chunk_size=128, use_graph=False,
                                   scenario="train"))
    try:
        c.train_step(2, 256)  # warm-up: autotuning, lazy allocations
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(2):
                c.train_step(2, 256)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    finally:
        c.close()
