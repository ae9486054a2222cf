"""retnet-bench: a thin Typer app over suites/ (measure) and reports/ (explain). All logic lives there."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Does RetNet decode 8.4x faster with 70% less memory than a KV-cache Transformer? "
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
        except (ValueError, FileNotFoundError, PermissionError, KeyError) as e:
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)

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


@app.command()
@one_line_errors
def run(
    suite: Optional[str] = typer.Argument(None, help="Built-in suite name or a suite .toml path. "
                                          "Default: fig6 + table4 on a GPU, smoke on a CPU."),
    model: Optional[str] = typer.Option(None, "--model", help="Comma-separated presets, e.g. 6.7b"),
    batch: Optional[str] = typer.Option(None, "--batch", help="Comma-separated batch sizes, e.g. 1,8"),
    seq: Optional[str] = typer.Option(None, "--seq", help="Comma-separated lengths, e.g. 2048,8192"),
    impl: Optional[str] = typer.Option(None, "--impl", help="Comma-separated impl names (see `list`)"),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="Comma-separated attention kernels"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16, float16, float32"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    out: Path = typer.Option(Path("results"), "--out", help="Folder that receives results/<run-id>/"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Name of the new run folder"),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue this run (id or folder), skipping finished points"),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop cleanly after this many seconds "
                                               "(continue later with --resume)"),
    no_nvml: bool = typer.Option(False, "--no-nvml", help="Do not sample NVML during points"),
    no_graph: bool = typer.Option(False, "--no-graph", help="Do not capture CUDA graphs"),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report and print claims at the end"),
) -> None:
    """Run a suite; rows go to results/<run-id>/rows.jsonl as each point finishes."""
    from retnet_bench.suites import RunOptions, load_suite, run_suite

    dev = _device(device)
    names = [suite] if suite else (["fig6", "table4"] if dev.type == "cuda" else ["smoke"])
    if resume and len(names) > 1:
        raise ValueError("--resume needs an explicit suite name")
    overrides = dict(models=_names(model), batch_sizes=_ints(batch, "batch"), seq_lens=_ints(seq, "seq"),
                     impls=_names(impl), kernels=_names(kernel), dtype=dtype)
    if overrides["impls"] is not None:
        overrides["train_impls"] = overrides["impls"]
    run_dirs = []
    for name in names:
        s = load_suite(name)
        over = dict(overrides)
        if over.get("impls") is not None:  # --impl filters decode and train impls by what each phase accepts
            from retnet_bench.suites.registry import IMPLS

            bad = [i for i in over["impls"] if i not in IMPLS]
            if bad:
                raise ValueError(f"unknown impl {bad[0]!r} (choose from {', '.join(IMPLS)})")
            over["impls"] = [i for i in over["impls"] if set(IMPLS[i].phases) & {"decode", "capacity"}] or s.impls
            over["train_impls"] = [i for i in over["train_impls"] if "train" in IMPLS[i].phases] or s.train_impls
        s = s.with_overrides(**over)
        opts = RunOptions(device=dev, out_root=out, run_id=run_id if len(names) == 1 else None, resume=resume,
                          use_nvml=not no_nvml, use_graph=not no_graph, time_limit_s=time_limit, console=console)
        outcome = run_suite(s, opts)
        state = "complete" if outcome.complete else "stopped early (time limit): continue with --resume"
        console.print(f"[bold]{s.name}[/]: {outcome.n_rows} rows in {outcome.run_dir} ({state})")
        run_dirs.append(outcome.run_dir)
        if not outcome.complete:
            report = False
    if report:
        _report(run_dirs, None)
        _claims(run_dirs)


def _report(run_dirs: list[Path], out: Optional[Path]) -> None:
    from retnet_bench.reports import write_report

    paths = write_report(run_dirs, out)
    console.print(f"report: {paths.get('report.md', paths)}")


def _claims(run_dirs: list[Path]) -> None:
    from retnet_bench.reports import claims_rich_table, claims_table, load_runs, write_claims

    df, envs = load_runs(run_dirs)
    claims = claims_table(df, envs)
    console.print(claims_rich_table(claims))
    written = write_claims(claims, run_dirs[0])
    console.print(f"claims: {', '.join(str(p) for p in written)}")


@app.command()
@one_line_errors
def report(runs: List[Path] = typer.Argument(..., help="Run folders"),
           out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the first run)")) -> None:
    """Write report.md, report.html, figures/ and tables/ for one or more runs."""
    _report(runs, out)


@app.command()
@one_line_errors
def claims(runs: List[Path] = typer.Argument(..., help="Run folders")) -> None:
    """Print the paper-claims table (paper value / measured / conditions / verdict) and save it."""
    _claims(runs)


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
    from retnet_bench.reports.compare import compare_runs, parse_threshold, render_rich, to_json, write_github

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
    elif fmt == "github":
        for path in write_github(result, out).values():
            console.print(f"wrote {path}")
    else:
        console.print(render_rich(result))
    raise typer.Exit(result.exit_code)


@app.command("list")
@one_line_errors
def list_() -> None:
    """Suites, model presets, impls and kernels (with whether each can run here)."""
    import torch

    from retnet_bench.suites import builtin_suites, load_suite
    from retnet_bench.suites.registry import IMPLS, availability, kernel_names, preset_names

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t = Table(title="suites")
    for c in ("suite", "gpu", "description"):
        t.add_column(c)
    for name in builtin_suites():
        s = load_suite(name)
        t.add_row(name, "yes" if s.requires_gpu else "", s.description)
    console.print(t)
    console.print("presets: " + ", ".join(preset_names()))
    t = Table(title=f"impls and kernels on this machine ({dev.type})")
    for c in ("name", "kind", "phases", "usable here", "what"):
        t.add_column(c)
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    for name, info in IMPLS.items():
        ok, why = availability(name, "sdpa", dev, dt)
        t.add_row(name, "impl", ",".join(info.phases), "yes" if ok else f"no: {why}", info.description)
    from retnet_bench.baselines import kernel_available

    for k in kernel_names():
        for phase in ("train", "decode"):
            ok, why = kernel_available(k, dev, dt, phase=phase)
            t.add_row(k, "kernel", phase, "yes" if ok else f"no: {why}", "attention kernel")
    console.print(t)


@app.command()
@one_line_errors
def env() -> None:
    """This machine: GPU, driver, CUDA, NVML, library versions, usable kernels."""
    import json

    import torch

    from retnet_bench.suites.env import collect_env

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    console.print_json(json.dumps(collect_env(dev)))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
