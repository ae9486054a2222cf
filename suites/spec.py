"""Declarative suite files: one small TOML file per suite (built-ins live beside this module).

A suite says *what* to measure; the runner decides *how*. Users can pass their own file path to `run`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SUITE_DIR = Path(__file__).parent
PHASES = ("decode", "train", "capacity", "op")
DTYPES = ("bfloat16", "float16", "float32", "float64")


class SuiteError(ValueError):
    """Bad suite file or override; the CLI prints its one-line message and exits 2."""


@dataclass
class Suite:
    name: str
    description: str = ""
    requires_gpu: bool = False
    dtype: str = "bfloat16"
    models: list[str] = field(default_factory=lambda: ["tiny"])
    phases: list[str] = field(default_factory=lambda: ["decode"])
    impls: list[str] = field(default_factory=list)          # decode / capacity contestants (op: fixed set)
    train_impls: list[str] = field(default_factory=list)    # train contestants
    kernels: list[str] = field(default_factory=lambda: ["sdpa"])  # expanded for impls that take a kernel
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    seq_lens: list[int] = field(default_factory=lambda: [128])
    prefill: bool = True            # time the prefill to T separately (one `prefill` row per decode point)
    fill: str = "prefill"           # how decode points get their cache: "prefill" (a real prompt) or "random"
                                    # (random cache/state of the right shapes; capacity searches at large batch)
    prefill_warmup: bool = True     # run each prefill once untimed first (per-shape kernel selection, cuDNN
                                    # plans); a short warm-up prefill after each model build always runs
    warmup: int = 3                 # untimed steps (compile, autotune, graph capture happen before these)
    min_steps: int = 5              # time-box: at least min_steps timed steps and at least min_seconds ...
    min_seconds: float = 2.0
    max_steps: int = 200            # ... but never more than max_steps
    train_batch_sizes: list[int] = field(default_factory=lambda: [1])
    train_seq_lens: list[int] = field(default_factory=lambda: [128])
    train_steps: int = 3
    chunk_size: int = 512
    memory_budget_gb: float = 80.0  # capacity: the paper's A100-80GB
    capacity_seq_len: int = 8192
    max_batch: int = 1024           # capacity search never goes beyond this
    seed: int = 0
    path: str = ""
    sha256: str = ""

    def with_overrides(self, **kw) -> "Suite":
        """Return a copy with CLI overrides (None values are ignored) applied and re-validated."""
        new = dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})
        new.validate()
        return new

    def validate(self) -> None:
        for key in ("models", "phases", "batch_sizes", "seq_lens", "kernels"):
            if not isinstance(getattr(self, key), list) or not getattr(self, key):
                raise SuiteError(f"suite {self.name!r}: '{key}' must be a non-empty list")
        bad = [p for p in self.phases if p not in PHASES]
        if bad:
            raise SuiteError(f"suite {self.name!r}: unknown phase {bad[0]!r} (choose from {', '.join(PHASES)})")
        if self.fill not in ("prefill", "random"):
            raise SuiteError(f"suite {self.name!r}: fill must be 'prefill' or 'random', got {self.fill!r}")
        if self.dtype not in DTYPES:
            raise SuiteError(f"suite {self.name!r}: unknown dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        for key in ("batch_sizes", "seq_lens", "train_batch_sizes", "train_seq_lens"):
            vals = getattr(self, key)
            if any((not isinstance(v, int)) or isinstance(v, bool) or v <= 0 for v in vals):
                raise SuiteError(f"suite {self.name!r}: {key} must be positive integers, got {vals}")
        for key in ("warmup", "min_steps", "max_steps", "train_steps", "chunk_size", "max_batch", "capacity_seq_len"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < (0 if key == "warmup" else 1):
                raise SuiteError(f"suite {self.name!r}: {key} must be a positive integer, got {v!r}")
        if self.max_steps < self.min_steps:
            raise SuiteError(f"suite {self.name!r}: max_steps ({self.max_steps}) < min_steps ({self.min_steps})")
        if self.memory_budget_gb <= 0 or self.min_seconds < 0:
            raise SuiteError(f"suite {self.name!r}: memory_budget_gb must be > 0 and min_seconds >= 0")
        if ("decode" in self.phases or "capacity" in self.phases) and not self.impls:
            raise SuiteError(f"suite {self.name!r}: decode/capacity phases need 'impls'")
        if "train" in self.phases and not self.train_impls:
            raise SuiteError(f"suite {self.name!r}: the train phase needs 'train_impls'")


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITE_DIR.glob("*.toml"))}


def load_suite(name_or_path: str) -> Suite:
    """Load a built-in suite by name or a user's TOML file by path; SuiteError with one line on any problem."""
    path = builtin_suites().get(name_or_path)
    if path is None:
        candidate = Path(name_or_path)
        if not (candidate.suffix == ".toml" or candidate.exists()):
            raise SuiteError(f"unknown suite {name_or_path!r} (built-in: {', '.join(builtin_suites())}; or a .toml path)")
        if not candidate.is_file():
            raise SuiteError(f"suite file not found: {candidate}")
        path = candidate
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SuiteError(f"malformed suite file {path}: {e}") from None
    known = {f.name for f in dataclasses.fields(Suite)} - {"path", "sha256"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SuiteError(f"suite file {path}: unknown key {unknown[0]!r}")
    data.setdefault("name", path.stem)
    try:
        suite = Suite(**data, path=str(path), sha256=hashlib.sha256(raw).hexdigest())
    except TypeError as e:
        raise SuiteError(f"suite file {path}: {e}") from None
    for f in dataclasses.fields(Suite):  # TOML gives ints where floats are meant; reject wrong types early
        v = getattr(suite, f.name)
        if f.type in ("int", "float") and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise SuiteError(f"suite file {path}: {f.name} must be a number, got {v!r}")
        if f.type == "float":
            setattr(suite, f.name, float(v))
    suite.validate()
    return suite
