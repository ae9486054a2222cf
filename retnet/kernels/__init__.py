"""Decode-step kernels. Triton is optional: everything imports without it and falls back to torch."""

from __future__ import annotations

import functools
import importlib.util


@functools.cache
def triton_available() -> bool:
    """True when `import triton` works (it does not check for a GPU)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken install must not break the model
        return False
    return True


from retnet.kernels.recurrent_step import STEP_KERNELS, recurrent_step, recurrent_step_torch  # noqa: E402

__all__ = ["STEP_KERNELS", "recurrent_step", "recurrent_step_torch", "triton_available"]
