"""retnet-bench: a thin Typer app over suites/ (measure) and reports/ (explain). All logic lives there."""
from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from retnet_bench.suites.suite import DTYPES  # noqa: E402


class _App(typer.Typer):
    """Calling the app runs `main` (one-line usage errors): an install made while [project.scripts] named `app`
    still calls `app()` until it is reinstalled. Tests invoke the click command itself (typer.testing)."""

    def __call__(self, args: Optional[List[str]] = None, **_: object) -> int:
        return main(args)


app = _App(help="Does RetNet decode 8.4x faster with 70% less memory than a KV-cache Transformer? "
                       "Measure it on your GPU.", no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False)
console = Console()
err = Console(stderr=True)


def _fail(msg: str) -> None:
    err.print(f"error: {msg}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def one_line_errors(fn: Callable) -> Callable:
    """Bad input -> one clear line on stderr and exit 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except typer.Exit:
            raise
        except (ValueError, KeyError) as e:
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        except OSError as e:  # a read-only or missing folder: say which and why, in one line
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _fail(f"{where}{e.strerror or e}")

    return wrapper


def _ints(text: Optional[str], what: str) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"--{what} takes comma-separated integers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise ValueError(f"--{what} values must be positive integers, got {text!r}")
    return vals


def _names(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [v for v in text.replace(" ", "").split(",") if v]


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(name)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"retnet-bench {version('retnet-bench')}")
        raise typer.Exit()


@app.callback()
def main_options(_version_flag: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit")) -> None:
    """Does RetNet decode 8.4x faster with 70% less memory than a KV-cache Transformer? Measure it on your GPU."""


def _filter_impls(s, impls: list[str]):
    """--impl applies to every scenario: each keeps the named impls that take part in it; a scenario left with none
    is dropped (the op scenario names none and is kept only when an op-level impl is named)."""
    from retnet_bench.suites.contestants.spec import get_spec
    from retnet_bench.suites.plan import SCENARIO_PHASES

    specs = [get_spec(i) for i in impls]  # unknown names: ValueError, one line
    kept = {}
    for kind, sc in s.scenarios.items():
        mine = [sp.name for sp in specs if set(sp.phases) & set(SCENARIO_PHASES[kind])]
        if mine:
            kept[kind] = dataclasses.replace(sc, impls=mine) if kind != "op" else sc
    if not kept:
        raise ValueError(f"no scenario of suite {s.name!r} takes {', '.join(impls)}")
    return dataclasses.replace(s, scenarios=kept)


@app.command()
@one_line_errors
def run(
    suite: Optional[str] = typer.Argument(None, help="Built-in suite name or a suite .toml path. "
                                          "Default: fig6 + table4 on a GPU, smoke on a CPU."),
    model: Optional[str] = typer.Option(None, "--model", help="Comma-separated presets, e.g. 6.7b"),
    batch: Optional[str] = typer.Option(None, "--batch", help="Comma-separated batch sizes, e.g. 1,8"),
    seq: Optional[str] = typer.Option(None, "--seq", help="Comma-separated lengths, e.g. 2048,8192"),
    impl: Optional[str] = typer.Option(None, "--impl", help="Comma-separated impl names (see `list`)"),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="Comma-separated kernels (attention or retention)"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help=f"{', '.join(DTYPES)} (default: the suite's)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N"),
    out: Path = typer.Option(Path("results"), "--out", help="Parent folder: the run is written to <out>/<run-id>/"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Name of the new run folder (default: "
                                         "<date>-<time>-<suite>-<device>)"),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue this run (id or folder), skipping finished points"),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop cleanly after this many seconds "
                                               "(continue later with --resume)"),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Training ranks (one GPU each; FSDP2 when > 1)"),
    tp: Optional[int] = typer.Option(None, "--tp", help="Tensor-parallel degree within the --nproc ranks "
                                     "(heads and FFN split per block; FSDP2 over the rest)"),
    checkpointing: Optional[str] = typer.Option(None, "--checkpointing", help="Training: activation checkpointing, "
                                                "none | full | every-2 | every-4 | every-8 (every N-th block)"),
    compile_blocks: Optional[str] = typer.Option(None, "--compile", help="Training: torch.compile per block, "
                                                 "none | blocks"),
    decode_gemm: Optional[str] = typer.Option(None, "--decode-gemm", help="Decode steps' projections (RetNet's "
                                              "and static's alike): auto | torch (F.linear) | triton"),
    no_nvml: bool = typer.Option(False, "--no-nvml", help="Do not sample NVML during points"),
    no_graph: bool = typer.Option(False, "--no-graph", help="Do not capture CUDA graphs"),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report and print claims at the end"),
) -> None:
    """Run a suite; rows go to <out>/<run-id>/rows.jsonl (out: results) as each point finishes."""
    from retnet_bench.suites import RunOptions, load_suite, run_suite
    from retnet_bench.suites.contract import measure_changing
    from retnet_bench.suites.suite import with_overrides

    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"--time-limit must be a positive number of seconds, got {time_limit:g}")
    for flag, value in (("--run-id", run_id), ("--resume", resume)):
        if value is not None and not value.strip():  # "" would silently mean an automatic id / a new run
            raise ValueError(f"{flag} is empty: give a name (or leave the option out)")
    dev = _device(device)
    if nproc is not None:
        _check_nproc(nproc, dev)
    names = [suite] if suite else (["fig6", "table4"] if dev.type == "cuda" else ["smoke"])
    for flag, value in (("--resume", resume), ("--run-id", run_id)):
        if value is not None and len(names) > 1:  # one folder cannot hold two suites' runs
            raise ValueError(f"{flag} needs an explicit suite name")
    impls = _names(impl)
    training = dict(nproc=nproc, tp=tp, checkpointing=checkpointing, compile=compile_blocks)
    given = [f"--{k}" for k, v in training.items() if v is not None]
    suites = [load_suite(name) for name in names]
    if given and not any("train" in s.scenarios for s in suites):  # else the flag would be silently ignored
        raise ValueError(f"{', '.join(given)}: training only, and suite {' / '.join(names)} has no [train] scenario")
    if decode_gemm is not None and not any({"decode", "capacity"} & set(s.scenarios) for s in suites):
        raise ValueError(f"--decode-gemm: decoding only, and suite {' / '.join(names)} has no [decode] or [capacity] "
                         "scenario")
    # what a resume must repeat: the same points (the suite's overrides) measured the same way
    given_options = [("--model", model), ("--batch", batch), ("--seq", seq), ("--impl", impl), ("--kernel", kernel),
                     ("--dtype", dtype), ("--device", None if device == "auto" else device), ("--nproc", nproc),
                     ("--tp", tp), ("--checkpointing", checkpointing), ("--compile", compile_blocks),
                     ("--decode-gemm", decode_gemm), ("--no-nvml", no_nvml or None), ("--no-graph", no_graph or None),
                     ("--no-report", (not report) or None)]
    run_dirs = []
    for name, loaded in zip(names, suites):
        s = with_overrides(loaded, models=_names(model), dtype=dtype, batch_sizes=_ints(batch, "batch"),
                           seq_lens=_ints(seq, "seq"), kernels=_names(kernel), decode_gemm=decode_gemm, **training)
        if impls is not None:
            s = _filter_impls(s, impls)
        opts = RunOptions(device=dev, out_root=out, run_id=run_id, resume=resume,
                          use_nvml=not no_nvml, use_graph=not no_graph, time_limit_s=time_limit, console=console)
        try:
            outcome = run_suite(s, opts)
        except KeyboardInterrupt as e:  # RunInterrupted names the run folder once it exists
            where = getattr(e, "run_dir", None)
            again = _resume_command(name, where, given_options) if where else None
            err.print(f"interrupted: every finished row is kept; continue with `{again}`" if again else
                      "interrupted before the run folder was made: nothing to resume", markup=False,
                      highlight=False, soft_wrap=True)
            raise typer.Exit(130)
        state = "complete" if outcome.complete else (
            f"stopped early (time limit): continue with `{_resume_command(name, outcome.run_dir, given_options)}`")
        summary = ", ".join(f"{n} {k}" for k, n in sorted(outcome.counts.items())) or "no new rows"
        console.print(f"{s.name}: {outcome.n_rows} rows in {outcome.run_dir} ({state}; this run: {summary})",
                      markup=False, highlight=False)
        changing = measure_changing(os.environ)
        if changing:  # e.g. an allocator setting left in the shell: it changes training steps by up to 17%
            err.print("note: measured with " + ", ".join(f"{k}={v}" for k, v in changing.items())
                      + " (recorded in env.json; `compare` refuses runs made without it)", markup=False,
                      highlight=False, soft_wrap=True)
        if outcome.counts and set(outcome.counts) == {"skipped"}:
            err.print(f"warning: every point of {s.name} was skipped (see the rows' error column, e.g. a missing "
                      "package or no GPU)", markup=False, highlight=False)
        run_dirs.append(outcome.run_dir)
        if not outcome.complete:
            report = False
    if report:  # into the run's own new folder, wherever --out put it (a new reference run included)
        _report(run_dirs, None, guard_reference=False)
        _claims(run_dirs, None, guard_reference=False)


def _resume_command(suite: str, run_dir: Path, options: list[tuple[str, object]]) -> str:
    """`retnet-bench run SUITE --resume RUN_DIR` with the options given to this run (a value of True: a flag)."""
    words = ["retnet-bench", "run", suite, "--resume", str(run_dir)]
    for flag, value in options:
        if value is not None:
            words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


def _check_nproc(nproc: int, dev) -> None:
    import torch

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if dev.type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {nproc} is more than the {torch.cuda.device_count()} visible GPU(s)")


def _report(run_dirs: list[Path], out: Optional[Path], guard_reference: bool = True,
            repeat_dirs: Optional[list[Path]] = None) -> None:
    from retnet_bench.reports import write_report

    paths = write_report(run_dirs, out, guard_reference=guard_reference,
                         repeat_dirs=repeat_dirs or [])  # checks its input before any mkdir
    main_file = paths.get("report_html") or paths.get("report_md") or next(iter(paths.values()), "")
    console.print(f"report: {main_file}", markup=False, highlight=False)


def _claims(run_dirs: list[Path], out: Optional[Path], guard_reference: bool = True) -> None:
    from retnet_bench.reports import claims_rich_table, claims_table, load_runs, write_claims

    from retnet_bench.reports.render import collapsed_lines
    from retnet_bench.reports.report import check_run_folders

    run_dirs = check_run_folders(run_dirs, out, "claims", guard_reference)  # one line, before anything is printed
    df, envs = load_runs(run_dirs)
    claims = claims_table(df, envs)
    table = claims_rich_table(claims)
    if table.row_count:
        console.print(table)
    else:  # nothing judged (a CPU, a tiny model): say so in plain lines, no empty table
        for line in collapsed_lines(claims):
            console.print(f"Not judged: {line}", markup=False, highlight=False, soft_wrap=True)
    written = write_claims(claims, out or run_dirs[0])
    console.print(f"claims: {', '.join(str(p) for p in written.values())}", markup=False, highlight=False)


@app.command()
@one_line_errors
def report(runs: List[Path] = typer.Argument(..., help="Run folders"),
           out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the first run)"),
           repeats_from: List[Path] = typer.Option(
               [], "--repeats-from", help="A run that only adds lines to the run-to-run training table (repeatable)"),
           ) -> None:
    """Write report.md, report.html, figures/ and tables/ for one or more runs."""
    _report(runs, out, repeat_dirs=repeats_from)


@app.command()
@one_line_errors
def claims(runs: List[Path] = typer.Argument(..., help="Run folders"),
           out: Optional[Path] = typer.Option(None, "--out", help="Folder for claims.csv/.md (default: the first run)"),
           ) -> None:
    """Print the paper-claims table (paper value / measured / conditions / verdict) and save it."""
    _claims(runs, out)


@app.command()
@one_line_errors
def compare(
    base: Path = typer.Argument(..., help="Baseline run folder"),
    head: Path = typer.Argument(..., help="New run folder"),
    threshold: str = typer.Option("5%", "--threshold", help="Relative change that counts, e.g. 5%"),
    metric_threshold: List[str] = typer.Option([], "--metric-threshold",
                                               help="Per-metric override, METRIC=PCT, e.g. 'mem_*=2%'"),
    fmt: str = typer.Option("table", "--format", help="table, json or github"),
    out: Path = typer.Option(Path("."), "--out", help="With --format github: folder for benchmark-*.json"),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="Compare runs from different GPUs/schemas"),
) -> None:
    """Compare two runs; exit 0 no regression, 1 regression, 2 bad input."""
    from retnet_bench.reports.compare import compare_runs, parse_threshold, render_github, render_rich, to_json

    per_metric = {}
    for item in metric_threshold:
        if "=" not in item:
            raise ValueError(f"--metric-threshold takes METRIC=PCT, got {item!r}")
        k, v = item.split("=", 1)
        per_metric[k] = parse_threshold(v)
    if fmt not in ("table", "json", "github"):
        raise ValueError(f"unknown format {fmt!r} (table, json, github)")
    result = compare_runs(base, head, threshold=parse_threshold(threshold), metric_thresholds=per_metric,
                          allow_mismatch=allow_mismatch)
    if fmt == "json":
        print(to_json(result))
    elif fmt == "github":  # the regressions first, one ::error line each, then the files written
        console.print(render_github(result, out), markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(render_rich(result))
    raise typer.Exit(result.exit_code)


@app.command("list")
@one_line_errors
def list_() -> None:
    """Suites, model presets, impls and kernels (with whether each can run here)."""
    import torch

    from retnet.config import PRESETS
    from retnet_bench.suites import builtin_suites, load_suite
    from retnet_bench.suites.contestants.spec import load_specs

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # names and install commands are what a user copies: fold long cells, never cut them ("...")
    t = Table(title="suites")
    for c in ("suite", "gpu", "scenarios", "description"):
        t.add_column(c, overflow="fold")
    for name in builtin_suites():
        s = load_suite(name)
        t.add_row(name, "yes" if s.requires_gpu else "", ",".join(s.scenarios), s.description)
    console.print(t)
    console.print("presets: " + ", ".join(PRESETS), markup=False)
    t = Table(title=f"contestants and their kernels on this machine ({dev.type})")
    specs = load_specs().values()
    widest = max(len(x) for sp in specs for x in (sp.name, *sp.kernels, *sp.resolve_kernels([], dev)))
    t.add_column("impl", no_wrap=True, min_width=max(len(sp.name) for sp in specs))
    t.add_column("kernel", no_wrap=True, min_width=min(widest, 14))
    for c in ("role", "phases", "usable here"):
        t.add_column(c, overflow="fold")
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    for spec in specs:
        for kernel in spec.kernels or spec.resolve_kernels([], dev):
            ok, why = spec.available(kernel, dev, dt)
            hint = f" ({spec.install_hint})" if not ok and spec.install_hint and spec.install_hint not in why else ""
            t.add_row(spec.name, kernel, spec.role, ", ".join(spec.phases), "yes" if ok else f"no: {why}{hint}")
    console.print(t)
    t = Table(title="what each contestant is")
    t.add_column("impl", no_wrap=True)
    t.add_column("what", overflow="fold")
    for spec in specs:
        t.add_row(spec.name, spec.description + (" [official code]" if spec.source == "official" else ""))
    console.print(t)
    hints: dict[str, list[str]] = {}
    for spec in specs:
        if spec.install_hint:
            hints.setdefault(spec.install_hint, []).append(spec.name)
    for hint, names in hints.items():  # printed whole, never folded into a cell: this is what users copy
        console.print(f"to install {', '.join(names)}: {hint}", markup=False, highlight=False, soft_wrap=True)


@app.command()
@one_line_errors
def env() -> None:
    """This machine as a run's env.json records it: git commit, host, Python, GPU, driver, CUDA, library versions
    (which kernels can run here: `list`)."""
    import json

    import torch

    from retnet_bench.suites.env import collect_env

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    console.print_json(json.dumps(collect_env(dev)))


def main(argv: Optional[List[str]] = None) -> int:
    """The `retnet-bench` entry point: the app without click's standalone mode, so that a usage error (an unknown
    option, a missing argument) is one line and exit 2 like any other bad input, not click's boxed usage text.
    --help and --version still exit 0, Ctrl-C 130."""
    exceptions = _click_exceptions()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="retnet-bench", standalone_mode=False)
    except exceptions.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `retnet-bench`: the help is the answer (click: exit 2)
            command.main(args=["--help"], prog_name="retnet-bench", standalone_mode=False)
            return 2
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        err.print(f"error: {e.format_message()}{where}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except exceptions.ClickException as e:  # e.g. a file option that cannot be opened: bad input all the same
        err.print(f"error: {e.format_message()}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except (exceptions.Abort, typer.Abort):  # EOF at a prompt or Ctrl-C outside a command's own handling
        err.print("interrupted", markup=False, highlight=False)
        return 130
    return code if isinstance(code, int) else 0


def _click_exceptions():
    """The exception module of the click that typer's commands raise from: newer typer vendors click as
    `typer._click` (no click dependency), older typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


if __name__ == "__main__":
    sys.exit(main())
