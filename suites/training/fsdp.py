"""Process group, device mesh and FSDP2 sharding (torch.distributed.fsdp.fully_shard, torch >= 2.6 public API).

NCCL on GPUs (one GPU per rank, chosen by LOCAL_RANK), gloo on CPUs with an explicit CPU device mesh: a gloo group
used through a mesh of another device type crashes on GPU machines, so the mesh is always built for the device the
ranks compute on. Every collective has a timeout (init_process_group(timeout=...)): a rank whose peer died fails
instead of hanging.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

# What the lent multi-GPU machines need (KINDS.md there): NVLink SHARP / multicast off in NCCL, PyTorch and NVSHMEM.
NCCL_ENV_DEFAULTS = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def set_nccl_env() -> None:
    """Set the NCCL defaults this project needs where the user has not set them (children inherit them)."""
    for key, value in NCCL_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def backend_for(device_type: str) -> str:
    if device_type == "cuda":
        return "nccl"
    if device_type == "cpu":
        return "gloo"
    raise ValueError(f"device_type={device_type!r}; expected 'cuda' or 'cpu'")


def rank_device(device_type: str, local_rank: int) -> torch.device:
    """This rank's device; on CUDA it also becomes the current device (NCCL and the allocator use it)."""
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: torch.device, rank: int, world_size: int, timeout_s: float,
                     store: dist.Store | None = None, tp: int = 1) -> DeviceMesh:
    """Default process group + the device mesh: 1-D data-parallel ("dp",), or with tp > 1 2-D ("dp", "tp") with
    the tp ranks of one replica consecutive (torchtitan's layout: tensor parallelism within a node). Launched ranks
    rendezvous through the env vars the elastic agent sets (store None); one in-process rank passes a HashStore."""
    set_nccl_env()
    backend = backend_for(device.type)
    kwargs = dict(backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
    if store is not None:
        kwargs["store"] = store
    if backend == "nccl":
        kwargs["device_id"] = device  # eager communicator for this GPU, no guess from the rank
    dist.init_process_group(**kwargs)
    if tp == 1:
        return init_device_mesh(device.type, (world_size,), mesh_dim_names=("dp",))
    return init_device_mesh(device.type, (world_size // tp, tp), mesh_dim_names=("dp", "tp"))


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_model(model: nn.Module, mesh: DeviceMesh, param_dtype: torch.dtype) -> nn.Module:
    """FSDP2 as torchtitan applies it: one fully_shard per block (model.layers, checkpoint-wrapped or not), then the
    root, which takes the rest (embedding, final norm, head). Parameters stay fp32 (master weights, sharded);
    compute sees them cast to `param_dtype`; gradients are reduce-scattered in fp32.

    Blocks reshard after forward (their bf16 copy is freed and re-gathered for backward: memory scales with 1/N),
    except the last, whose backward comes right after the forward (torchtitan's optimization: one all-gather less
    per step). The root does not reshard either (torchtitan's does: it saves memory at vocabularies of 128k and more);
    backward needs the head first thing, and at these vocabularies it is small next to the blocks."""
    mp = MixedPrecisionPolicy(param_dtype=None if param_dtype == torch.float32 else param_dtype,
                              reduce_dtype=torch.float32)
    if mesh.mesh_dim_names and "tp" in mesh.mesh_dim_names:  # 2-D: FSDP over the replicas, TP applied before
        mesh = mesh["dp"]
    for i, block in enumerate(model.layers):
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(model.layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    return model


def collective_bytes_per_step(model: nn.Module, param_bytes: int = 2, reduce_bytes: int = 4) -> dict[str, int]:
    """Bytes one optimizer step (one micro-batch) puts through FSDP2's collectives under `shard_model`'s sharding,
    as nccl-tests' sizes S (an all-gather's output, a reduce-scatter's input), before FSDP2's padding to a multiple
    of the ranks: every block but the last is all-gathered twice (forward, and again for backward: it resharded after
    forward); the last block and the root's own parameters (embedding, final norm, head) once (they stay gathered
    from forward to backward); every gradient is reduce-scattered once. `model` sharded or not (a DTensor's numel is
    the whole tensor's)."""
    per_block = [sum(p.numel() for p in block.parameters()) for block in model.layers]
    total = sum(p.numel() for p in model.parameters())
    gathered = 2 * sum(per_block[:-1]) + per_block[-1] + (total - sum(per_block))
    return {"all_gather": gathered * param_bytes, "reduce_scatter": total * reduce_bytes}


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (SUM then divide: gloo has no AVG)."""
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()
