"""Suite definitions and the one runner that owns timing and memory."""
from .runner import RunError, RunOptions, RunOutcome, run_suite
from .spec import Suite, SuiteError, builtin_suites, load_suite

__all__ = ["RunError", "RunOptions", "RunOutcome", "Suite", "SuiteError", "builtin_suites", "load_suite", "run_suite"]
