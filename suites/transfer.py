"""How a timed loop's input ids reach the GPU: without making the host wait for it."""
from __future__ import annotations

import torch


def batch_on_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A step's ids on their device without making the host wait for the GPU, as a data loader with
    pin_memory=True and a non_blocking copy feeds a training loop: the ids go to pinned memory and are copied
    asynchronously (the pinned block is reused only after its copy has run: torch's host allocator records an event).

    A plain .to(device) is a blocking copy: torch synchronises the stream after it (cudaMemcpyAsync, then
    cudaStreamSynchronize). Inside a timed loop the GPU then drained its queue at every step and sat idle while the
    host built the next batch and issued the step's first launches, and the host could never run more than the
    step it was issuing ahead: every stretch where the host was slower than the kernels became step time, more so
    for the model with more host work per step (fla's retention wrappers: ~1 ms of host time per layer and step,
    H200 profiles in results/reference/h200/2026-11-29-probes-s11)."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)
