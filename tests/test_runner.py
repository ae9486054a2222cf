"""Runner: rows contract, resume after a crash, OOM isolation, time limit. CPU, tiny models."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from retnet_bench.suites import RunError, RunOptions, load_suite, run_suite
from retnet_bench.suites import runner as runner_mod
from retnet_bench.suites.contestants.spec import BuildArgs, get_spec
from retnet_bench.suites.contract import POINT_KEY, ROW_COLUMNS, point_key, read_rows

TIMING = """warmup = 1
min_steps = 2
min_seconds = 0.0
max_steps = 3
chunk_size = 8
"""
HEAD = """
name = "mini"
dtype = "float32"
models = ["tiny"]
"""
DECODE = """[decode]
impls = ["retnet-recurrent", "static"]
kernels = ["sdpa"]
batch_sizes = [1, 2]
seq_lens = [16]
""" + TIMING
TRAIN = """[train]
impls = ["retnet-chunkwise"]
batch_sizes = [1]
seq_lens = [16]
steps = 1
chunk_size = 8
"""
MINI = HEAD + DECODE + TRAIN


def build(impl: str, kernel: str = "sdpa", **kw):
    spec = get_spec(impl)
    kernel = kernel if kernel in spec.kernels else spec.resolve_kernels([], torch.device("cpu"))[0]
    return spec.build(spec, BuildArgs("tiny", kernel, torch.device("cpu"), torch.float32, use_graph=False, **kw))


def capacity_suite(impls: str, seq_len: int, budget: float, max_batch: int, fill: str = "random") -> str:
    return (HEAD.replace('"mini"', '"cap"') + f"[capacity]\nimpls = {impls}\nkernels = [\"sdpa\"]\n" + TIMING
            + f'seq_len = {seq_len}\nmemory_budget_gib = {budget}\nmax_batch = {max_batch}\nfill = "{fill}"\n')


@pytest.fixture
def mini(tmp_path: Path):
    p = tmp_path / "mini.toml"
    p.write_text(MINI)
    return load_suite(str(p))


def _opts(tmp_path: Path, **kw) -> RunOptions:
    return RunOptions(device=torch.device("cpu"), out_root=tmp_path / "results", progress=False, **kw)


def test_rows_have_every_column_and_expected_points(tmp_path, mini, monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.delenv("CUDA_LAUNCH_BLOCKING", raising=False)
    out = run_suite(mini, _opts(tmp_path, run_id="r1"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    assert out.complete and all(set(r) == set(ROW_COLUMNS) for r in rows)
    by_phase = {}
    for r in rows:
        by_phase.setdefault(r["phase"], []).append(r)
        assert r["status"] == "ok", r["error"]
    assert len(by_phase["decode"]) == 4 and len(by_phase["prefill"]) == 4 and len(by_phase["train"]) == 1
    d = by_phase["decode"][0]
    assert d["tokens_per_s"] > 0 and d["ms_p10"] <= d["ms_median"] <= d["ms_p90"] and d["n_params"] > 0
    assert d["bytes_per_step"] > 0 and d["mem_analytic_gb"] > 0
    env = json.loads((out.run_dir / "env.json").read_text())
    assert env["suite"] == "mini" and env["schema_version"] == 3 and "git_sha" in env
    assert env["nvml_sampler"] is False and env["cuda_graphs"] is False  # what was really used on a CPU
    # provenance: the suite file itself travels with the run (a temporary file would be lost), and the run says it
    # finished; the path and sha256 stay
    assert (out.run_dir / "suite.toml").read_bytes() == Path(mini.path).read_bytes()
    assert env["complete"] is True and env["suite_path"] == mini.path and env["suite_sha256"] == mini.sha256
    # the allocator's settings change what is measured: recorded when set, absent when not
    assert env["runtime_env"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "CUDA_LAUNCH_BLOCKING" not in env["runtime_env"]
    assert {r["role"] for r in rows if r["impl"] == "static"} == {"baseline"}
    assert {r["n_kv_heads"] for r in rows if r["impl"] == "static"} == {2}  # tiny: 2 query heads, MHA
    assert {r["state_dtype"] for r in rows if r["impl"] == "retnet-recurrent"} == {"float32"}
    # the decode steps' projections: "auto" is F.linear on a CPU; a prefill row has no decode step
    assert {r["decode_gemm"] for r in by_phase["decode"]} == {"torch"}
    assert {r["decode_gemm"] for r in by_phase["prefill"] + by_phase["train"]} == {None}
    assert (out.run_dir / "table.csv").read_text().splitlines()[0].split(",")[: 3] == list(ROW_COLUMNS[:3])


def test_a_row_from_before_decode_gemm_resumes_as_torch():
    """Decode and capacity rows without the column ran F.linear: their resume key is a "torch" point's, never a
    "triton" one's; other phases have none."""
    old = dict(model="6.7b", impl="static", phase="decode", batch_size=8, seq_len=8192)
    assert point_key(old) == point_key({**old, "decode_gemm": "torch"}) != point_key({**old, "decode_gemm": "triton"})
    assert point_key({**old, "phase": "prefill"})[POINT_KEY.index("decode_gemm")] is None


@pytest.mark.parametrize("scenario", ["decode", "capacity"])
def test_decode_memory_restarts_after_the_first_step(tmp_path, mini, monkeypatch, scenario):
    """Every decode point restarts its memory peaks after its first step (on a GPU it autotunes Triton kernels, whose
    scratch is no decode memory), then takes at least one more untimed step, and never restarts inside the timed
    loop. A capacity probe never restarts: a batch must fit its first step too."""
    from retnet_bench.suites import trackers

    log: list[str] = []
    real_time = trackers.LatencyTracker.time
    monkeypatch.setattr(trackers.MemoryTracker, "warmed_up", lambda self: log.append("warmed_up"))
    monkeypatch.setattr(trackers.LatencyTracker, "time",
                        lambda self, *a, **k: (log.append("timed"), real_time(self, *a, **k))[1])
    for cls in {type(build(impl)) for impl in ("retnet-recurrent", "static")}:
        real_step = cls.step
        monkeypatch.setattr(cls, "step", lambda self, _real=real_step: (log.append("step"), _real(self))[1])
    suite = mini
    if scenario == "capacity":
        cap = tmp_path / "cap.toml"
        cap.write_text(capacity_suite('["retnet-recurrent", "static"]', 16, 0.05, 64))
        suite = load_suite(str(cap))
    out = run_suite(suite, _opts(tmp_path, run_id="w"))
    points = [r for r in read_rows(out.run_dir / "rows.jsonl") if r["phase"] in ("decode", "capacity_probe")]
    events = "".join({"step": "s", "warmed_up": "W", "timed": "T"}[e] for e in log)
    # per point: the first step, the restart (decode only), at least one untimed step, then the timed steps
    restart = "W" if scenario == "decode" else ""
    assert re.fullmatch(rf"(s{restart}s+Ts*)+", events), events
    assert events.count("W") == (len(points) if scenario == "decode" else 0) and events.count("T") == len(points) > 0


def test_a_row_says_which_projections_its_step_ran(mini):
    """decode_gemm "triton" is what a step of at most 16 sequences ran; a larger batch ran F.linear and its row says
    "torch". A capacity answer beyond 16 sequences finishes the batch-less point of either setting (both ran F.linear)."""
    import dataclasses

    from retnet_bench.suites.plan import Group, Point, plan
    from retnet_bench.suites.runner import _done_points

    g = next(g for g in plan(mini, torch.device("cpu")) if g.scenario == "decode" and g.impl == "static")
    g = dataclasses.replace(g, decode_gemm="triton")
    assert g.row_identity(Point("decode", 16, 64), "float32")["decode_gemm"] == "triton"
    assert g.row_identity(Point("decode", 17, 64), "float32")["decode_gemm"] == "torch"
    assert g.row_identity(Point("prefill", 4, 64), "float32")["decode_gemm"] is None
    cap = dataclasses.replace(g, scenario="capacity")
    answer = dict(cap.row_identity(Point("capacity", 231, 64), "float32"), status="ok")
    assert answer["decode_gemm"] == "torch" and cap.key(Point("capacity", None, 64), "float32") in _done_points([answer])
    small = dict(cap.row_identity(Point("capacity", 14, 64), "float32"), status="ok")  # ran the kernel: triton only
    torch_plan = dataclasses.replace(cap, decode_gemm="torch")
    assert torch_plan.key(Point("capacity", None, 64), "float32") not in _done_points([small])


def test_existing_run_is_never_overwritten(tmp_path, mini):
    run_suite(mini, _opts(tmp_path, run_id="same"))
    with pytest.raises(RunError, match="already exists"):
        run_suite(mini, _opts(tmp_path, run_id="same"))


def test_resume_after_crash_keeps_rows_and_duplicates_none(tmp_path, mini, monkeypatch):
    calls = {"n": 0}
    real = runner_mod.Runner._measure

    def crashing(self, c, g, p):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a crash the runner must not swallow
        return real(self, c, g, p)

    monkeypatch.setattr(runner_mod.Runner, "_measure", crashing)
    with pytest.raises(KeyboardInterrupt) as info:
        run_suite(mini, _opts(tmp_path, run_id="crash"))
    run_dir = tmp_path / "results" / "crash"
    assert info.value.run_dir == run_dir  # the CLI's Ctrl-C hint names it
    assert json.loads((run_dir / "env.json").read_text())["complete"] is False
    before = read_rows(run_dir / "rows.jsonl")
    assert len(before) == 4  # two decode points (prefill + decode rows each) finished before the crash
    with open(run_dir / "rows.jsonl", "a") as f:
        f.write('{"torn": ')  # a crash in the middle of a write
    monkeypatch.setattr(runner_mod.Runner, "_measure", real)
    (run_dir / "suite.toml").unlink()  # as a run made before the suite file was kept: the resume adds it
    out = run_suite(mini, _opts(tmp_path, resume="crash"))
    assert (run_dir / "suite.toml").read_bytes() == Path(mini.path).read_bytes()
    rows = read_rows(out.run_dir / "rows.jsonl")
    keys = [point_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 9 and rows[:4] == before
    env = json.loads((run_dir / "env.json").read_text())
    assert env["resumed"] and env["complete"] is True


def test_injected_oom_is_recorded_and_the_sweep_goes_on(tmp_path, mini, monkeypatch):
    from retnet_bench.suites.contestants.retnet import RetNetContestant

    def oom(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(RetNetContestant, "begin_decode", oom)
    out = run_suite(mini, _opts(tmp_path, run_id="oom"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    decode = [r for r in rows if r["phase"] == "decode"]
    assert [r["status"] for r in decode if r["impl"] == "retnet-recurrent"] == ["oom", "oom"]
    assert "out of memory" in decode[0]["error"]
    assert all(r["status"] == "ok" for r in decode if r["impl"] == "static")
    assert [r["status"] for r in rows if r["phase"] == "train"] == ["ok"]


def test_build_failure_gives_error_rows_for_its_points(tmp_path, mini, monkeypatch):
    import dataclasses

    from retnet_bench.suites.contestants import spec as spec_mod

    spec_mod.load_specs()

    def broken(spec, args):
        raise RuntimeError("kernel not supported on this device")

    monkeypatch.setitem(spec_mod.SPECS, "static", dataclasses.replace(spec_mod.SPECS["static"], build=broken))
    out = run_suite(mini, _opts(tmp_path, run_id="err"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    static = [r for r in rows if r["impl"] == "static"]
    assert len(static) == 2 and all(r["status"] == "error" and "not supported" in r["error"] for r in static)


def test_time_limit_stops_cleanly_and_resume_finishes(tmp_path, mini):
    def complete() -> bool:
        return json.loads((tmp_path / "results" / "tl" / "env.json").read_text())["complete"]

    out = run_suite(mini, _opts(tmp_path, run_id="tl", time_limit_s=0.0))
    assert not out.complete and complete() is False
    Path(mini.path).unlink()  # a temporary suite file, gone: the run's own copy resumes it
    out = run_suite(load_suite(str(out.run_dir / "suite.toml")), _opts(tmp_path, resume="tl"))
    assert out.complete and out.n_rows == 9 and complete() is True


@pytest.mark.parametrize("fill", ["prefill", "random"])
def test_capacity_finds_the_largest_batch_within_budget(tmp_path, fill):
    """A budget that binds (tiny's weights are 0.0168 GB): 0.0172 GiB = 0.01847 GB lets RetNet fit 49 sequences at
    T=16 (0.01844 GB) and the Transformers all 64 (0.01783 GB); a search that read the budget as 0.0172 GB would
    fit none of these."""
    p = tmp_path / "cap.toml"
    p.write_text(capacity_suite('["retnet-recurrent", "static", "paper-like"]', 16, 0.0172, 64, fill))
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="cap"))
    all_rows = read_rows(out.run_dir / "rows.jsonl")
    answers = {r["impl"]: r for r in all_rows if r["phase"] == "capacity"}
    assert sorted(answers) == ["paper-like", "retnet-recurrent", "static"]
    budget_gb = 0.0172 * 2**30 / 1e9  # the budget is in GiB, the measured memory in GB
    assert answers["retnet-recurrent"]["batch_size"] < 64 and answers["static"]["batch_size"] == 64
    for r in answers.values():  # exact: the answer is ok, and batch + 1 was probed and did not fit (or is beyond max_batch)
        assert r["status"] == "ok" and r["mem_analytic_gb"] <= budget_gb and r["capacity_budget_gib"] == 0.0172
        assert r["mem_analytic_gb"] > 0.0172  # the unit matters at this answer
        assert ("random values" in (r["notes"] or "")) == (fill == "random")
        assert "within 0.0172 GiB (0.01847 GB)" in r["notes"]
        probes = {q["batch_size"]: q for q in all_rows if q["phase"] == "capacity_probe" and q["impl"] == r["impl"]}
        assert probes[r["batch_size"]]["status"] == "ok"
        assert r["batch_size"] == 64 or probes[r["batch_size"] + 1]["status"] in ("over_budget", "oom")
        for q in probes.values():  # every probe judged against the GiB budget in bytes
            assert (q["status"] == "ok") == (q["mem_analytic_gb"] <= budget_gb), q


def test_a_probe_is_judged_against_the_budget_in_gib():
    from retnet_bench.suites.scenarios.capacity import within_budget

    assert within_budget(0.052, 0.05) and not within_budget(0.0537, 0.05)  # 0.05 GiB = 0.05369 GB
    assert within_budget(85.8, 80.0) and not within_budget(86.0, 80.0)  # the A100-80GB's 80 GiB = 85.90 GB


def test_a_capacity_probe_uses_at_least_the_reserved_peak():
    """NVML, read at a probe's edges, can miss a peak the allocator reached in between: the budget bounds the larger."""
    from retnet_bench.suites.scenarios.capacity import _used_gb

    assert _used_gb(dict(mem_nvml_delta_gb=79.9, mem_torch_reserved_gb=83.8, mem_analytic_gb=70.0)) == 83.8
    assert _used_gb(dict(mem_nvml_delta_gb=80.0, mem_torch_reserved_gb=79.8)) == 80.0
    assert _used_gb(dict(mem_analytic_gb=70.0)) == 70.0 and _used_gb({}) == float("inf")


def test_capacity_search_finds_the_exact_boundary_in_few_probes():
    from retnet_bench.suites.scenarios.capacity import search

    for best in (1, 7, 13, 14, 100, 209, 1000):
        for guess in (1, best - 3, best, best + 1, best + 40, 1024):
            guess = max(1, min(guess, 1024))
            found, probed = search(lambda b: b <= best, guess, 1024)
            assert found == best and best + 1 in probed + [1025] and len(probed) <= 24, (best, guess, probed)
    assert search(lambda b: False, 10, 1024)[0] is None
    assert search(lambda b: True, 10, 50)[0] == 50


@pytest.mark.skipif(not __import__("retnet_bench.baselines.peers", fromlist=["x"]).torchscale_available()[0],
                    reason="torchscale not installed")
def test_peers_get_no_prefill_row_and_enter_capacity_searches(tmp_path):
    """The peers' state is filled, not prefilled: no (meaningless) prefill row; their analytic state size lets a
    capacity search start from the right batch."""
    peers = 'impls = ["torchscale-retnet", "torchscale-transformer"]'
    p = tmp_path / "peers.toml"
    p.write_text(HEAD + DECODE.replace('impls = ["retnet-recurrent", "static"]', peers))
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="peers"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert {r["phase"] for r in rows} == {"decode"} and len(rows) == 4
    for r in rows:
        assert r["mem_analytic_gb"] > r["weights_gb"] and "pre-filled with random" in r["notes"]
    cap = tmp_path / "cap.toml"
    cap.write_text(capacity_suite('["torchscale-retnet", "torchscale-transformer"]', 64, 0.05, 4096))
    out = run_suite(load_suite(str(cap)), _opts(tmp_path, run_id="cap"))
    found = {r["impl"]: r for r in read_rows(out.run_dir / "rows.jsonl") if r["phase"] == "capacity"}
    assert set(found) == {"torchscale-retnet", "torchscale-transformer"}
    for r in found.values():
        assert r["phase"] == "capacity" and r["mem_analytic_gb"] <= 0.05 * 2**30 / 1e9
    # tiny: a 64-token K/V cache (2*64*64 per layer) outweighs the recurrent state (2 heads x 32 x 64)
    assert found["torchscale-retnet"]["batch_size"] > found["torchscale-transformer"]["batch_size"]


def test_latency_tracker_runs_between_outside_the_timed_calls():
    from retnet_bench.suites.trackers import LatencyTracker

    calls: list[str] = []
    t = LatencyTracker(torch.device("cpu"), min_steps=4, min_seconds=0.0, max_steps=4)
    timing = t.time(lambda: calls.append("step"), between=lambda: calls.append("between"))
    assert timing.n == 4 and calls == ["step", "between"] * 4


_CAT_IMPLS = ["paper-like", "hf"] + (["torchscale-transformer"] if __import__(
    "retnet_bench.baselines.peers", fromlist=["x"]).torchscale_available()[0] else [])


@pytest.mark.parametrize("impl", _CAT_IMPLS)
def test_cat_grown_caches_are_back_at_T_and_contiguous_between_steps(impl):
    """Every timed step decodes at exactly T, from a cache laid out as the model's own decoding leaves it."""
    c = build(impl)
    B, T = 2, 12
    (c.prefill if c.can_prefill else c.fill)(B, T)

    def kv() -> list[torch.Tensor]:
        if impl == "paper-like":
            return c.cache.k + c.cache.v
        if impl == "hf":
            return [t for layer in c.past.cache.layers for t in (layer.keys, layer.values)]
        return [t for s in c.peer.state.values() for t in (s["prev_key"], s["prev_value"])]

    c.begin_decode()
    for _ in range(3):
        c.step()
        assert {t.shape[-2] for t in kv()} == {T + 1}  # the step grew the cache by torch.cat
        c.between_steps()
        assert {t.shape[-2] for t in kv()} == {T} and all(t.is_contiguous() for t in kv())
    c.close()


def test_env_names_the_commit_given_by_the_environment_over_git(monkeypatch):
    """A tree copied to a GPU machine may carry a stale .git; the commit named in the environment wins."""
    from retnet_bench.suites.env import collect_env

    monkeypatch.setenv("RETNET_BENCH_GIT_SHA", "0123abc")
    monkeypatch.setenv("RETNET_BENCH_GIT_DIRTY", "false")
    env = collect_env(torch.device("cpu"))
    assert env["git_sha"] == "0123abc" and env["git_dirty"] is False


def test_a_peer_that_cannot_run_here_gives_skipped_rows_and_the_sweep_goes_on(tmp_path):
    """fla-retnet needs fla, triton and a CUDA GPU: on this CPU it is a clean `skipped` row with the reason."""
    p = tmp_path / "fla.toml"
    p.write_text(HEAD + DECODE.replace('impls = ["retnet-recurrent", "static"]',
                                       'impls = ["fla-retnet", "retnet-recurrent"]'))
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="fla"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    fla = [r for r in rows if r["impl"] == "fla-retnet"]
    assert len(fla) == 2 and all(r["status"] == "skipped" for r in fla)
    assert all(("not installed" in r["error"]) or ("CUDA GPU" in r["error"]) for r in fla)
    assert all(r["status"] == "ok" for r in rows if r["impl"] == "retnet-recurrent")


def test_resume_on_the_gpu_path_adds_no_row(tmp_path, mini, monkeypatch):
    """On a GPU the RetNet step kernel resolves to `triton`; the plan must key its points with the name the rows
    carry, or a resume measures every RetNet point again (issue 13). Force the GPU default on this CPU."""
    import dataclasses

    from retnet_bench.suites.contestants import spec as spec_mod

    real = spec_mod.load_specs()["retnet-recurrent"]
    gpu_like = dataclasses.replace(real, kernels=("torch", "triton-cpu"), default_kernel=lambda d, preset: "triton-cpu",
                                   available=lambda k, d, t: (True, ""),
                                   build=lambda sp, a: real.build(sp, dataclasses.replace(a, kernel="torch")))
    monkeypatch.setitem(spec_mod.SPECS, "retnet-recurrent", gpu_like)
    out = run_suite(mini, _opts(tmp_path, run_id="gpu"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    assert {r["kernel"] for r in rows if r["impl"] == "retnet-recurrent" and r["phase"] == "decode"} == {"triton-cpu"}
    again = run_suite(mini, _opts(tmp_path, resume="gpu"))
    assert again.n_rows == len(rows) and again.counts == {}


def test_a_decode_only_impl_in_the_train_table_is_bad_input(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(HEAD + TRAIN.replace('impls = ["retnet-chunkwise"]', 'impls = ["static"]'))
    with pytest.raises(RunError, match="'static' has no train phase"):
        run_suite(load_suite(str(p)), _opts(tmp_path, run_id="bad"))


def test_every_impl_name_lives_in_exactly_one_spec():
    """`git grep` would find each impl name in one spec only: the registry holds no second list of names."""
    import re

    from retnet_bench.suites.contestants.spec import load_specs

    root = Path(__file__).resolve().parents[1]
    # the model packages (retnet/, baselines/) know no impl names at all; "static" there is HF's own cache kind
    code = [f for f in (root / "suites").rglob("*.py")] + [root / "cli.py"]
    specs = load_specs()
    families = {sp.arch for sp in specs.values()}
    for name in specs:
        # an impl named like its family ("transformer") can only be told apart where it is declared as a name
        pattern = rf'name="{re.escape(name)}"' if name in families else rf'"{re.escape(name)}"'
        hits = [f.relative_to(root) for f in code if re.search(pattern, f.read_text())]
        assert len(hits) == 1 and str(hits[0]).startswith("suites/contestants/"), (name, hits)


def test_one_cost_model_per_family_whichever_adapter_builds_it():
    """Every Transformer adapter counts a decode step's bytes the same way (its weights once, the embedding's B rows
    instead of the table, the KV prefix read and the new token's K and V written): the HF model differs from ours
    only by its parameter count (RMSNorm has no bias); the RetNet adapter's bytes equal the closed form in
    retnet/analytic.py plus the position counter it also reads and writes."""
    from retnet import analytic as ra
    from retnet_bench.baselines import analytic as ta

    static, hf, paper = build("static"), build("hf"), build("paper-like")
    assert static.n_params == paper.n_params and abs(hf.n_params - static.n_params) < 1e-3 * static.n_params
    for b, t in ((1, 16), (3, 40)):
        assert static.analytic(b, t) == paper.analytic(b, t)
        for c in (static, hf):
            a, d = c.analytic(b, t), c.cfg.d_model
            kv = ta.kv_cache_bytes(c.cfg, b, t, torch.float32) + ta.kv_cache_bytes(c.cfg, b, 1, torch.float32)
            assert a.bytes_per_step == (c.n_params - c.vocab * d + b * d) * 4 + kv and a.weights_bytes == c.n_params * 4
    r = build("retnet-recurrent")
    for b in (1, 3):
        assert r.analytic(b, 16).bytes_per_step == ra.decode_bytes_per_step(r.cfg, b, torch.float32, torch.float32) \
            + 2 * torch.int64.itemsize


def test_prefill_repeats_give_a_spread(tmp_path):
    p = tmp_path / "rep.toml"
    p.write_text(HEAD + DECODE.replace("seq_lens = [16]", "seq_lens = [16]\nprefill_repeats = 3"))
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="rep"))
    pre = [r for r in read_rows(out.run_dir / "rows.jsonl") if r["phase"] == "prefill"]
    assert pre and all(r["n_repeats"] == 3 and r["ms_p10"] <= r["ms_median"] <= r["ms_p90"] for r in pre)


@pytest.mark.skipif(not __import__("retnet_bench.baselines.peers", fromlist=["x"]).torchscale_available()[0],
                    reason="torchscale not installed")
def test_the_papers_training_pipeline_gives_train_rows(tmp_path):
    """torchscale's RetNet (chunkwise, chunk from the suite) and Transformer train as Table 4's pipeline rows,
    forward + backward only (they have no engine recipe), and say so."""
    p = tmp_path / "ts.toml"
    p.write_text(HEAD + TRAIN.replace('impls = ["retnet-chunkwise"]', 'impls = ["torchscale-retnet", "torchscale-transformer"]'))
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="ts"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    assert sorted(r["impl"] for r in rows) == ["torchscale-retnet", "torchscale-transformer"]
    for r in rows:
        assert r["status"] == "ok" and r["tokens_per_s"] > 0 and r["kernel"] == "torchscale", r["error"]
        assert "forward + backward only" in r["notes"] and "torchscale 0.3.0 training" in r["notes"]
    assert "chunk 8" in next(r["notes"] for r in rows if r["impl"] == "torchscale-retnet")


def test_an_fp8_kv_cache_no_kernel_takes_gives_skipped_rows_beside_the_bf16_ones(tmp_path):
    """`kv_dtypes` adds a quantized-KV variant of the static decoder; where no kernel takes FP8 K/V (here: no GPU)
    its points are `skipped` rows that say why, keyed by state_dtype, and the cache in the model dtype still runs."""
    p = tmp_path / "fp8.toml"
    p.write_text(HEAD + DECODE.replace("seq_lens = [16]", 'seq_lens = [16]\nkv_dtypes = ["float8_e4m3fn"]'))
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="fp8"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    fp8 = [r for r in rows if r["state_dtype"] == "float8_e4m3fn"]
    assert {r["impl"] for r in fp8} == {"static"} and len(fp8) == 2  # RetNet takes no KV-cache variant
    assert all(r["status"] == "skipped" and "FP8 KV cache" in r["error"] for r in fp8)
    assert len({point_key(r) for r in rows}) == len(rows)
    plain = [r for r in rows if r["impl"] == "static" and r["state_dtype"] is None]
    assert plain and all(r["status"] == "ok" for r in plain)


def test_kv_dtypes_takes_only_the_quantized_cache_precisions(tmp_path):
    from retnet_bench.suites.suite import SuiteError

    p = tmp_path / "bad.toml"
    p.write_text(HEAD + DECODE.replace("seq_lens = [16]", 'seq_lens = [16]\nkv_dtypes = ["int4"]'))
    with pytest.raises(SuiteError, match="kv_dtypes"):
        load_suite(str(p))


def test_the_nvml_reader_starts_no_thread_and_keeps_the_peak_of_its_reads():
    """NVML is read at a point's start and end only (a polling thread slowed the measured step on the H200)."""
    import threading

    from retnet_bench.suites.trackers import PeakSampler

    values = iter([5, 9, 7, 3])
    reader = PeakSampler(lambda: next(values), interval_s=None)
    before = threading.active_count()
    with reader:
        assert threading.active_count() == before
        reader.read()  # 9
        reader.read()  # 7
    assert reader.peak == 9  # enter 5, reads 9 and 7, exit 3


def test_a_run_of_an_older_schema_is_not_resumed(tmp_path, mini):
    """Its rows and this version's would mean different things (schema 3: the engine's memory columns moved from
    GiB to GB under the same names): one clear line, no new rows."""
    out = run_suite(mini, _opts(tmp_path, run_id="old", time_limit_s=0.0))
    env_path = out.run_dir / "env.json"
    env_path.write_text(json.dumps({**json.loads(env_path.read_text()), "schema_version": 2}))
    before = (out.run_dir / "rows.jsonl").read_text() if (out.run_dir / "rows.jsonl").exists() else ""
    with pytest.raises(RunError, match="schema 2, this version writes schema 3; start a new run"):
        run_suite(mini, _opts(tmp_path, resume="old"))
    after = (out.run_dir / "rows.jsonl").read_text() if (out.run_dir / "rows.jsonl").exists() else ""
    assert after == before


def test_env_records_the_machine_boot_and_host_cpu(tmp_path):
    """Which boot of which machine a run ran on (runs of one lease share it) and its host CPU: a host-bound step moves
    with the host (2026-11-29-probes-s11). Unreadable files give None, never a failed run."""
    from retnet_bench.suites.env import collect_env, machine_identity

    (tmp_path / "boot_id").write_text("5c1f-b00t\n")
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: x\n")
    assert machine_identity(tmp_path / "boot_id", tmp_path / "cpuinfo") == {
        "boot_id": "5c1f-b00t", "cpu_model": "Intel(R) Xeon(R) Processor"}
    assert machine_identity(tmp_path / "missing", tmp_path / "missing") == {"boot_id": None, "cpu_model": None}
    env = collect_env(torch.device("cpu"))
    assert {"boot_id", "cpu_model"} <= set(env)
