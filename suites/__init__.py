"""Suite definitions, contestant specs, scenarios and the one runner that owns timing and memory.

The public names load lazily (PEP 562) so that `retnet_bench.suites.contract`, the row contract, can be imported by
the report layer without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunError": "runner", "RunOptions": "runner", "RunOutcome": "runner", "run_suite": "runner",
    "Suite": "suite", "SuiteError": "suite", "builtin_suites": "suite", "load_suite": "suite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
