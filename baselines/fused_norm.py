"""Moved to `retnet.kernels.add_norm` (issue #16: the RetNet step uses it too, and the model package must not import
the baselines package). This shim keeps the old import path for existing callers; new code imports from retnet."""
from __future__ import annotations

from retnet.kernels.add_norm import add_layer_norm, add_layer_norm_torch, add_layer_norm_triton, triton_available

__all__ = ["add_layer_norm", "add_layer_norm_torch", "add_layer_norm_triton", "triton_available"]
