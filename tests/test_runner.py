"""Runner: rows contract, resume after a crash, OOM isolation, time limit. CPU, tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from retnet_bench.suites import RunError, RunOptions, load_suite, run_suite
from retnet_bench.suites import runner as runner_mod
from retnet_bench.suites.rows import read_rows
from retnet_bench.suites.schema import ROW_COLUMNS, point_key

MINI = """
name = "mini"
dtype = "float32"
models = ["tiny"]
phases = ["decode", "train"]
impls = ["retnet-recurrent", "static"]
kernels = ["sdpa"]
batch_sizes = [1, 2]
seq_lens = [16]
warmup = 1
min_steps = 2
min_seconds = 0.0
max_steps = 3
train_impls = ["retnet-chunkwise"]
train_batch_sizes = [1]
train_seq_lens = [16]
train_steps = 1
chunk_size = 8
"""


@pytest.fixture
def mini(tmp_path: Path):
    p = tmp_path / "mini.toml"
    p.write_text(MINI)
    return load_suite(str(p))


def _opts(tmp_path: Path, **kw) -> RunOptions:
    return RunOptions(device=torch.device("cpu"), out_root=tmp_path / "results", progress=False, **kw)


def test_rows_have_every_column_and_expected_points(tmp_path, mini):
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
    assert env["suite"] == "mini" and env["schema_version"] == 1 and "git_sha" in env
    assert (out.run_dir / "table.csv").read_text().splitlines()[0].split(",")[: 3] == list(ROW_COLUMNS[:3])


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
    with pytest.raises(KeyboardInterrupt):
        run_suite(mini, _opts(tmp_path, run_id="crash"))
    run_dir = tmp_path / "results" / "crash"
    before = read_rows(run_dir / "rows.jsonl")
    assert len(before) == 4  # two decode points (prefill + decode rows each) finished before the crash
    with open(run_dir / "rows.jsonl", "a") as f:
        f.write('{"torn": ')  # a crash in the middle of a write
    monkeypatch.setattr(runner_mod.Runner, "_measure", real)
    out = run_suite(mini, _opts(tmp_path, resume="crash"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    keys = [point_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 9 and rows[:4] == before
    assert json.loads((run_dir / "env.json").read_text())["resumed"]


def test_injected_oom_is_recorded_and_the_sweep_goes_on(tmp_path, mini, monkeypatch):
    from retnet_bench.suites.impl_retnet import RetNetContestant

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
    from retnet_bench.suites import registry

    real = registry.build

    def broken(impl, *a, **kw):
        if impl == "static":
            raise RuntimeError("kernel not supported on this device")
        return real(impl, *a, **kw)

    monkeypatch.setattr(registry, "build", broken)
    out = run_suite(mini, _opts(tmp_path, run_id="err"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    static = [r for r in rows if r["impl"] == "static"]
    assert len(static) == 2 and all(r["status"] == "error" and "not supported" in r["error"] for r in static)


def test_time_limit_stops_cleanly_and_resume_finishes(tmp_path, mini):
    out = run_suite(mini, _opts(tmp_path, run_id="tl", time_limit_s=0.0))
    assert not out.complete
    out = run_suite(mini, _opts(tmp_path, resume="tl"))
    assert out.complete and out.n_rows == 9


@pytest.mark.parametrize("fill", ["prefill", "random"])
def test_capacity_finds_the_largest_batch_within_budget(tmp_path, fill):
    p = tmp_path / "cap.toml"
    suite = (MINI.replace('phases = ["decode", "train"]', 'phases = ["capacity"]')
             .replace('name = "mini"', 'name = "cap"')
             .replace('impls = ["retnet-recurrent", "static"]', 'impls = ["retnet-recurrent", "static", "paper-like"]'))
    p.write_text(suite + f'capacity_seq_len = 16\nmemory_budget_gb = 0.05\nmax_batch = 64\nfill = "{fill}"\n')
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="cap"))
    rows = [r for r in read_rows(out.run_dir / "rows.jsonl") if r["status"] == "ok"]
    assert {r["impl"] for r in rows} == {"retnet-recurrent", "static", "paper-like"}
    assert all(("random values" in (r["notes"] or "")) == (fill == "random") for r in rows)
    for r in rows:
        assert r["phase"] == "capacity" and r["mem_analytic_gb"] <= 0.05 and r["capacity_budget_gb"] == 0.05
    retnet, static = (next(r for r in rows if r["impl"] == i) for i in ("retnet-recurrent", "static"))
    assert retnet["batch_size"] >= 1 and static["batch_size"] >= 1


@pytest.mark.skipif(not __import__("retnet_bench.baselines.peers", fromlist=["x"]).torchscale_available()[0],
                    reason="torchscale not installed")
def test_peers_get_no_prefill_row_and_enter_capacity_searches(tmp_path):
    """The peers' state is filled, not prefilled: no (meaningless) prefill row; their analytic state size lets a
    capacity search start from the right batch."""
    peers = 'impls = ["torchscale-retnet", "torchscale-transformer"]'
    p = tmp_path / "peers.toml"
    p.write_text(MINI.replace('impls = ["retnet-recurrent", "static"]', peers)
                 .replace('phases = ["decode", "train"]', 'phases = ["decode"]'))
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="peers"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert {r["phase"] for r in rows} == {"decode"} and len(rows) == 4
    for r in rows:
        assert r["mem_analytic_gb"] > r["weights_gb"] and "pre-filled with random" in r["notes"]
    cap = tmp_path / "cap.toml"
    cap.write_text(MINI.replace('impls = ["retnet-recurrent", "static"]', peers)
                   .replace('phases = ["decode", "train"]', 'phases = ["capacity"]').replace('"mini"', '"cap"')
                   + 'capacity_seq_len = 64\nmemory_budget_gb = 0.05\nmax_batch = 4096\nfill = "random"\n')
    out = run_suite(load_suite(str(cap)), _opts(tmp_path, run_id="cap"))
    found = {r["impl"]: r for r in read_rows(out.run_dir / "rows.jsonl") if r["status"] == "ok"}
    assert set(found) == {"torchscale-retnet", "torchscale-transformer"}
    for r in found.values():
        assert r["phase"] == "capacity" and r["mem_analytic_gb"] <= 0.05
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
    from retnet_bench.suites import registry

    c = registry.build(impl, "sdpa", "tiny", torch.device("cpu"), torch.float32, use_graph=False)
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
    p.write_text(MINI.replace('impls = ["retnet-recurrent", "static"]', 'impls = ["fla-retnet", "retnet-recurrent"]')
                 .replace('phases = ["decode", "train"]', 'phases = ["decode"]'))
    out = run_suite(load_suite(str(p)), _opts(tmp_path, run_id="fla"))
    rows = read_rows(out.run_dir / "rows.jsonl")
    fla = [r for r in rows if r["impl"] == "fla-retnet"]
    assert len(fla) == 2 and all(r["status"] == "skipped" for r in fla)
    assert all(("not installed" in r["error"]) or ("CUDA GPU" in r["error"]) for r in fla)
    assert all(r["status"] == "ok" for r in rows if r["impl"] == "retnet-recurrent")
