"""How a timed loop's input ids reach the GPU: without making the host wait for it."""
from __future__ import annotations

import torch


def batch_on_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A step's batch on its device without making the host wait for the GPU, as a data loader with
    pin_memory=True and a non_blocking copy feeds a training loop: the ids go to pinned memory and are copied
    asynchronously (the pinned block is reused only after its copy has run: torch's host allocator records it).

    A plain .to(device) from pageable memory synchronises the stream. The GPU then drained its queue at every step
    and sat idle while the host built the next batch and issued the step's first launches, and the host could
    never run ahead by more than the step it was issuing: a step was charged for every stretch where the host was
    slower than the kernels, which costs the model with more host work per step more (fla's retention wrappers:
    ~1 ms of host time per layer and step, H200 profile 2026-11-29-probes-s11)."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)
