"""Declarative suite files: one small TOML file per suite (built-ins in definitions/ beside this module).

A suite says *what* to measure; the scenarios and the runner decide *how*. Common keys sit at the top of the file;
each scenario has its own table (`[decode]`, `[train]`, `[capacity]`, `[op]`) whose presence turns it on:

    name = "fig6"
    models = ["6.7b"]
    dtype = "bfloat16"
    [decode]
    impls = [...]              # contestant names (`retnet-bench list`)
    kernels = ["sdpa-cudnn"]
    batch_sizes = [1, 8]
    seq_lens = [8192]

Users can pass their own file path to `run`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import DECODE_GEMM_CHOICES, TRAIN_VARIANT_CHOICES

SUITE_DIR = Path(__file__).parent / "definitions"
DTYPES = ("bfloat16", "float16", "float32", "float64")


# KV-cache precisions a suite may add beside the model dtype's cache (a row's state_dtype for a Transformer)
KV_DTYPES = ("float8_e4m3fn",)
# Integer keys for which 0 means something: no untimed step, the model's default prefill segment
ZERO_OK_KEYS = ("warmup", "prefill_segment")


class SuiteError(ValueError):
    """Bad suite file or override; the CLI prints its one-line message and exits 2."""


@dataclass
class Timing:
    warmup: int = 3                 # untimed steps; a decode point takes at least 2 (its memory restarts after the 1st)
    min_steps: int = 5              # time-box: at least min_steps timed steps and at least min_seconds ...
    min_seconds: float = 2.0
    max_steps: int = 200            # ... but never more than max_steps


@dataclass
class Scenario(Timing):
    impls: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=lambda: ["sdpa"])  # each contestant takes the names it accepts
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    seq_lens: list[int] = field(default_factory=lambda: [128])
    chunk_size: int = 512
    n_kv_heads: list[int] = field(default_factory=lambda: [0])  # Transformer KV heads; 0 = as many as query heads
    state_dtypes: list[str] = field(default_factory=lambda: ["float32"])  # RetNet recurrent state precision


@dataclass
class DecodeScenario(Scenario):
    prefill: bool = True            # time the prefill to T separately (one `prefill` row per decode point)
    fill: str = "prefill"           # "prefill" (a real prompt) or "random" (random cache/state of the right shapes)
    prefill_warmup: bool = True     # run each prefill once untimed first (per-shape kernel selection, cuDNN plans)
    prefill_segment: int = 0        # RetNet prefill segment length (0: the model's default); bounds prefill memory
    prefill_repeats: int = 1        # timed prefills per point (>= 3 gives `compare` a spread to judge noise by)
    kv_dtypes: list[str] = field(default_factory=list)  # extra Transformer KV-cache precisions (float8_e4m3fn)
    decode_gemm: str = "auto"       # the steps' projections: auto | torch (F.linear) | triton (retnet.kernels.skinny_linear)


@dataclass
class TrainScenario(Scenario):
    steps: int = 3                  # timed optimizer steps (after `warmup` untimed ones)
    warmup: int = 1
    nproc: int = 1                  # ranks (one GPU each); > 1 shards with FSDP2 through torch's elastic launcher
    grad_accum: int = 1             # micro-batches per optimizer step (batch_sizes are micro-batch sizes)
    checkpointing: str = "none"     # activation checkpointing: none | full | every-2 | every-4 | every-8 (N-th blocks)
    compile: str = "none"           # torch.compile per block (torchtitan's `compile`): none | blocks
    tp: int = 1                     # tensor-parallel degree within the nproc ranks (DTensor; FSDP2 over the rest)
    optimizer: bool = True          # a real step (AdamW, fp32 master weights); false: forward + backward only


@dataclass
class CapacityScenario(Scenario):
    seq_len: int = 8192
    memory_budget_gib: float = 80.0  # the paper's A100-80GB: 80 GiB (85.9 GB), the unit of the paper's memory
    max_batch: int = 1024           # the search never goes beyond this
    fill: str = "random"
    prefill: bool = False
    prefill_warmup: bool = False
    prefill_segment: int = 0
    decode_gemm: str = "auto"       # as DecodeScenario's (the search's batches beyond 16 use F.linear whatever it says)


@dataclass
class OpScenario(Scenario):
    pass


SCENARIO_TYPES: dict[str, type[Scenario]] = {
    "decode": DecodeScenario, "train": TrainScenario, "capacity": CapacityScenario, "op": OpScenario}


@dataclass
class Suite:
    name: str
    description: str = ""
    requires_gpu: bool = False
    dtype: str = "bfloat16"
    models: list[str] = field(default_factory=lambda: ["tiny"])
    seed: int = 0
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    path: str = ""
    sha256: str = ""

    def validate(self) -> None:
        if not isinstance(self.models, list) or not self.models:
            raise SuiteError(f"suite {self.name!r}: 'models' must be a non-empty list")
        if self.dtype not in DTYPES:
            raise SuiteError(f"suite {self.name!r}: unknown dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        if not self.scenarios:
            raise SuiteError(f"suite {self.name!r}: no scenario table (add [decode], [train], [capacity] or [op])")
        for kind, sc in self.scenarios.items():
            _validate_scenario(self.name, kind, sc)


def _validate_scenario(suite: str, kind: str, sc: Scenario) -> None:
    where = f"suite {suite!r} [{kind}]"
    for key in ("kernels", "batch_sizes", "seq_lens", "n_kv_heads", "state_dtypes"):
        if not isinstance(getattr(sc, key), list) or not getattr(sc, key):
            raise SuiteError(f"{where}: '{key}' must be a non-empty list")
    for key in ("batch_sizes", "seq_lens"):
        vals = getattr(sc, key)
        if any((not isinstance(v, int)) or isinstance(v, bool) or v <= 0 for v in vals):
            raise SuiteError(f"{where}: {key} must be positive integers, got {vals}")
    if any((not isinstance(v, int)) or isinstance(v, bool) or v < 0 for v in sc.n_kv_heads):
        raise SuiteError(f"{where}: n_kv_heads must be integers >= 0 (0 = as many as query heads), got {sc.n_kv_heads}")
    bad = [d for d in sc.state_dtypes if d not in ("float32", "bfloat16")]
    if bad:
        raise SuiteError(f"{where}: state_dtypes takes float32 / bfloat16, got {bad[0]!r}")
    kv = getattr(sc, "kv_dtypes", [])
    if not isinstance(kv, list) or any(d not in KV_DTYPES for d in kv):
        raise SuiteError(f"{where}: kv_dtypes is a list of {' / '.join(KV_DTYPES)} (the model dtype's cache is "
                         f"always run), got {kv!r}")
    for key in ("warmup", "min_steps", "max_steps", "chunk_size", *_int_keys(sc)):
        v = getattr(sc, key)
        lowest = 0 if key in ZERO_OK_KEYS else 1
        if not isinstance(v, int) or isinstance(v, bool) or v < lowest:
            kind_of = "a non-negative integer" if lowest == 0 else "a positive integer"
            raise SuiteError(f"{where}: {key} must be {kind_of}, got {v!r}")
    if sc.max_steps < sc.min_steps:
        raise SuiteError(f"{where}: max_steps ({sc.max_steps}) < min_steps ({sc.min_steps})")
    if sc.min_seconds < 0:
        raise SuiteError(f"{where}: min_seconds must be >= 0")
    if kind != "op" and not sc.impls:
        raise SuiteError(f"{where}: needs 'impls'")
    if getattr(sc, "fill", "prefill") not in ("prefill", "random"):
        raise SuiteError(f"{where}: fill must be 'prefill' or 'random', got {sc.fill!r}")
    if hasattr(sc, "decode_gemm") and sc.decode_gemm not in DECODE_GEMM_CHOICES:
        raise SuiteError(f"{where}: decode_gemm must be {' or '.join(map(repr, DECODE_GEMM_CHOICES))}, "
                         f"got {sc.decode_gemm!r}")
    if isinstance(sc, CapacityScenario) and sc.memory_budget_gib <= 0:
        raise SuiteError(f"{where}: memory_budget_gib must be > 0")
    for key, choices in TRAIN_VARIANT_CHOICES.items() if isinstance(sc, TrainScenario) else ():
        if getattr(sc, key) not in choices:
            raise SuiteError(f"{where}: {key} must be {' or '.join(map(repr, choices))}, got {getattr(sc, key)!r}")
    if isinstance(sc, TrainScenario) and sc.compile != "none" and not sc.optimizer:
        raise SuiteError(f"{where}: compile needs the training engine (optimizer = true)")
    if isinstance(sc, TrainScenario) and sc.nproc % sc.tp:
        raise SuiteError(f"{where}: tp={sc.tp} must divide nproc={sc.nproc} (tensor-parallel ranks within them)")
    if isinstance(sc, TrainScenario) and sc.tp > 1 and not sc.optimizer:
        raise SuiteError(f"{where}: tp > 1 needs the training engine (optimizer = true)")


def _int_keys(sc: Scenario) -> tuple[str, ...]:
    keys = {TrainScenario: ("steps", "nproc", "grad_accum", "tp"), CapacityScenario: ("seq_len", "max_batch"),
            DecodeScenario: ("prefill_segment", "prefill_repeats")}
    return keys.get(type(sc), ())


def with_overrides(suite: Suite, *, models: list[str] | None = None, dtype: str | None = None,
                   **per_scenario: Any) -> Suite:
    """A copy with CLI overrides applied (None values are ignored) and re-validated. Scenario keys apply to every
    scenario that has them (`seq_lens` also sets the capacity search's `seq_len`); `impls` is applied by the caller,
    which knows which contestant takes part in which scenario."""
    top = {k: v for k, v in dict(models=models, dtype=dtype).items() if v is not None}
    scenarios = {}
    for kind, sc in suite.scenarios.items():
        kw = {k: v for k, v in per_scenario.items() if v is not None and hasattr(sc, k)}
        if isinstance(sc, CapacityScenario) and per_scenario.get("seq_lens"):
            kw["seq_len"] = per_scenario["seq_lens"][0]
        scenarios[kind] = dataclasses.replace(sc, **kw)
    new = dataclasses.replace(suite, scenarios=scenarios, **top)
    new.validate()
    return new


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITE_DIR.glob("*.toml"))}


# Keys a suite file may still carry from an earlier release, and what replaced them.
RENAMED_KEYS = {"memory_budget_gb": "now memory_budget_gib, in GiB: the A100-80GB's 80 GiB is 85.9 GB"}


def _typed(where: str, cls: type, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    unknown = sorted(set(data) - set(known) - {"path", "sha256"})
    if unknown:
        key = next((k for k in unknown if k in RENAMED_KEYS), unknown[0])  # a renamed key's hint first
        hint = RENAMED_KEYS.get(key, "")
        raise SuiteError(f"{where}: unknown key {key!r}" + (f" ({hint})" if hint else ""))
    for name, v in data.items():  # TOML gives ints where floats are meant; reject wrong types early
        t = known[name].type
        if t in ("int", "float") and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise SuiteError(f"{where}: {name} must be a number, got {v!r}")
        if t == "float":
            data[name] = float(v)
        if t == "bool" and not isinstance(v, bool):
            raise SuiteError(f"{where}: {name} must be true or false, got {v!r}")
    try:
        return cls(**data)
    except TypeError as e:
        raise SuiteError(f"{where}: {e}") from None


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
    scenarios = {}
    for kind, cls in SCENARIO_TYPES.items():
        table = data.pop(kind, None)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise SuiteError(f"suite file {path}: [{kind}] must be a table")
        scenarios[kind] = _typed(f"suite file {path} [{kind}]", cls, table)
    data.setdefault("name", path.stem)
    suite = _typed(f"suite file {path}", Suite, {**data, "scenarios": scenarios})
    suite.path, suite.sha256 = str(path), hashlib.sha256(raw).hexdigest()
    suite.validate()
    return suite
