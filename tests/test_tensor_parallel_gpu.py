"""Tensor parallelism with the GPU kernels (fla's chunk retention, the Triton rotation and read-out, SDPA), on ONE
GPU: two processes share it and talk through gloo (NCCL refuses two ranks on one device; gloo all-reduces CUDA
tensors, which is all that tensor parallelism without FSDP needs). What it checks is that the fused kernels take a
rank's share of the heads (its slice of the decay tables, its head count) and give one process's loss and gradients.
The multi-GPU engine path (NCCL, FSDP2 over the replicas) is tested on the CPU in test_training_distributed.py."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the fused kernels under TP")

KERNELS = {"retnet": "fla", "transformer": "sdpa"}


def _loss_and_grad(family: str, tp_mesh=None, dtype: torch.dtype = torch.bfloat16) -> tuple[float, torch.Tensor]:
    """The model on cuda:0 (the same weights in every process; bf16 runs the fused kernels, fp32 the reference
    forms), one forward + backward on fixed ids: the loss and the embedding's gradient (a replicated parameter:
    every rank's must equal one process's)."""
    from retnet_bench.suites.training.recipe import ModelRecipe, build_model, model_forward
    from retnet_bench.suites.training.step import next_token_loss
    from retnet_bench.suites.training.tensor_parallel import apply_tensor_parallel

    device = torch.device("cuda", 0)
    recipe = ModelRecipe(family, "small", kernel=KERNELS[family], overrides={"vocab_size": 512})
    torch.manual_seed(0)
    model = build_model(recipe, device, dtype, dtype)
    if tp_mesh is not None:
        apply_tensor_parallel(model, recipe, tp_mesh)
    ids = torch.randint(0, 512, (1, 1025), device=device, generator=torch.Generator(device).manual_seed(1))
    loss = next_token_loss(model_forward(model, recipe, ids[:, :-1], 256), ids[:, 1:])
    loss.backward()
    embed = next(p for n, p in model.named_parameters() if "emb" in n)
    return loss.item(), embed.grad.float().cpu()


def _rank(rank: int, port: int, family: str, out: dict) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.cuda.set_device(0)
    try:
        out[rank] = _loss_and_grad(family, init_device_mesh("cuda", (2,), mesh_dim_names=("tp",)))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("family", ["retnet", "transformer"])
def test_two_tensor_parallel_ranks_on_one_gpu_give_one_process_loss_and_gradients(family):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(port, family, out), nprocs=2, join=True)
    loss, grad = _loss_and_grad(family)
    _, exact = _loss_and_grad(family, dtype=torch.float32)  # fp32, unfused: the reference for both bf16 runs

    def off(g: torch.Tensor) -> float:
        return ((g - exact).norm() / exact.norm()).item()

    for rank in (0, 1):
        tp_loss, tp_grad = out[rank]
        print(f"{family} rank {rank}: loss {tp_loss:.5f} vs {loss:.5f}; gradient off the fp32 reference by "
              f"{off(tp_grad):.4f} (two ranks) vs {off(grad):.4f} (one process)")
        assert tp_loss == pytest.approx(loss, rel=1e-2)
        # bf16 moves the gradient a few % from the fp32 reference whichever way it is computed (one process:
        # one GEMM per projection; two ranks: two partial GEMMs meet in a bf16 all-reduce). Two ranks must stay as
        # close to the reference as one process, within twice its distance: a wrong head slice (decay table, head
        # count) puts the gradient ~30% off (the CPU twin, broken on purpose), the loss alone barely moves.
        assert off(tp_grad) < 2 * off(grad) + 1e-3, (off(tp_grad), off(grad))
