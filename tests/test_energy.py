"""Energy: NVML's total-energy counter read at the edges of a timed region, turned into joules, joules per token and
average power; None wherever the counter is missing or unreadable. CPU only: a fake pynvml stands in for the GPU."""
from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import pynvml
import pytest
import torch

from retnet_bench.suites import RunOptions, load_suite, run_suite
from retnet_bench.suites import runner as runner_mod
from retnet_bench.suites import trackers
from retnet_bench.suites.contract import read_rows
from retnet_bench.suites.trackers import EnergyCounter, EnergyTracker, LatencyTracker, energy_columns, energy_counter
from retnet_bench.suites.training import ModelRecipe, RankResult, TrainSettings, run_distributed, summarize
from retnet_bench.suites.training import launch
from retnet_bench.suites.training.result import rank_energy

sys.path.insert(0, str(Path(__file__).parent))
from training_testing import record_step_timer  # noqa: E402

CPU = torch.device("cpu")
ENERGY_COLUMNS = ("energy_j", "joules_per_token", "avg_power_w")


@pytest.fixture(autouse=True)
def any_window_resolves(monkeypatch):
    """The fake counter is exact, and these CPU windows last milliseconds: the resolution floor (a GPU counter's
    ~100 ms steps) is tested on its own below."""
    monkeypatch.setattr(trackers, "ENERGY_MIN_WINDOW_S", 0.0)


class FakeGpu:
    """What the fake NVML reports: a counter in millijoules that the test's "GPU work" advances, and a log of reads."""

    def __init__(self, mj: int = 5_000_000) -> None:
        self.mj, self.reads = mj, 0

    def work(self, joules: float) -> None:
        self.mj += int(joules * 1000)


def fake_pynvml(gpu: FakeGpu, energy_error: int | None = None, init_error: int | None = None) -> types.ModuleType:
    """A stand-in for the pynvml module; the errors are real pynvml errors (NVMLError(code) gives its subclass)."""
    mod = types.ModuleType("pynvml")

    def init() -> None:
        if init_error is not None:
            raise pynvml.NVMLError(init_error)

    def energy(handle: object) -> int:
        assert handle == ("handle", 0)
        gpu.reads += 1
        if energy_error is not None:
            raise pynvml.NVMLError(energy_error)
        return gpu.mj

    mod.nvmlInit = init
    mod.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    mod.nvmlDeviceGetTotalEnergyConsumption = energy
    return mod


def counter_of(gpu: FakeGpu, monkeypatch, **errors) -> EnergyCounter | None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpu, **errors))
    return energy_counter(torch.device("cuda", 0))


# ---------------------------------------------------------------------------------------------------- arithmetic
def test_a_window_shorter_than_the_counters_resolution_gives_none(monkeypatch):
    monkeypatch.setattr(trackers, "ENERGY_MIN_WINDOW_S", 1.0)
    assert energy_columns(300.0, 0.64, 8)["energy_j"] is None  # fig6's 0.3 s decode windows on the H200
    assert energy_columns(900.0, 1.3, 8)["avg_power_w"] == pytest.approx(900 / 1.3)
    # windows are judged one by one: three 0.5 s prefills make 1.5 s, but none of them is resolved
    tracker = EnergyTracker(EnergyCounter(None, None, 0))
    tracker.joules, tracker.wall_s, tracker.shortest_s = 600.0, 1.5, 0.5
    assert tracker.result(8)["energy_j"] is None
    tracker.shortest_s = 1.2
    assert tracker.result(8)["energy_j"] == pytest.approx(600.0)


def test_energy_columns_arithmetic_and_none_paths():
    assert energy_columns(12.5, 2.0, 8) == {"energy_j": 12.5, "joules_per_token": 1.5625, "avg_power_w": 6.25}
    none = dict.fromkeys(ENERGY_COLUMNS)
    assert energy_columns(None, 2.0, 8) == none
    assert energy_columns(12.5, 0.0, 8) == none and energy_columns(12.5, 2.0, 0) == none


def test_a_timed_loop_turns_the_counter_delta_into_joules_per_token_and_reads_only_at_its_edges(monkeypatch):
    """Millijoules -> joules; every token of the region; the counter is read once before the first call and once
    after the last, never during a timed call. `between` work lies inside the window and is counted (documented)."""
    gpu = FakeGpu()
    counter = counter_of(gpu, monkeypatch)
    assert counter is not None and gpu.reads == 1  # probed once when made
    seen_reads: list[int] = []

    def step() -> None:
        seen_reads.append(gpu.reads)
        gpu.work(1.0)

    energy = EnergyTracker(counter)
    timing = LatencyTracker(CPU, min_steps=4, min_seconds=0.0, max_steps=4).time(
        step, between=lambda: gpu.work(0.5), energy=energy)
    assert timing.n == 4 and seen_reads == [2, 2, 2, 2] and gpu.reads == 3
    cols = energy.result(tokens=2 * timing.n)  # batch 2, one token per sequence per step
    assert cols["energy_j"] == pytest.approx(6.0)  # 4 x (1.0 J step + 0.5 J between)
    assert cols["joules_per_token"] == pytest.approx(6.0 / 8)
    assert energy.wall_s > 0 and cols["avg_power_w"] == pytest.approx(6.0 / energy.wall_s)


def test_prefill_windows_add_up_and_what_lies_between_them_is_left_out(monkeypatch):
    gpu = FakeGpu()
    energy, once = EnergyTracker(counter_of(gpu, monkeypatch)), LatencyTracker(CPU, 1, 0, 1)
    once.time_once(lambda: gpu.work(3.0), energy=energy)
    gpu.work(50.0)  # c.end() and the next cache's set-up: not a timed prefill
    once.time_once(lambda: gpu.work(5.0), energy=energy)
    assert energy.result(tokens=4)["energy_j"] == pytest.approx(8.0)
    assert energy.result(tokens=4)["joules_per_token"] == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------------------- None paths
@pytest.mark.parametrize("errors", [{"energy_error": pynvml.NVML_ERROR_NOT_SUPPORTED},  # pre-Volta GPU
                                    {"init_error": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND},  # no driver library
                                    {"energy_error": pynvml.NVML_ERROR_NO_PERMISSION}])
def test_no_counter_gives_none_and_no_exception(monkeypatch, errors):
    gpu = FakeGpu()
    assert counter_of(gpu, monkeypatch, **errors) is None
    energy = EnergyTracker(None)
    LatencyTracker(CPU, min_steps=2, min_seconds=0.0, max_steps=2).time(lambda: gpu.work(1.0), energy=energy)
    assert energy.result(tokens=10) == dict.fromkeys(ENERGY_COLUMNS)


def test_a_cpu_device_never_touches_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # importing it would raise
    assert energy_counter(CPU) is None


def test_a_read_that_fails_mid_point_or_a_counter_that_did_not_advance_gives_none(monkeypatch):
    gpu = FakeGpu()
    counter = counter_of(gpu, monkeypatch)
    failing = EnergyTracker(counter)
    failing.start(CPU)
    monkeypatch.setattr(counter, "_nvml", fake_pynvml(gpu, energy_error=pynvml.NVML_ERROR_GPU_IS_LOST))
    failing.stop()
    assert failing.result(tokens=4)["energy_j"] is None
    still = EnergyTracker(counter_of(gpu, monkeypatch))
    LatencyTracker(CPU, 1, 0, 1).time_once(lambda: None, energy=still)  # a window shorter than the counter's step
    assert still.result(tokens=4)["energy_j"] is None
    # one good window and one unreadable one: no partial sum
    partial = EnergyTracker(counter_of(gpu, monkeypatch))
    LatencyTracker(CPU, 1, 0, 1).time_once(lambda: gpu.work(2.0), energy=partial)
    partial.start(CPU)
    monkeypatch.setattr(partial.counter, "_nvml", fake_pynvml(gpu, energy_error=pynvml.NVML_ERROR_UNKNOWN))
    partial.stop()
    assert partial.result(tokens=4)["energy_j"] is None


# ---------------------------------------------------------------------------------------------------- training ranks
def _rank(rank: int, energy_j: float | None, gpu: int | None, wall_s: float = 2.0) -> RankResult:
    return RankResult(rank=rank, world_size=2, status="ok", kernel="torch", gpu_name="NVIDIA H200", n_params=10,
                      step_ms=[100.0, 100.0], losses=[2.0], energy_j=energy_j, energy_wall_s=wall_s, energy_gpu=gpu)


def test_ranks_energy_sums_over_gpus_counts_a_shared_gpu_once_and_needs_every_rank():
    both = rank_energy([_rank(0, 300.0, 0, 2.0), _rank(1, 500.0, 1, 2.5)], tokens=4000)
    assert both == pytest.approx({"energy_j": 800.0, "joules_per_token": 0.2, "avg_power_w": 800.0 / 2.5})
    shared = rank_energy([_rank(0, 300.0, 0), _rank(1, 310.0, 0)], tokens=1000)  # two ranks, one GPU's counter
    assert shared["energy_j"] == pytest.approx(310.0)
    assert rank_energy([_rank(0, 300.0, 0), _rank(1, None, None)], tokens=1000) == dict.fromkeys(ENERGY_COLUMNS)


def test_a_training_row_carries_all_ranks_energy_per_token_of_all_ranks():
    recipe = ModelRecipe("retnet", "tiny", kernel="torch", overrides={"vocab_size": 256})
    settings = TrainSettings(micro_batch=1, grad_accum=1, seq_len=1000, steps=2, compute_dtype="float32")
    point = summarize([_rank(0, 300.0, 0), _rank(1, 500.0, 1)], recipe, settings)
    fields = point.row_fields(settings)
    # 2 ranks x 1 sequence x 1000 tokens per step, 2 timed steps
    assert fields["energy_j"] == pytest.approx(800.0) and fields["joules_per_token"] == pytest.approx(0.2)
    assert fields["avg_power_w"] == pytest.approx(400.0)


def test_a_rank_reads_its_counter_around_the_timed_steps_only(monkeypatch):
    """Right before the first timed step (warm-up out) and after the final synchronize; never inside a step."""
    events: list[str] = []

    class Counter:
        index, mj = 3, 1_000

        def read_mj(self) -> int:
            events.append("energy")
            self.mj += 4_000
            return self.mj

    record_step_timer(monkeypatch, events)
    monkeypatch.setattr(launch, "energy_counter", lambda device: Counter())
    recipe = ModelRecipe("retnet", "tiny", kernel="torch", overrides={"vocab_size": 256})
    settings = TrainSettings(micro_batch=1, seq_len=16, chunk_size=8, steps=2, warmup_steps=1,
                             compute_dtype="float32", collective_timeout_s=60)
    (res,) = run_distributed(1, recipe, settings, "cpu")
    assert res.status == "ok", res.error
    assert events == ["start", "stop", "energy", "start", "stop", "start", "stop", "energy"]
    assert res.energy_j == pytest.approx(4.0) and res.energy_gpu == 3 and res.energy_wall_s > 0
    off = dataclasses.replace(settings, nvml_sampling=False)  # --no-nvml: no NVML read of any kind
    events.clear()
    (res,) = run_distributed(1, recipe, off, "cpu")
    assert res.status == "ok" and "energy" not in events and res.energy_j is None


# ---------------------------------------------------------------------------------------------------- rows
SUITE = """
name = "energy"
dtype = "float32"
models = ["tiny"]
[decode]
impls = ["retnet-recurrent", "paper-like", "static"]
kernels = ["sdpa"]
batch_sizes = [2]
seq_lens = [16]
warmup = 1
min_steps = 3
min_seconds = 0.0
max_steps = 3
chunk_size = 8
prefill_repeats = 2
"""


def test_rows_get_energy_per_window_and_per_token(tmp_path: Path, monkeypatch):
    """Decode: one window over the timed steps, batch x steps tokens; prefill: one window per timed prefill, batch x
    T x repeats tokens. A cat-grown cache's row says its cut-back is in the energy; RetNet's does not."""

    class Counter:  # advances 1 J between any two reads
        index, mj = 0, 0

        def read_mj(self) -> int:
            self.mj += 1_000
            return self.mj

    monkeypatch.setattr(runner_mod, "energy_counter", lambda device: Counter())
    path = tmp_path / "energy.toml"
    path.write_text(SUITE)
    out = run_suite(load_suite(str(path)), RunOptions(device=CPU, out_root=tmp_path / "results", progress=False))
    rows = {(r["impl"], r["phase"]): r for r in read_rows(out.run_dir / "rows.jsonl")}
    assert {r["status"] for r in rows.values()} == {"ok"}
    for impl in ("retnet-recurrent", "paper-like"):
        dec, pre = rows[(impl, "decode")], rows[(impl, "prefill")]
        assert dec["n_repeats"] == 3 and dec["energy_j"] == pytest.approx(1.0)
        assert dec["joules_per_token"] == pytest.approx(1.0 / (2 * 3)) and dec["avg_power_w"] > 0
        assert pre["energy_j"] == pytest.approx(2.0) and pre["joules_per_token"] == pytest.approx(2.0 / (2 * 16 * 2))
    assert "cut-back" in rows[("paper-like", "decode")]["notes"]
    assert "cut-back" not in (rows[("retnet-recurrent", "decode")]["notes"] or "")
    assert "cut-back" not in (rows[("static", "decode")]["notes"] or "")  # it rewinds inside its own step
    # without the counter (a CPU, --no-nvml, an old GPU) the columns are None and the notes unchanged
    monkeypatch.setattr(runner_mod, "energy_counter", trackers.energy_counter)
    out = run_suite(load_suite(str(path)), RunOptions(device=CPU, out_root=tmp_path / "results", progress=False))
    for r in read_rows(out.run_dir / "rows.jsonl"):
        assert all(r[c] is None for c in ENERGY_COLUMNS) and "cut-back" not in (r["notes"] or "")
