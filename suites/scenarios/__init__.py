"""One module per scenario (decode with its prefill rows, train, capacity, op). Each exposes
`run(ctx, contestant, group, point) -> list[row]`; the runner owns what is common to all of them."""
from . import capacity, decode, op, train

SCENARIOS = {"decode": decode, "capacity": capacity, "train": train, "op": op}

__all__ = ["SCENARIOS"]
