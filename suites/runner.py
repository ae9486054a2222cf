"""The one runner: owns timing and memory for every sweep point, writes result rows, never loses finished ones."""
from __future__ import annotations

import datetime as _dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import registry
from .contestants import Contestant
from .env import collect_env
from .plan import Group, Point, plan
from .rows import RowWriter, done_keys, read_rows, repair_torn_tail, write_table
from .schema import make_row, point_key
from .spec import Suite
from .trackers import GB, LatencyTracker, MemoryTracker, measure_copy_bandwidth_gbps
from .trackers import free_device_memory as _free

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


class RunError(ValueError):
    """A problem with the run request itself (one line for the CLI, exit 2)."""


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


def _done_points(rows: list[dict]) -> set[tuple]:
    """Keys of finished points. A capacity point is planned without a batch (the search finds it), so a final
    capacity row (any status but an intermediate over-budget attempt) finishes the batch-less key."""
    keys = done_keys(rows)
    for r in rows:
        if r.get("phase") == "capacity" and (r.get("status") != "over_budget" or r.get("batch_size") is None):
            keys.add(point_key(dict(r, batch_size=None)))
    return keys


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()


def _fmt_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:500]


class Runner:
    def __init__(self, suite: Suite, opts: RunOptions):
        self.suite, self.opts = suite, opts
        self.device = opts.device
        self.dtype = DTYPES[suite.dtype]
        self.started = time.monotonic()
        self.peak_gbps: float | None = None
        self.gpu_name: str | None = None
        self.mem: MemoryTracker | None = None

    # ------------------------------------------------------------------ set-up
    def _open_run_dir(self) -> tuple[Path, dict]:
        root = self.opts.out_root
        if self.opts.resume:
            run_dir = Path(self.opts.resume)
            if not run_dir.is_dir():
                run_dir = root / self.opts.resume
            if not (run_dir / "env.json").is_file():
                raise RunError(f"cannot resume: no run at {self.opts.resume!r} (looked for {run_dir}/env.json)")
            env = json.loads((run_dir / "env.json").read_text())
            if env.get("suite_sha256") != self.suite.sha256 or env.get("suite") != self.suite.name:
                raise RunError(f"cannot resume {run_dir.name}: it was made by suite {env.get('suite')!r} "
                               f"with another definition")
            env.setdefault("resumed", []).append(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            repair_torn_tail(run_dir / "rows.jsonl")
            return run_dir, env
        run_id = self.opts.run_id or (
            f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{self.suite.name}-{self.device.type}")
        run_dir = root / run_id
        try:
            root.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir(exist_ok=False)  # an existing run is never overwritten
        except FileExistsError:
            raise RunError(f"run {run_dir} already exists (use --resume {run_id} to continue it)") from None
        except OSError as e:
            raise RunError(f"cannot create output directory {run_dir}: {e.strerror}") from None
        env = collect_env(self.device)
        env.update(run_id=run_id, suite=self.suite.name, suite_path=self.suite.path, suite_sha256=self.suite.sha256,
                   dtype=self.suite.dtype, seed=self.suite.seed, nvml_sampler=self.opts.use_nvml,
                   cuda_graphs=self.opts.use_graph)
        return run_dir, env

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunOutcome:
        run_dir, env = self._open_run_dir()
        if self.device.type == "cuda":
            self.peak_gbps = env.get("peak_copy_gbps") or measure_copy_bandwidth_gbps(self.device)
            env["peak_copy_gbps"] = self.peak_gbps
            self.mem = MemoryTracker(self.device, use_nvml=self.opts.use_nvml)  # idle baseline: before any model
            env["nvml_idle_baseline_gb"] = (self.mem.idle_baseline or 0) / GB if self.mem.sampler else None
        self.gpu_name = env.get("gpu_name")
        (run_dir / "env.json").write_text(json.dumps(env, indent=2))
        torch.manual_seed(self.suite.seed)

        writer = RowWriter(run_dir / "rows.jsonl")
        done = _done_points(read_rows(run_dir / "rows.jsonl"))
        self.run_id = env["run_id"]
        groups = plan(self.suite)
        total = sum(len(g.points) for g in groups)
        complete = True
        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn()]
        with Progress(*cols, console=self.opts.console, disable=not self.opts.progress, transient=False) as bar:
            task = bar.add_task(f"{self.suite.name}", total=total)
            for g in groups:
                todo = [p for p in g.points if self._key(g, p) not in done]
                bar.advance(task, len(g.points) - len(todo))
                if not todo:
                    continue
                if self._out_of_time():
                    complete = False
                    break
                for row in self._run_group(g, todo, lambda p: bar.update(task, description=self._label(g, p)),
                                           lambda: bar.advance(task)):
                    writer.append(row)
                if self._out_of_time():
                    complete = False
                    break
        write_table(run_dir)
        return RunOutcome(run_dir, len(read_rows(run_dir / "rows.jsonl")), complete)

    def _out_of_time(self) -> bool:
        return self.opts.time_limit_s is not None and time.monotonic() - self.started > self.opts.time_limit_s

    def _label(self, g: Group, p: Point) -> str:
        b = "max" if p.batch_size is None else p.batch_size
        return f"{g.model} {g.impl}/{g.kernel} {p.phase} B={b} T={p.seq_len}"

    def _key(self, g: Group, p: Point) -> tuple:
        return point_key({"model": g.model, "arch": g.arch, "impl": g.impl, "kernel": g.kernel, "phase": p.phase,
                          "batch_size": p.batch_size, "seq_len": p.seq_len, "dtype": self.suite.dtype})

    def _row(self, g: Group, p: Point, status: str, **kw) -> dict:
        base = dict(run_id=self.run_id, suite=self.suite.name, model=g.model, arch=g.arch, impl=g.impl,
                    kernel=g.kernel, phase=p.phase, batch_size=p.batch_size, seq_len=p.seq_len,
                    dtype=self.suite.dtype, status=status, device=self.device.type, gpu_name=self.gpu_name,
                    chunk_size=self.suite.chunk_size if g.arch == "retnet" else None)
        base.update(kw)
        return make_row(**base)

    # ------------------------------------------------------------------ one model, many points
    def _run_group(self, g: Group, todo: list[Point], on_start: Callable, on_done: Callable):
        ok, why = registry.availability(g.impl, g.kernel, self.device, self.dtype)
        if not ok:
            for p in todo:
                on_done()
                yield self._row(g, p, "skipped", error=why)
            return
        contestant: Contestant | None = None
        try:
            on_start(todo[0])
            contestant = registry.build(g.impl, g.kernel, g.model, self.device, self.dtype,
                                        chunk_size=self.suite.chunk_size, use_graph=self.opts.use_graph,
                                        seed=self.suite.seed)
        except Exception as e:  # noqa: BLE001 - any failure to build is recorded, the sweep goes on
            status = "oom" if _is_oom(e) else "error"
            contestant = None
            _free(self.device)
            for p in todo:
                on_done()
                yield self._row(g, p, status, error=f"building the model failed: {_fmt_error(e)}")
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
        common = dict(n_params=c.n_params, notes=c.notes or None, kernel=c.kernel)
        try:
            if p.phase == "decode":
                return self._decode(c, g, p, p.batch_size, common)
            if p.phase == "train":
                return [self._train(c, g, p, common)]
            if p.phase == "capacity":
                return self._capacity(c, g, p, common)
            if p.phase.startswith("op_"):
                return [self._op(c, g, p, common)]
            raise ValueError(f"unknown phase {p.phase}")
        except Exception as e:  # noqa: BLE001 - one failing point never stops the sweep
            c.end()
            _free(self.device)
            from retnet_bench.baselines.kernels import KernelUnavailableError

            status = "oom" if _is_oom(e) else "skipped" if isinstance(e, KernelUnavailableError) else "error"
            return [self._row(g, p, status, error=_fmt_error(e), **common)]

    def _tracker(self) -> MemoryTracker:
        if self.mem is not None:
            return self.mem
        return MemoryTracker(self.device, use_nvml=False)

    def _lat(self, min_steps: int, min_seconds: float, max_steps: int) -> LatencyTracker:
        return LatencyTracker(self.device, min_steps, min_seconds, max_steps)

    def _roofline(self, bytes_per_step: int, ms: float) -> dict:
        gbps = bytes_per_step / (ms / 1e3) / GB
        pct = 100.0 * gbps / self.peak_gbps if self.peak_gbps else None
        return dict(achieved_gbps=gbps, pct_peak_bw=pct)

    def _decode(self, c: Contestant, g: Group, p: Point, batch: int, common: dict) -> list[dict]:
        s, T = self.suite, p.seq_len
        mem = self._tracker()
        rows = []
        # peers that cannot run a prompt are always filled; their fill time is not a prefill and gets no row
        run_prompt = s.fill == "prefill" and c.can_prefill
        if not run_prompt:
            c.fill(batch, T)
            if s.fill == "random":
                common = dict(common, notes="; ".join(filter(None, [common.get("notes"),
                              "cache/state filled with random values to length T (no prompt run)"])))
        elif s.prefill and s.prefill_warmup:  # first call at a shape pays for kernel selection: keep it out
            c.prefill(batch, T)
            c.end()
            _free(self.device)
        if run_prompt:
            with mem:
                prefill_ms = self._lat(1, 0, 1).time_once(lambda: c.prefill(batch, T))
            prefill_mem = mem.result()
        an = c.analytic(batch, T)
        if s.prefill and run_prompt:
            rows.append(self._row(g, Point("prefill", batch, T), "ok", ms_median=prefill_ms, ms_p10=prefill_ms,
                                  ms_p90=prefill_ms, n_repeats=1, tokens_per_s=batch * T / (prefill_ms / 1e3),
                                  weights_gb=an.weights_bytes / GB, **prefill_mem, **common))
        _free(self.device)  # decode memory is measured without the prefill's freed activations
        with mem:
            c.begin_decode()
            for _ in range(s.warmup):
                c.step()
                c.between_steps()
            timing = self._lat(s.min_steps, s.min_seconds, s.max_steps).time(c.step, between=c.between_steps)
        an = c.analytic(batch, T)
        rows.append(self._row(
            g, Point("decode", batch, T), "ok", ms_median=timing.ms_median, ms_p10=timing.ms_p10,
            ms_p90=timing.ms_p90, n_repeats=timing.n, tokens_per_s=batch / (timing.ms_median / 1e3),
            ms_per_token=timing.ms_median, mem_analytic_gb=an.mem_bytes / GB, weights_gb=an.weights_bytes / GB,
            bytes_per_step=an.bytes_per_step, flops_per_token=an.flops_per_token,
            **self._roofline(an.bytes_per_step, timing.ms_median), **mem.result(), **common))
        c.end()
        _free(self.device)
        return rows

    def _train(self, c: Contestant, g: Group, p: Point, common: dict) -> dict:
        s = self.suite
        c.train_step(p.batch_size, p.seq_len)  # warm-up: allocates grads, autotunes kernels
        mem = self._tracker()
        with mem:
            timing = self._lat(s.train_steps, 0.0, s.train_steps).time(lambda: c.train_step(p.batch_size, p.seq_len))
        an = c.analytic(p.batch_size, p.seq_len)
        tokens = p.batch_size * p.seq_len
        return self._row(g, p, "ok", ms_median=timing.ms_median, ms_p10=timing.ms_p10, ms_p90=timing.ms_p90,
                         n_repeats=timing.n, tokens_per_s=tokens / (timing.ms_median / 1e3),
                         weights_gb=an.weights_bytes / GB, flops_per_token=3 * an.flops_per_token,
                         **mem.result(), **common)

    def _op(self, c: Contestant, g: Group, p: Point, common: dict) -> dict:
        s = self.suite
        mem = self._tracker()
        with mem:
            c.setup(p.phase, p.batch_size, p.seq_len)
            for _ in range(s.warmup):
                c.step()
            timing = self._lat(s.min_steps, s.min_seconds, s.max_steps).time(c.step)
        an = c.analytic(p.batch_size, p.seq_len)
        tokens = p.batch_size * (1 if p.phase == "op_decode" else p.seq_len)
        extra = self._roofline(an.bytes_per_step, timing.ms_median) if an.bytes_per_step else {}
        row = self._row(g, p, "ok", ms_median=timing.ms_median, ms_p10=timing.ms_p10, ms_p90=timing.ms_p90,
                        n_repeats=timing.n, tokens_per_s=tokens / (timing.ms_median / 1e3),
                        bytes_per_step=an.bytes_per_step or None, **extra, **mem.result(), **common)
        c.end()
        _free(self.device)
        return row

    def _used_gb(self, row: dict) -> float:
        for k in ("mem_nvml_delta_gb", "mem_torch_reserved_gb", "mem_analytic_gb"):
            if row.get(k) is not None:
                return row[k]
        return math.inf

    def _capacity(self, c: Contestant, g: Group, p: Point, common: dict) -> list[dict]:
        """Largest batch at T whose measured decode memory fits the budget, and its throughput.

        Start from the analytic estimate (budget - weights) / per-sequence bytes, then step down until a
        measured point fits; over-budget and OOM attempts are kept as rows."""
        s, T, budget = self.suite, p.seq_len, self.suite.memory_budget_gb
        one, two = c.analytic(1, T), c.analytic(2, T)
        per_seq = max(two.cache_bytes - one.cache_bytes, 1)
        batch = int((budget * GB - one.weights_bytes) // per_seq)
        batch = max(1, min(batch, s.max_batch))
        rows: list[dict] = []
        for _ in range(6):
            cap = dict(common, capacity_budget_gb=budget)
            try:
                decode = self._decode(c, g, Point("decode", batch, T), batch, cap)[-1]
            except Exception as e:  # noqa: BLE001
                c.end()
                _free(self.device)
                if not _is_oom(e):
                    raise
                rows.append(self._row(g, Point("capacity", batch, T), "oom", error=_fmt_error(e), **cap))
            else:
                used = self._used_gb(decode)
                decode.update(phase="capacity")
                if used <= budget:
                    rows.append(decode)
                    return rows
                decode.update(status="over_budget", error=f"{used:.1f} GB > budget {budget:g} GB")
                rows.append(decode)
            if batch == 1:
                break
            batch = max(1, int(batch * 0.85))
        rows.append(self._row(g, Point("capacity", None, T), "over_budget",
                              error=f"no batch fits {budget:g} GB", **common))
        return rows


def run_suite(suite: Suite, opts: RunOptions) -> RunOutcome:
    if suite.requires_gpu and opts.device.type != "cuda":
        raise RunError(f"suite {suite.name!r} needs a CUDA GPU (this machine has none); try the 'smoke' suite")
    if opts.device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda asked for, but torch sees no CUDA GPU")
    try:
        registry.check_names(suite.impls + suite.train_impls, suite.kernels, suite.models)
        lengths = suite.seq_lens * ("decode" in suite.phases) + suite.train_seq_lens * ("train" in suite.phases)
        lengths += [suite.capacity_seq_len] * ("capacity" in suite.phases)
        registry.check_lengths(suite.models, lengths)
    except ValueError as e:
        raise RunError(str(e)) from None
    return Runner(suite, opts).run()
