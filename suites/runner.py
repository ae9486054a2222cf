"""The one runner: owns what every scenario shares (the time box, trackers, rows, resume, progress); each scenario
module measures its own points (suites/scenarios/). Finished rows are never lost."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .contestants.base import Contestant
from .contestants.spec import BuildArgs
from .contract import (DECODE_GEMMS, SCHEMA_VERSION, RowWriter, decode_gemm_ran, done_keys, make_row, point_key,
                       read_rows, repair_torn_tail, write_table)
from .checks import check_cpu_memory, check_suite
from .env import collect_env
from .plan import Group, Point, plan
from .scenarios import SCENARIOS
from .scenarios import train as train_scenario
from .scenarios.context import Context, failure_status, fmt_error
from .suite import Suite
from .trackers import GB, MemoryTracker, energy_counter, measure_copy_bandwidth_gbps
from .trackers import free_device_memory as _free

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunError(ValueError):
    """A problem with the run request itself (one line for the CLI, exit 2)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after its folder was made: says which folder `--resume` continues (the CLI prints it)."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@dataclass
class RunOptions:
    device: torch.device
    out_root: Path = Path("results")
    run_id: str | None = None
    resume: str | None = None
    use_nvml: bool = True
    use_graph: bool = True
    time_limit_s: float | None = None
    progress: bool = True
    console: Console = field(default_factory=Console)


@dataclass
class RunOutcome:
    run_dir: Path
    n_rows: int
    complete: bool
    counts: dict[str, int] = field(default_factory=dict)  # rows of this invocation by status


def _done_points(rows: list[dict]) -> set[tuple]:
    """Keys of finished points. A capacity point is planned without a batch (the search finds it): its answer row
    (phase `capacity`, whatever its batch) finishes the batch-less key; probes do not."""
    keys = done_keys(rows)
    for r in rows:
        if r.get("phase") == "capacity":
            keys.add(point_key(dict(r, batch_size=None)))
            ran = r.get("decode_gemm")
            for setting in DECODE_GEMMS:  # every setting whose step at this batch ran what the answer's did (a
                # "triton" plan beyond the kernel's 16 rows ran F.linear: a "torch" answer stands for it too)
                if ran is not None and decode_gemm_ran(setting, r.get("batch_size")) == ran:
                    keys.add(point_key(dict(r, batch_size=None, decode_gemm=setting)))
    return keys


class Runner:
    def __init__(self, suite: Suite, opts: RunOptions):
        self.suite, self.opts = suite, opts
        self.device = opts.device
        self.dtype = DTYPES[suite.dtype]
        self.started = time.monotonic()
        self.gpu_name: str | None = None
        self.ctx: Context | None = None

    # ------------------------------------------------------------------ set-up
    def _open_run_dir(self) -> tuple[Path, dict]:
        root = self.opts.out_root
        if root.exists() and not root.is_dir():
            raise RunError(f"--out {root} is a file, not a folder")
        if self.opts.resume:
            run_dir = Path(self.opts.resume)
            if not run_dir.is_dir():
                run_dir = root / self.opts.resume
            if not (run_dir / "env.json").is_file():
                raise RunError(f"cannot resume: no run at {self.opts.resume!r} (looked for {run_dir}/env.json)")
            env = json.loads((run_dir / "env.json").read_text())
            if env.get("schema_version") != SCHEMA_VERSION:  # its rows and new ones would mean different things
                raise RunError(f"cannot resume {run_dir.name}: its rows follow schema {env.get('schema_version')}, "
                               f"this version writes schema {SCHEMA_VERSION}; start a new run")
            if env.get("suite_sha256") != self.suite.sha256 or env.get("suite") != self.suite.name:
                raise RunError(f"cannot resume {run_dir.name}: it was made by suite {env.get('suite')!r} "
                               f"with another definition")
            env.setdefault("resumed", []).append(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            env["complete"] = False  # until this invocation finishes every point
            try:
                repair_torn_tail(run_dir / "rows.jsonl")
                self._write_env(run_dir, env)
                if not (run_dir / "suite.toml").is_file():  # a run made before suite.toml was kept: same sha, add it
                    self._keep_suite_file(run_dir)
            except OSError as e:
                raise RunError(f"cannot resume {run_dir}: {e.strerror or e}") from None
            return run_dir, env
        # an empty --run-id is bad input, not a request for an automatic one
        run_id = self.opts.run_id if self.opts.run_id is not None else (
            f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{self.suite.name}-{self.device.type}")
        if not RUN_ID.match(run_id):
            raise RunError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' only (no path separators)")
        run_dir = root / run_id
        try:
            root.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir(exist_ok=False)  # an existing run is never overwritten
        except FileExistsError:
            raise RunError(f"run {run_dir} already exists (use --resume {run_id} to continue it)") from None
        except OSError as e:
            raise RunError(f"cannot create output directory {run_dir}: {e.strerror}") from None
        env = collect_env(self.device)
        cuda = self.device.type == "cuda"
        env.update(run_id=run_id, suite=self.suite.name, suite_path=self.suite.path, suite_sha256=self.suite.sha256,
                   dtype=self.suite.dtype, seed=self.suite.seed, nvml_sampler=self.opts.use_nvml and cuda,
                   cuda_graphs=self.opts.use_graph and cuda, complete=False)
        try:  # env.json at once: a run stopped before its first point can still be resumed
            self._write_env(run_dir, env)
            self._keep_suite_file(run_dir)
        except OSError as e:
            raise RunError(f"cannot write to {run_dir}: {e.strerror or e}") from None
        return run_dir, env

    def _keep_suite_file(self, run_dir: Path) -> None:
        """Copy the suite file into the run as suite.toml: env.json keeps only its path and sha256, and a run made
        from a temporary file could not be repeated without it. Copied only while it still has the sha256 the suite
        was loaded with (the CLI's overrides are in env.json's `command`)."""
        try:
            raw = Path(self.suite.path).read_bytes()
        except OSError:  # gone since it was loaded (a temporary file): nothing true to copy
            return
        if hashlib.sha256(raw).hexdigest() == self.suite.sha256:
            (run_dir / "suite.toml").write_bytes(raw)

    def _write_env(self, run_dir: Path, env: dict) -> None:
        (run_dir / "env.json").write_text(json.dumps(env, indent=2))

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunOutcome:
        run_dir, env = self._open_run_dir()
        try:
            return self._run(run_dir, env)
        except KeyboardInterrupt as e:  # say which folder to resume; every finished row is already on disk
            raise RunInterrupted(run_dir) from e

    def _run(self, run_dir: Path, env: dict) -> RunOutcome:
        peak_gbps, mem = None, None
        if self.device.type == "cuda":
            peak_gbps = env.get("peak_copy_gbps") or measure_copy_bandwidth_gbps(self.device)
            env["peak_copy_gbps"] = peak_gbps
            mem = MemoryTracker(self.device, use_nvml=self.opts.use_nvml)  # idle baseline: before any model
            env["nvml_idle_baseline_gb"] = (mem.idle_baseline or 0) / GB if mem.sampler else None
        elif self.device.type == "cpu":
            mem = MemoryTracker(self.device)  # RSS sampled per point
        self.gpu_name = env.get("gpu_name")
        groups = plan(self.suite, self.device)
        # the specs of this run's contestants travel with its rows: reports read roles, families and descriptions
        # from here (they never import the specs)
        env.setdefault("contestants", {}).update({g.impl: g.spec.describe() for g in groups})
        self._write_env(run_dir, env)  # complete: false until the end (a killed run stays false)
        torch.manual_seed(self.suite.seed)
        self.run_id = env["run_id"]
        # energy is an NVML read like the memory one: `--no-nvml` turns both off
        energy = energy_counter(self.device) if self.opts.use_nvml else None
        self.ctx = Context(self.device, self.dtype, peak_gbps, mem, self._row, energy)

        writer = RowWriter(run_dir / "rows.jsonl")
        done = _done_points(read_rows(run_dir / "rows.jsonl"))
        total = sum(len(g.points) for g in groups)
        complete, counts, finished = True, {}, False
        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn()]
        try:
            with Progress(*cols, console=self.opts.console, disable=not self.opts.progress, transient=False) as bar:
                task = bar.add_task(f"{self.suite.name}", total=total)
                for g in groups:
                    todo = [p for p in g.points if g.key(p, self.suite.dtype) not in done]
                    bar.advance(task, len(g.points) - len(todo))
                    if not todo:
                        continue
                    if self._out_of_time():
                        complete = False
                        break
                    for row in self._run_group(g, todo, lambda p: bar.update(task, description=self._label(g, p)),
                                               lambda: bar.advance(task)):
                        writer.append(row)
                        counts[row["status"]] = counts.get(row["status"], 0) + 1
                    if self._out_of_time():
                        complete = False
                        break
            finished = complete
        finally:
            write_table(run_dir)
            env["complete"] = finished  # false after a time limit, Ctrl-C or a crash; a resume that finishes: true
            try:
                self._write_env(run_dir, env)
            except OSError:  # never hide the exception under way (the rows are written and fsynced already)
                pass
        return RunOutcome(run_dir, len(read_rows(run_dir / "rows.jsonl")), complete, counts)

    def _out_of_time(self) -> bool:
        return self.opts.time_limit_s is not None and time.monotonic() - self.started > self.opts.time_limit_s

    def _label(self, g: Group, p: Point) -> str:
        b = "max" if p.batch_size is None else p.batch_size
        return f"{g.model} {g.impl}/{g.kernel} {p.phase} B={b} T={p.seq_len}"

    def _row(self, g: Group, p: Point, status: str, **kw) -> dict:
        base = dict(g.row_identity(p, self.suite.dtype), run_id=self.run_id, suite=self.suite.name, status=status,
                    device=self.device.type, gpu_name=self.gpu_name,
                    chunk_size=g.settings.chunk_size if g.arch == "retnet" else None)
        base.update(kw)
        return make_row(**base)

    # ------------------------------------------------------------------ one model, many points
    def _run_group(self, g: Group, todo: list[Point], on_start: Callable, on_done: Callable):
        ok, why = g.spec.available(g.kernel, self.device, self.dtype)
        if ok and g.world_size > 1 and not g.uses_engine:
            ok, why = False, f"{g.impl} has no training-engine recipe: it cannot run on {g.world_size} ranks"
        if not ok:
            hint = f" ({g.spec.install_hint})" if g.spec.install_hint and g.spec.install_hint not in why else ""
            for p in todo:
                on_done()
                yield self._row(g, p, "skipped", error=f"{why}{hint}")
            return
        args = BuildArgs(g.model, g.kernel, self.device, self.dtype, g.variant, chunk_size=g.settings.chunk_size,
                         use_graph=self.opts.use_graph, seed=self.suite.seed, scenario=g.scenario,
                         decode_gemm=g.decode_gemm or "torch")
        if g.scenario == "train" and g.uses_engine:  # the engine builds the model on every rank
            for p in todo:
                if self._out_of_time():
                    return
                on_start(p)
                try:
                    rows = train_scenario.run_engine(self.ctx, g, p, args)
                except Exception as e:  # noqa: BLE001 - one failing point never stops the sweep
                    rows = [self._row(g, p, failure_status(e), error=fmt_error(e))]
                _free(self.device)
                on_done()
                yield from rows
            return
        contestant: Contestant | None = None
        try:
            on_start(todo[0])
            contestant = g.spec.build(g.spec, args)
        except Exception as e:  # noqa: BLE001 - any failure to build is recorded, the sweep goes on
            contestant = None
            _free(self.device)
            status = failure_status(e)  # skipped: a variant no kernel here takes, with the reason
            error = fmt_error(e) if status == "skipped" else f"building the model failed: {fmt_error(e)}"
            for p in todo:
                on_done()
                yield self._row(g, p, status, error=error)
            return
        try:
            first = todo[0]
            if first.phase in ("decode", "capacity"):  # library loading, cuDNN handles: not part of any point
                warm = contestant.prefill if contestant.can_prefill else contestant.fill
                warm(1, min(first.seq_len, 256))
                contestant.end()
                _free(self.device)
            for p in todo:
                if self._out_of_time():
                    return
                on_start(p)
                limit = contestant.max_seq_len
                if limit is not None and p.seq_len > limit:
                    rows = [self._row(g, p, "error", error=f"seq_len {p.seq_len} > model limit {limit}")]
                else:
                    rows = self._measure(contestant, g, p)
                on_done()
                yield from rows
        finally:
            contestant.close()
            del contestant
            _free(self.device)

    def _measure(self, c: Contestant, g: Group, p: Point) -> list[dict]:
        # the row's kernel is the plan's (decided once from the spec): the key `--resume` compares
        common = dict(n_params=c.n_params, notes=c.notes or None)
        try:
            return SCENARIOS[g.scenario].run(self.ctx, c, g, p, common)
        except Exception as e:  # noqa: BLE001 - one failing point never stops the sweep
            c.end()
            _free(self.device)
            return [self._row(g, p, failure_status(e), error=fmt_error(e), **common)]


def run_suite(suite: Suite, opts: RunOptions) -> RunOutcome:
    if suite.requires_gpu and opts.device.type != "cuda":
        raise RunError(f"suite {suite.name!r} needs a CUDA GPU (this machine has none); try the 'smoke' suite")
    if opts.device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda asked for, but torch sees no CUDA GPU")
    try:
        check_suite(suite, opts.device)
        if opts.device.type == "cpu":  # before building anything: the OOM killer gives no message and no row
            check_cpu_memory(suite)
    except ValueError as e:
        raise RunError(str(e)) from None
    return Runner(suite, opts).run()
