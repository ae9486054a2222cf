"""Tensor parallelism (torch.distributed.tensor.parallel, DTensor) for the training engine: the paper trained its
6.7B and 13B models with it (Sec. 3.4). Megatron's split, as torchtitan writes it: in each block the projection into
the heads (and the FFN's first linear) is column-parallel, the projection out of them (and the FFN's second linear)
row-parallel, so a block costs two all-reduces forward and two backward; norms, embedding and head are replicated.

Each rank computes a contiguous share of the heads. A fused projection ([q | k | v | g] for RetNet, [q | k | v] for
the Transformer, [h | gate] for a GLU FFN) keeps its segments one after another, so its rows are first reordered to
[rank 0's share of every segment | rank 1's | ...]; a column-parallel split then hands each rank whole heads. The
function is unchanged: a test checks that tp ranks train with the same loss as one process.

    apply_tensor_parallel(model, recipe, mesh["tp"])   # before checkpointing and FSDP (torchtitan's order)
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from .recipe import ModelRecipe


def rank_major_rows(segments: list[int], tp: int) -> torch.Tensor:
    """Row order that turns [seg 0 | seg 1 | ...] into [rank 0's slice of each segment | rank 1's | ...]."""
    starts = torch.tensor([0] + segments[:-1]).cumsum(0).tolist()
    order = [torch.arange(start + r * size // tp, start + (r + 1) * size // tp)
             for r in range(tp) for start, size in zip(starts, segments)]
    return torch.cat(order)


@torch.no_grad()
def _reorder_rows(linear: nn.Linear, segments: list[int], tp: int) -> None:
    if tp == 1 or len(segments) == 1:
        return
    perm = rank_major_rows(segments, tp).to(linear.weight.device)
    linear.weight.copy_(linear.weight[perm])
    if linear.bias is not None:
        linear.bias.copy_(linear.bias[perm])


def _divides(tp: int, **counts: int) -> None:
    bad = {k: v for k, v in counts.items() if v % tp}
    if bad:
        raise ValueError(f"tensor parallelism tp={tp} must divide " + ", ".join(f"{k}={v}" for k, v in bad.items()))


def _retnet_block(block: nn.Module, tp: int, rank: int, mesh: DeviceMesh) -> None:
    ret, ffn = block.retention, block.ffn
    H, dk, dv = ret.n_heads, ret.dk, ret.dv
    f = ffn.fc_out.in_features
    _divides(tp, heads=H, ffn_dim=f)
    _reorder_rows(ret.qkvg, [H * dk, H * dk, H * dv, H * dv], tp)
    _reorder_rows(ffn.fc_in, [f, f] if ffn.glu else [f], tp)
    ret.n_heads, ret.heads = H // tp, slice(rank * H // tp, (rank + 1) * H // tp)
    parallelize_module(block, mesh, {"retention.qkvg": ColwiseParallel(), "retention.out_proj": RowwiseParallel(),
                                     "ffn.fc_in": ColwiseParallel(), "ffn.fc_out": RowwiseParallel()},
                       src_data_rank=None)  # every rank built the same weights: each keeps its slice, no scatter


def _transformer_block(block: nn.Module, tp: int, mesh: DeviceMesh) -> None:
    attn = block.attn
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    _divides(tp, heads=H, kv_heads=Hkv, ffn_dim=block.fc1.out_features)
    _reorder_rows(attn.wqkv, [H * D, Hkv * D, Hkv * D], tp)
    attn.n_heads, attn.n_kv_heads = H // tp, Hkv // tp
    parallelize_module(block, mesh, {"attn.wqkv": ColwiseParallel(), "attn.wo": RowwiseParallel(),
                                     "fc1": ColwiseParallel(), "fc2": RowwiseParallel()}, src_data_rank=None)


def apply_tensor_parallel(model: nn.Module, recipe: ModelRecipe, mesh: DeviceMesh) -> None:
    """Shard every block of `model` (built by recipe.build_model, before checkpointing and FSDP) over `mesh` (1-D,
    the tp ranks of one replica). Raises ValueError when the degree does not divide the heads or the FFN."""
    tp, rank = mesh.size(), mesh.get_local_rank()
    for layer in model.layers:
        if recipe.family == "retnet":
            _retnet_block(layer, tp, rank, mesh)
        else:  # TransformerBlockForward: the baseline's Block is inside
            _transformer_block(layer.block, tp, mesh)
