"""Claims: known synthetic ratios give exactly the expected verdicts; missing data gives 'not measured'."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reports_fixtures import decode_row, gqa_rows, known_ratio_rows, train_row, write_run  # noqa: E402

from retnet_bench.reports import ReportInputError, claims_table, load_runs, verdict  # noqa: E402
from retnet_bench.reports.claims import (FRAMING_CAPACITY, FRAMING_MODERN, FRAMING_MODERN_CAPACITY,  # noqa: E402
                                         FRAMING_PAPER, FRAMING_RETNET_ONLY, FRAMING_STRONGEST)
from retnet_bench.reports.claims_select import MEASURE_ALLOCATOR, MEASURE_DEVICE  # noqa: E402

MHA = ", MHA (KV heads = heads)"


def _claims(tmp_path, rows):
    df, envs = load_runs([write_run(tmp_path, rows)])
    c = claims_table(df, envs)
    return {(r.claim_id, r.framing): r for r in c.itertuples()}, c


def test_verdict_rule_boundaries():
    assert verdict("fold", 8.4, 8.4 * 0.9) == "holds"
    assert verdict("fold", 8.4, 8.4 * 0.9 - 1e-9) == "partly"
    assert verdict("fold", 8.4, 1.0) == "does not hold"
    assert verdict("fold", 1.08, 1.0) == "does not hold"  # tolerance never lets RetNet lose and "hold"
    assert verdict("fold", 1.08, 1.01) == "holds"
    assert verdict("spread", 1.0, 1.1) == "holds" and verdict("spread", 1.0, 1.2) == "partly"
    assert verdict("spread", 1.0, 1.6) == "does not hold"
    assert verdict("upper", 0.03, 0.05) == "holds" and verdict("upper", 0.03, 0.10) == "partly"
    assert verdict("upper", 0.03, 0.2) == "does not hold"
    assert verdict("fold", 3.4, float("nan")) == "not measured" and verdict("fold", 3.4, None) == "not measured"
    # parity (Table 4's 2.7B memory, 42.1 / 42.0 GB): no advantage claimed; parity within the same 5%, or better
    assert verdict("parity", 1.0024, 0.95) == "holds" and verdict("parity", 1.0024, 1.3) == "holds"
    assert verdict("parity", 1.0024, 0.949) == "partly" and verdict("parity", 1.0024, 0.903) == "partly"
    assert verdict("parity", 1.0024, 0.9) == "does not hold"


def test_only_a_table4_ratio_near_one_is_a_parity_claim():
    from retnet_bench.reports import paper_values as pv

    kinds = {c.claim_id: c.kind for c in pv.TRAIN_CLAIMS}
    assert kinds["train_memory_vs_flash_2.7b"] == "parity"  # 42.1 / 42.0 GB
    assert kinds["train_memory_vs_flash_6.7b"] == "fold" and kinds["train_throughput_vs_flash_6.7b"] == "fold"
    assert [k for k, v in kinds.items() if v == "parity"] == ["train_memory_vs_flash_2.7b"]
    import pandas as pd

    from retnet_bench.reports.claims_select import MEASURE_ALLOCATOR
    from retnet_bench.reports.render import _claim_value

    row = pd.Series(dict(kind="parity", metric="memory", paper_value=1.0024, measured_value=0.957,
                         memory_measure=MEASURE_ALLOCATOR, memory_device_x=0.947))
    assert _claim_value(row, "paper_value") == "1.00x (parity)"
    assert _claim_value(row, "measured_value") == "0.96x (allocated; device 0.95x)"


EXPECTED = {
    # (claim_id, framing): (measured, verdict, baseline)
    ("decode_memory", FRAMING_PAPER): (36 / 12, "partly", "paper-like (bmm-softmax)" + MHA),  # allocator measure
    ("decode_throughput", FRAMING_PAPER): (10.0, "holds", "paper-like (bmm-softmax)" + MHA),
    ("decode_latency", FRAMING_PAPER): (10.0, "partly", "paper-like (bmm-softmax)" + MHA),
    ("decode_memory", FRAMING_STRONGEST): (1.5, "partly", "static (flash-attn)" + MHA),
    ("decode_throughput", FRAMING_STRONGEST): (0.8, "does not hold", "static (flash-attn)" + MHA),
    ("decode_latency", FRAMING_STRONGEST): (0.8, "does not hold", "static (flash-attn)" + MHA),
    ("decode_memory", FRAMING_CAPACITY): (math.nan, "not measured", "static (flash-attn)" + MHA),
    ("decode_throughput", FRAMING_CAPACITY): (4.0, "partly", "static (flash-attn)" + MHA),
    ("decode_latency", FRAMING_CAPACITY): (1.0, "does not hold", "static (flash-attn)" + MHA),
    ("decode_throughput", FRAMING_MODERN): (math.nan, "not measured", ""),  # no GQA rows in this sweep
    ("retnet_memory_overhead", FRAMING_RETNET_ONLY): (12e9 / 13.4e9 - 1, "holds", ""),  # allocated vs weights
    ("retnet_throughput_length_invariant", FRAMING_RETNET_ONLY): (10.2 / 10.0, "holds", ""),
    ("retnet_latency_invariant", FRAMING_RETNET_ONLY): (10.4 / 10.0, "holds", ""),  # batch 64 row excluded
    ("train_throughput_vs_vanilla_1.3b", FRAMING_PAPER): (7.0, "holds", "transformer (bmm-softmax)" + MHA),
    ("train_memory_vs_vanilla_1.3b", FRAMING_PAPER): (70 / 30, "holds", "transformer (bmm-softmax)" + MHA),
    ("train_throughput_vs_vanilla_1.3b", FRAMING_STRONGEST): (70 / 75, "does not hold",
                                                               "transformer (flash-attn)" + MHA),
    ("train_memory_vs_vanilla_1.3b", FRAMING_STRONGEST): (36 / 30, "partly", "transformer (flash-attn)" + MHA),
    ("train_throughput_vs_flash_1.3b", FRAMING_PAPER): (70 / 75, "does not hold", "transformer (flash-attn)" + MHA),
    ("train_memory_vs_flash_1.3b", FRAMING_PAPER): (36 / 30, "holds", "transformer (flash-attn)" + MHA),
    ("train_throughput_vs_vanilla_1.3b", FRAMING_CAPACITY): (math.nan, "not measured", ""),
    ("train_throughput_vs_vanilla_2.7b", FRAMING_PAPER): (math.nan, "not measured", ""),
}


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    return _claims(tmp_path_factory.mktemp("known"), known_ratio_rows())


@pytest.mark.parametrize("key", list(EXPECTED), ids=[f"{k[0]}|{k[1]}" for k in EXPECTED])
def test_known_ratios_give_expected_verdicts(known, key):
    claims, _ = known
    measured, expected_verdict, baseline = EXPECTED[key]
    row = claims[key]
    assert row.verdict == expected_verdict
    assert row.baseline == baseline
    if math.isnan(measured):
        assert math.isnan(row.measured_value)
    else:
        assert row.measured_value == pytest.approx(measured, rel=1e-9)


def test_table_shape_and_roofline(known):
    claims, frame = known
    assert list(frame.columns[:9]) == ["claim", "framing", "paper_value", "measured_value", "conditions",
                                       "baseline", "baseline_pct_roofline", "verdict", "source"]
    assert not frame.duplicated(["claim_id", "framing"]).any()
    assert claims[("decode_throughput", FRAMING_PAPER)].baseline_pct_roofline == 12.0
    assert claims[("decode_throughput", FRAMING_STRONGEST)].baseline_pct_roofline == 81.0
    assert claims[("decode_throughput", FRAMING_PAPER)].matches_paper
    assert "6.7b, batch 8, len 8192" in claims[("decode_throughput", FRAMING_PAPER)].conditions
    assert "2307.08621" in claims[("decode_throughput", FRAMING_PAPER)].source


def test_torchscale_transformer_preferred_as_paper_like(tmp_path):
    rows = known_ratio_rows() + [decode_row("6.7b", "torchscale-transformer", "", 8, 8192, 50.0, 40.0)]
    claims, _ = _claims(tmp_path, rows)
    row = claims[("decode_throughput", FRAMING_PAPER)]
    assert row.baseline == "torchscale-transformer" + MHA and row.measured_value == pytest.approx(5.0)


def test_non_ok_rows_never_give_values(tmp_path):
    rows = [r for r in known_ratio_rows() if not (r["impl"] == "static" and r["phase"] == "decode")]
    # A faster static row that failed must not become the "strongest" baseline.
    rows.append(decode_row("6.7b", "static", "flash-attn", 8, 8192, 1.0, 15.0, status="error", error="boom"))
    claims, _ = _claims(tmp_path, rows)
    assert claims[("decode_throughput", FRAMING_STRONGEST)].baseline == "paper-like (bmm-softmax)" + MHA


def test_off_paper_point_is_flagged(tmp_path):
    rows = [decode_row("2.7b", "retnet-recurrent", "torch", 2, 2048, 2.0, 0.1),
            decode_row("2.7b", "paper-like", "bmm-softmax", 2, 2048, 4.0, 0.3)]
    claims, _ = _claims(tmp_path, rows)
    row = claims[("decode_throughput", FRAMING_PAPER)]
    assert row.verdict == "partly" and not row.matches_paper
    assert "paper: model 6.7b, seq_len 8192, batch_size 8" in row.conditions


@pytest.mark.parametrize("where", ["cpu", "tiny"])
def test_rows_off_the_papers_conditions_give_no_verdict(tmp_path, where):
    """A CPU smoke run (or a tiny model on a GPU) must print no 'holds' / 'does not hold' at all."""
    model, device = ("6.7b", "cpu") if where == "cpu" else ("tiny", "cuda")
    rows = [r for r in known_ratio_rows()]
    for r in rows:
        r["model"], r["device"] = model if r["model"] == "6.7b" else r["model"], device
        if where == "cpu":
            r["gpu_name"] = None
    claims, frame = _claims(tmp_path, rows)
    judged = frame if where == "cpu" else frame[~frame["claim_id"].str.startswith("train_")]  # train rows: 1.3b
    assert set(judged["verdict"]) <= {"not applicable", "not measured"}
    row = claims[("decode_throughput", FRAMING_PAPER)]
    assert row.verdict == "not applicable" and math.isnan(row.measured_value)
    assert row.conditions.startswith(f"not applicable on {device}/{model}: run fig6 on a GPU")
    train = claims[("train_throughput_vs_vanilla_1.3b", FRAMING_PAPER)]
    assert train.verdict == ("not applicable" if where == "cpu" else "holds")


@pytest.mark.parametrize("drop", ["retnet", "transformer", "capacity", "everything"])
def test_partial_data_gives_not_measured(tmp_path, drop):
    rows = known_ratio_rows()
    if drop == "retnet":
        rows = [r for r in rows if r["arch"] != "retnet"]
    elif drop == "transformer":
        rows = [r for r in rows if r["arch"] != "transformer"]
    elif drop == "capacity":
        rows = [r for r in rows if r["phase"] != "capacity"]
    else:
        rows = []
    _, frame = _claims(tmp_path, rows)
    decode = frame[frame["claim_id"].str.startswith("decode_")]
    if drop == "capacity":
        assert (decode.loc[decode["framing"] == FRAMING_CAPACITY, "verdict"] == "not measured").all()
        gqa = decode["framing"].isin([FRAMING_MODERN, FRAMING_MODERN_CAPACITY])  # no GQA rows here
        assert (decode.loc[(decode["framing"] != FRAMING_CAPACITY) & ~gqa, "verdict"] != "not measured").all()
    else:
        assert (decode["verdict"] == "not measured").all()
        assert decode["measured_value"].isna().all()
    if drop in ("retnet", "everything"):
        assert (frame["verdict"] == "not measured").all()


def test_memory_without_gpu_source_is_not_measured(tmp_path):
    rows = known_ratio_rows()
    for r in rows:  # a CPU-like run: only RSS; claims must not compare process RSS
        r["mem_rss_peak_gb"], r["mem_nvml_delta_gb"], r["mem_torch_peak_gb"] = r["mem_nvml_delta_gb"], None, None
    claims, _ = _claims(tmp_path, rows)
    assert claims[("decode_memory", FRAMING_PAPER)].verdict == "not measured"
    assert claims[("decode_throughput", FRAMING_PAPER)].verdict == "holds"


def test_torch_reserved_is_the_fallback(tmp_path):
    rows = [train_row("1.3b", "retnet-chunkwise", "torch", 4, 8192, 70000.0, None, mem_torch_reserved_gb=30.0),
            train_row("1.3b", "transformer", "bmm-softmax", 4, 8192, 10000.0, None, mem_torch_reserved_gb=75.0)]
    claims, _ = _claims(tmp_path, rows)
    assert claims[("train_memory_vs_vanilla_1.3b", FRAMING_PAPER)].measured_value == pytest.approx(2.5)


def test_device_memory_is_at_least_the_reserved_peak_when_nvml_missed_it(tmp_path):
    """A rank reads NVML between steps; a 6.7B RetNet step at the memory limit has emptied the allocator's cache by
    then (NVML 111.6 GB over idle, torch reserved peak 138.2). Device memory takes the larger: the process held it."""
    from retnet_bench.reports.claims_select import points

    rows = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10039.0, 111.6, mem_torch_reserved_gb=138.2,
                      mem_torch_peak_gb=114.7, alloc_retries=24, role="candidate"),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 11109.0, 138.1, mem_torch_reserved_gb=138.0,
                      mem_torch_peak_gb=110.7, role="baseline", n_kv_heads=32)]
    df, _ = load_runs([write_run(tmp_path, rows)])
    mem = points(df, "train").set_index("impl")["mem_gb"]
    assert mem["retnet-chunkwise"] == pytest.approx(138.2) and mem["transformer"] == pytest.approx(138.1)
    claims, _ = _claims(tmp_path / "b", rows)
    assert claims[("train_memory_vs_flash_6.7b", FRAMING_STRONGEST)].memory_device_x == pytest.approx(138.1 / 138.2)


def test_load_runs_errors_are_one_line(tmp_path):
    with pytest.raises(ReportInputError) as e:
        load_runs([tmp_path / "nope"])
    assert "\n" not in str(e.value) and "nope" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportInputError, match="no rows.jsonl"):
        load_runs([empty])
    bad = write_run(tmp_path, known_ratio_rows(), run_id="bad")
    (bad / "rows.jsonl").write_text('{not json\n{"a": 1}\n')
    with pytest.raises(ReportInputError) as e:
        load_runs([bad])
    assert "\n" not in str(e.value) and "rows.jsonl:1" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_crashed_run_with_a_torn_last_line_is_reported(tmp_path, capsys):
    run = write_run(tmp_path, known_ratio_rows(), run_id="crashed")
    with open(run / "rows.jsonl", "a") as f:
        f.write('{"run_id": "crashed", "model": "6.7b", "imp')
    df, _ = load_runs([run])
    assert len(df) == len(known_ratio_rows())
    assert "half-written last line" in capsys.readouterr().err


def test_old_rows_get_a_role_from_their_arch(tmp_path):
    rows = known_ratio_rows()
    for r in rows:
        r.pop("role", None), r.pop("world_size", None)
    df, _ = load_runs([write_run(tmp_path, rows)])
    assert set(df.loc[df["arch"] == "retnet", "role"]) == {"candidate"}
    assert set(df.loc[df["arch"] == "transformer", "role"]) == {"baseline"}
    assert (df["world_size"] == 1).all()


def test_load_runs_concatenates(tmp_path):
    a = write_run(tmp_path, known_ratio_rows()[:5], run_id="a")
    b = write_run(tmp_path, known_ratio_rows()[5:9], run_id="b")
    df, envs = load_runs([a, b])
    assert len(df) == 9 and set(envs) == {"a", "b"} and set(df["run_id"]) == {"a", "b"}


def test_runs_sharing_a_run_id_stay_apart(tmp_path):
    """Two machines' runs named alike (say both `h200-fig6`) keep their own env and rows."""
    a = write_run(tmp_path / "m1", known_ratio_rows(), run_id="same", env={"gpu_name": "GPU A"})
    b = write_run(tmp_path / "m2", known_ratio_rows(), run_id="same", env={"gpu_name": "GPU B"})
    df, envs = load_runs([a, b])
    assert len(envs) == 2 and {e["gpu_name"] for e in envs.values()} == {"GPU A", "GPU B"}
    assert df["run_id"].nunique() == 2 and len(df) == 2 * len(known_ratio_rows())
    for run_id, env in envs.items():
        assert set(df.loc[df["run_id"] == run_id, "run_dir"]) == {env["run_dir"]}


def test_memory_claims_give_both_measures(known):
    claims, _ = known
    row = claims[("decode_memory", FRAMING_PAPER)]
    assert row.memory_measure == MEASURE_ALLOCATOR
    assert row.memory_allocator_x == pytest.approx(3.0) and row.memory_device_x == pytest.approx(48 / 14)
    assert row.measured_value == row.memory_allocator_x
    assert "12.0 GB" not in row.conditions and "allocated" in row.conditions and "device" in row.conditions
    train = claims[("train_memory_vs_vanilla_1.3b", FRAMING_PAPER)]  # no allocator peak: device, labelled
    assert train.memory_measure == MEASURE_DEVICE and math.isnan(train.memory_allocator_x)


def test_framing_4_modern_baseline(tmp_path):
    claims, frame = _claims(tmp_path, known_ratio_rows() + gqa_rows())
    thr = claims[("decode_throughput", FRAMING_MODERN)]
    assert thr.baseline == "static (sdpa-cudnn), 8 KV heads"  # the best GQA-8 flavour, not hf
    assert thr.measured_value == pytest.approx(1.25) and thr.verdict == "partly"
    mem = claims[("decode_memory", FRAMING_MODERN)]
    assert mem.measured_value == pytest.approx(15 / 12) and mem.memory_device_x == pytest.approx(16 / 14)
    cap = claims[("decode_throughput", FRAMING_MODERN_CAPACITY)]
    assert cap.measured_value == pytest.approx(3200 / 1600) and "Transformer batch 40" in cap.conditions
    assert claims[("decode_memory", FRAMING_MODERN_CAPACITY)].verdict == "not measured"
    # GQA rows never become the paper's (MHA) baselines, and the bf16-state RetNet is never the RetNet side
    assert claims[("decode_throughput", FRAMING_STRONGEST)].baseline == "static (flash-attn)" + MHA
    assert claims[("decode_throughput", FRAMING_PAPER)].measured_value == pytest.approx(10.0)
    assert claims[("decode_throughput", FRAMING_CAPACITY)].baseline == "static (flash-attn)" + MHA
    assert frame["baseline"].str.contains("KV heads").sum() == (frame["baseline"] != "").sum()


def test_decode_claims_take_each_sides_faster_projections_and_say_which(tmp_path):
    """An A/B run of the decode steps' projections (decode_gemm torch and triton on both sides): each claim side is
    its faster row, the rows are never merged into one median, and the Triton projections are named on both sides;
    rows from before the column read as torch (no label)."""
    ab = [decode_row("6.7b", "retnet-recurrent", "triton", 8, 8192, 9.0, 14.0, decode_gemm="triton"),
          decode_row("6.7b", "static", "flash-attn", 8, 8192, 7.5, 21.0, decode_gemm="triton"),
          decode_row("6.7b", "static", "flash-attn", 8, 8192, 8.0, 21.0, decode_gemm="torch")]
    claims, _ = _claims(tmp_path, known_ratio_rows() + ab)
    thr = claims[("decode_throughput", FRAMING_STRONGEST)]
    assert thr.measured_value == pytest.approx(7.5 / 9.0)
    assert thr.baseline == "static (flash-attn), MHA (KV heads = heads), Triton projections"
    assert "retnet-recurrent (triton), Triton projections" in thr.conditions
    old, _ = _claims(tmp_path / "old", known_ratio_rows())
    assert "projections" not in old[("decode_throughput", FRAMING_STRONGEST)].baseline


def test_retnet_only_claims_read_one_projections_setting(tmp_path):
    """A Triton-projection RetNet row measured at one length beside cuBLAS rows at every length: the length and
    latency sweeps and the memory overhead are read from one setting (the one with the most points), not a mix."""
    known, _ = _claims(tmp_path / "known", known_ratio_rows())
    fast = decode_row("6.7b", "retnet-recurrent", "torch", 8, 8192, 5.0, 20.0, decode_gemm="triton")
    claims, _ = _claims(tmp_path / "mixed", known_ratio_rows() + [fast])
    for claim_id in ("retnet_throughput_length_invariant", "retnet_latency_invariant"):
        key = (claim_id, FRAMING_RETNET_ONLY)
        assert claims[key].measured_value == pytest.approx(known[key].measured_value), claim_id
        assert "Triton projections" not in claims[key].conditions
    # the one-point memory claim reads the faster row at its point (batch 8, 8k), as framing 2's memory claim does
    overhead = claims[("retnet_memory_overhead", FRAMING_RETNET_ONLY)]
    assert "Triton projections" in overhead.conditions
    assert overhead.memory_device_x == pytest.approx(20.0 / 13.4 - 1)
    only_triton = [dict(r, decode_gemm="triton") if r["arch"] == "retnet" else r for r in known_ratio_rows()]
    tri, _ = _claims(tmp_path / "triton", only_triton)
    assert "Triton projections" in tri[("retnet_throughput_length_invariant", FRAMING_RETNET_ONLY)].conditions


def test_baselines_are_picked_by_role_not_arch(tmp_path):
    rows = [decode_row("6.7b", "retnet-recurrent", "torch", 8, 8192, 10.0, 14.0),
            decode_row("6.7b", "llama-fast", "x", 8, 8192, 20.0, 28.0, arch="llama", role="baseline",
                       n_kv_heads=32)]
    claims, _ = _claims(tmp_path, rows)
    row = claims[("decode_throughput", FRAMING_STRONGEST)]
    assert row.baseline == "llama-fast (x), 32 KV heads" and row.measured_value == pytest.approx(2.0)


def test_training_claims_state_world_size_and_per_gpu_numbers(tmp_path):
    rows = [train_row("1.3b", "retnet-chunkwise", "torch", 4, 8192, 80000.0, 30.0, world_size=8,
                      tokens_per_s_per_gpu=10000.0, role="candidate"),
            train_row("1.3b", "transformer", "bmm-softmax", 4, 8192, 16000.0, 70.0, world_size=8,
                      tokens_per_s_per_gpu=2000.0, role="baseline", n_kv_heads=32)]
    claims, _ = _claims(tmp_path, rows)
    row = claims[("train_throughput_vs_vanilla_1.3b", FRAMING_PAPER)]
    assert row.measured_value == pytest.approx(5.0)
    assert "world size 8 GPUs (paper: 8 GPUs" in row.conditions
    assert "10,000 tok/s per GPU, 80,000 total" in row.conditions and "2,000 tok/s per GPU" in row.conditions
    one = claims[("train_throughput_vs_vanilla_1.3b", FRAMING_PAPER)]
    claims1, _ = _claims(tmp_path / "one", known_ratio_rows())
    assert "world size 1 GPU (paper: 8 GPUs" in claims1[("train_throughput_vs_vanilla_1.3b", FRAMING_PAPER)].conditions
    assert one.verdict == "partly"


def test_a_training_point_shorter_than_the_papers_gets_no_verdict_and_a_longer_one_does(tmp_path):
    """At T=256 a step is mostly the host's time (session 16's host-floor runs): not the paper's claim. At 16k the
    claim keeps its verdict, with the length named."""
    def rows(seq, retnet, base):
        return [train_row("1.3b", "retnet-chunkwise", "fla", 1, seq, retnet, 30.0, role="candidate"),
                train_row("1.3b", "transformer", "flash-attn", 1, seq, base, 30.0, role="baseline", n_kv_heads=16)]

    short, _ = _claims(tmp_path / "short", rows(256, 1700.0, 2100.0))
    row = short[("train_throughput_vs_flash_1.3b", FRAMING_STRONGEST)]
    assert row.verdict == "not applicable" and "shorter than the paper's 8192" in row.conditions
    assert math.isnan(row.measured_value)
    longer, _ = _claims(tmp_path / "long", rows(16384, 50000.0, 40000.0))
    row = longer[("train_throughput_vs_flash_1.3b", FRAMING_STRONGEST)]
    assert row.verdict == "holds" and "len 16384" in row.conditions


def test_a_training_claim_made_at_the_memory_limit_says_so(tmp_path):
    """A step with cudaMalloc retries includes allocator stalls (6.7B on one H200: RetNet 24, the Transformer 0):
    the claim states both counts beside its ratio; without retries it says nothing of the kind."""
    def rows(retries: float | None) -> list[dict]:
        return [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 9965.0, 111.0, role="candidate",
                          mem_torch_peak_gb=114.7, alloc_retries=retries),
                train_row("6.7b", "transformer", "sdpa-cudnn", 1, 8192, 10771.0, 138.0, role="baseline",
                          mem_torch_peak_gb=110.7, alloc_retries=0, n_kv_heads=32)]

    stalled, _ = _claims(tmp_path / "a", rows(24))
    cond = stalled[("train_throughput_vs_flash_6.7b", FRAMING_STRONGEST)].conditions
    assert "at the GPU's memory limit: cudaMalloc retries RetNet 24, baseline 0" in cond
    calm, _ = _claims(tmp_path / "b", rows(0))
    assert "memory limit" not in calm[("train_throughput_vs_flash_6.7b", FRAMING_STRONGEST)].conditions


def test_training_throughput_takes_each_side_at_its_fastest_engine_setting(tmp_path):
    """6.7B on one H200: RetNet's plain step stalls in the allocator, with every 8th block checkpointed it does not
    and is faster; the Transformer's fastest is its plain step. The strongest framing's throughput compares the two
    fastest and names both settings; memory and the paper framing compare plain steps."""
    rows = [train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10000.0, 111.0, role="candidate",
                      mem_torch_peak_gb=114.7, alloc_retries=24),
            train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10700.0, 108.0, role="candidate",
                      mem_torch_peak_gb=111.4, alloc_retries=1, checkpointing="every-8"),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 11000.0, 108.0, role="baseline",
                      mem_torch_peak_gb=110.7, alloc_retries=0, n_kv_heads=32),
            train_row("6.7b", "transformer", "flash-attn", 1, 8192, 10800.0, 104.0, role="baseline",
                      mem_torch_peak_gb=106.0, alloc_retries=0, n_kv_heads=32, checkpointing="every-8")]
    claims, _ = _claims(tmp_path, rows)
    best = claims[("train_throughput_vs_flash_6.7b", FRAMING_STRONGEST)]
    assert best.measured_value == pytest.approx(10700.0 / 11000.0)
    assert ("each side at its fastest measured engine setting: RetNet checkpointed every 8th block, "
            "baseline plain") in best.conditions
    assert "cudaMalloc retries RetNet 1, baseline 0" in best.conditions
    assert claims[("train_throughput_vs_flash_6.7b", FRAMING_PAPER)].measured_value == pytest.approx(10000 / 11000)
    memory = claims[("train_memory_vs_flash_6.7b", FRAMING_STRONGEST)]
    assert memory.measured_value == pytest.approx(110.7 / 114.7) and "engine setting" not in memory.conditions
    # the faster setting on the baseline side is taken, and named in the baseline column too
    rows[2]["tokens_per_s"] = 10500.0
    claims, _ = _claims(tmp_path / "b", rows)
    best = claims[("train_throughput_vs_flash_6.7b", FRAMING_STRONGEST)]
    assert best.measured_value == pytest.approx(10700.0 / 10800.0)
    assert best.baseline.endswith(", checkpointed every 8th block")


def test_no_impl_name_in_a_report_string_literal():
    """Issue #13: the report layer keeps no list of names; who is who comes from env.json's `contestants`.
    A string literal that is an impl name, or an 'impl (kernel)' label, is a name list in disguise. An arch
    family name that is also an impl name (`transformer`) is allowed: the row fallback maps families to roles."""
    import ast
    from pathlib import Path

    from retnet_bench.suites.contestants.spec import load_specs

    specs = load_specs()
    families = {s.arch for s in specs.values()}
    names = set(specs) - families
    found = []
    for path in sorted((Path(__file__).resolve().parents[1] / "reports").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                text = node.value.strip()
                if text in names or any(text.startswith(f"{n} (") for n in names):
                    found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, "impl names in reports/ string literals:\n" + "\n".join(found)


def test_roster_merges_tables_later_runs_win_and_old_runs_fall_back(tmp_path):
    """load_runs merges the envs' contestants tables (a later run's entry wins); a run without the table still
    reports: its contestants come from the row columns, source ours, no pipeline, and the report says so."""
    from reports_fixtures import contestants_table, known_ratio_rows, write_run

    from retnet_bench.reports import load_runs
    from retnet_bench.reports.contestants import roster_of

    rows = known_ratio_rows()
    changed = contestants_table({"paper-like"})
    changed["paper-like"] = {**changed["paper-like"], "description": "later"}
    a = write_run(tmp_path, rows, "run-a")
    b = write_run(tmp_path, [r for r in rows if r["impl"] == "paper-like"], "run-b", {"contestants": changed})
    df, envs = load_runs([a, b])
    roster = roster_of(df, envs)
    assert roster.get("paper-like").description == "later"
    assert roster.paper_pipeline("decode") == ["paper-like"] and roster.subjects("decode") == ["retnet-recurrent"]
    assert roster.note() == ""
    old = write_run(tmp_path, rows, "run-old", {"contestants": None})
    df, envs = load_runs([old])
    roster = roster_of(df, envs)
    assert all(not c.recorded and c.source == "ours" and c.pipeline == "" for c in roster.table.values())
    assert roster.get("paper-like").role == "baseline" and "paper-like" in roster.note()
    claims = claims_table(df, envs)  # no paper pipeline is known: framing 1 is not measured, the rest still is
    paper_decode = claims[(claims["framing"] == FRAMING_PAPER) & ~claims["claim_id"].str.contains("train")]
    assert len(paper_decode) and (paper_decode["verdict"] == "not measured").all()
    strongest = claims[(claims["framing"] == FRAMING_STRONGEST) & (claims["metric"] == "throughput")]
    assert strongest["verdict"].iloc[0] != "not measured"


def test_the_verdict_summary_gives_training_one_line_at_the_largest_size_judged(tmp_path):
    """The report's summary leads with the decode claims and gives the paper's other half, training, one line:
    throughput against Transformer+FlashAttention at the largest size judged (6.7b here, not 1.3b)."""
    from retnet_bench.reports.report import SUMMARY_LINES, summary_frame

    rows = known_ratio_rows() + [
        train_row("6.7b", "retnet-chunkwise", "fla", 1, 8192, 10700.0, 111.0, role="candidate"),
        train_row("6.7b", "transformer", "flash-attn", 1, 8192, 11000.0, 108.0, role="baseline", n_kv_heads=32)]
    claims, table = _claims(tmp_path, rows)
    summary = summary_frame(table)
    train = summary[summary["claim"].str.startswith("training")]
    assert len(summary) == SUMMARY_LINES and len(train) == 1
    assert "Transformer+FlashAttention (6.7b" in train["claim"].iloc[0]
    assert summary["claim"].iloc[0].startswith("8.4x")  # decode first


def test_a_verdict_inside_the_steps_own_spread_shows_the_band(tmp_path):
    """RetNet at 0.99x of the Transformer's step: "does not hold" (a claim holds only where RetNet is faster). With
    each side's step time moved across a +-1% p10-p90 range the ratio spans 0.97-1.01x, so the boundary lies inside
    the run's own spread, and the claim shows that range. A tight spread (0.1%) keeps the plain value."""
    from retnet_bench.reports.render import claims_display_frame

    def rows(spread: float) -> list[dict]:
        out = []
        for impl, kernel, tps, role in (("retnet-chunkwise", "fla", 11000.0, "candidate"),
                                        ("transformer", "flash-attn", 11109.0, "baseline")):
            ms = 8192 * 1000.0 / tps
            out.append(train_row("6.7b", impl, kernel, 1, 8192, tps, 110.0, role=role, n_kv_heads=32,
                                 ms_p10=ms * (1 - spread), ms_p90=ms * (1 + spread)))
        return out

    key = ("train_throughput_vs_flash_6.7b", FRAMING_STRONGEST)
    wide, table = _claims(tmp_path / "a", rows(0.01))
    row = wide[key]
    ratio = 11000.0 / 11109.0
    assert row.band_low == pytest.approx(ratio * 0.99 / 1.01) and row.band_high == pytest.approx(ratio * 1.01 / 0.99)
    assert row.verdict == "does not hold" and row.verdict_within_band
    shown = claims_display_frame(table[(table["claim_id"] == key[0]) & (table["framing"] == key[1])])
    assert shown["measured"].iloc[0] == "0.99x (p10-p90 steps: 0.97-1.01x)"
    tight, table = _claims(tmp_path / "b", rows(0.001))
    assert not tight[key].verdict_within_band
    shown = claims_display_frame(table[(table["claim_id"] == key[0]) & (table["framing"] == key[1])])
    assert shown["measured"].iloc[0] == "0.99x"
