"""Training engine over several ranks (issue #14): two gloo ranks launched by torch's elastic launcher on the CPU,
and the same on two GPUs with NCCL where a machine has them."""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from retnet_bench.suites.training import FAULT_ENV, ModelRecipe, TrainSettings, run_distributed, run_point, summarize

VOCAB = 256
RECIPES = {
    "retnet": ModelRecipe("retnet", "tiny", kernel="torch", overrides={"vocab_size": VOCAB}),
    "transformer": ModelRecipe("transformer", "tiny", kernel="sdpa-math", overrides={"vocab_size": VOCAB}),
}
# one sequence per rank per step; the single process gets both as two accumulated micro-batches
TWO_RANKS = TrainSettings(micro_batch=1, grad_accum=1, seq_len=32, chunk_size=8, steps=3, warmup_steps=0,
                          compute_dtype="float32", lr=1e-2, collective_timeout_s=60)
ONE_PROCESS = dataclasses.replace(TWO_RANKS, grad_accum=2)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("family", ["retnet", "transformer"])
def test_two_gloo_ranks_train_like_one_process(family):
    recipe = RECIPES[family]
    two = run_point(2, recipe, TWO_RANKS, "cpu")
    one = run_point(1, recipe, ONE_PROCESS, "cpu")
    assert two.status == "ok", two.error
    assert one.status == "ok", one.error
    assert two.world_size == 2 and [r.rank for r in two.ranks] == [0, 1]
    assert two.tokens_per_step == one.tokens_per_step == 2 * 32
    assert two.n_repeats == TWO_RANKS.steps and two.ms_median > 0 and two.tokens_per_s > 0
    # Same fp32 model on both sides (same seed), same global batch. The ranks' gradients are g0 and g1, summed by
    # FSDP's reduce-scatter and divided by 2; the process accumulates g0/2 + g1/2. Halving is exact in binary
    # floating point, so the two agree to the last bit except where the reduction's summation order differs
    # (one rounding of fp32 per element per step). 1e-6 relative on the loss after 3 AdamW steps covers that and
    # fails on any real difference (a wrong shard, a missing or doubled gradient moves it by > 1e-3).
    torch.testing.assert_close(two.losses, one.losses, rtol=1e-6, atol=0)


@pytest.mark.timeout(180)
def test_a_failing_rank_gives_an_error_result_not_a_hang(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "1:error")  # rank 1 raises before its first step; rank 0 waits on it
    start = time.monotonic()
    ranks = run_distributed(2, RECIPES["retnet"], TWO_RANKS, "cpu")
    assert time.monotonic() - start < TWO_RANKS.collective_timeout_s  # stopped, not timed out
    assert [r.status for r in ranks] == ["error", "error"]
    assert "injected" in ranks[1].error
    point = summarize(ranks, RECIPES["retnet"], TWO_RANKS)
    assert point.status == "error" and point.error.startswith("rank 1:") and point.tokens_per_s is None


@pytest.mark.timeout(300)
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL ranks); the CPU tests use gloo")
def test_two_nccl_ranks_train_like_one_gpu():
    recipe = RECIPES["retnet"]
    settings = dataclasses.replace(TWO_RANKS, compute_dtype="bfloat16")
    two = run_point(2, recipe, settings, "cuda")
    one = run_point(1, recipe, dataclasses.replace(settings, grad_accum=2), "cuda")
    assert two.status == "ok" and one.status == "ok", (two.error, one.error)
    assert two.mem_torch_peak_gb > 0 and two.gpu_name and two.alloc_retries == 0  # a tiny model: no pressure
    # each rank's profiled step saw NCCL's kernels (FSDP2's all-gathers and reduce-scatters); one GPU saw none
    assert all(r.gpu_comm_ms > 0 and r.gpu_compute_ms > 0 for r in two.ranks) and two.exposed_comm_ms is not None
    assert one.ranks[0].gpu_comm_ms == 0.0
    # bf16 compute: GPU kernels need not be bitwise reproducible across processes; 1e-3 relative is bf16 noise
    torch.testing.assert_close(two.losses, one.losses, rtol=1e-3, atol=0)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("family", ["retnet", "transformer"])
def test_two_tensor_parallel_ranks_train_like_one_process(family):
    """tp=2: each rank holds half of every block's heads and FFN (DTensor, gloo on the CPU); both ranks see the same
    sequences, so the global batch is one rank's and the loss must be one process's. The tiny presets have 2 heads
    (the Transformer's 2 KV heads too: MHA), so each rank computes one head."""
    recipe = RECIPES[family]
    tp = dataclasses.replace(TWO_RANKS, tp=2)
    two = run_point(2, recipe, tp, "cpu")
    one = run_point(1, recipe, TWO_RANKS, "cpu")
    assert two.status == "ok", two.error
    assert two.tokens_per_step == one.tokens_per_step == 32  # two ranks, one replica: one sequence per step
    # Each block's output is a sum over the ranks' heads (all-reduce) instead of one matmul over all of them:
    # fp32 rounding differs, nothing else. A head or FFN slice on the wrong rank moves the loss by > 1e-2.
    torch.testing.assert_close(two.losses, one.losses, rtol=1e-5, atol=0)


def test_tensor_parallel_must_divide_the_ranks():
    with pytest.raises(ValueError, match="tp=2 does not divide the 3 ranks"):
        dataclasses.replace(TWO_RANKS, tp=2).data_parallel(3)


def test_rank_major_rows_give_each_rank_whole_segments():
    from retnet_bench.suites.training.tensor_parallel import rank_major_rows

    # [q0 q1 | k0 k1 | v0 v0' v1 v1'] -> rank 0: q0 k0 v0 v0', rank 1: q1 k1 v1 v1'
    assert rank_major_rows([2, 2, 4], 2).tolist() == [0, 2, 4, 5, 1, 3, 6, 7]


@pytest.mark.timeout(300)
def test_data_and_tensor_parallel_together_train_like_one_process():
    """4 ranks as 2 replicas (FSDP2 over "dp") x 2 tensor-parallel ranks (DTensor over "tp"): the 2-D mesh
    torchtitan uses. Two sequences per step, one per replica; the single process accumulates both."""
    recipe = RECIPES["retnet"]
    four = run_point(4, recipe, dataclasses.replace(TWO_RANKS, tp=2), "cpu")
    one = run_point(1, recipe, ONE_PROCESS, "cpu")
    assert four.status == "ok", four.error
    assert four.tokens_per_step == one.tokens_per_step == 2 * 32
    torch.testing.assert_close(four.losses, one.losses, rtol=1e-5, atol=0)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("variant", ["glu-ffn", "checkpointed"])
def test_tensor_parallel_with_a_fused_glu_ffn_or_checkpointing_trains_like_one_process(variant):
    """The GLU FFN's fused [h | gate] projection is reordered like q|k|v|g; checkpointing wraps the tensor-parallel
    blocks (torchtitan's order: TP, then checkpointing, then FSDP)."""
    recipe = RECIPES["retnet"]
    settings = TWO_RANKS
    if variant == "glu-ffn":
        recipe = ModelRecipe("retnet", "tiny", kernel="torch", overrides={"vocab_size": VOCAB, "ffn": "glu"})
    else:
        settings = dataclasses.replace(TWO_RANKS, checkpointing="full")
    two = run_point(2, recipe, dataclasses.replace(settings, tp=2), "cpu")
    one = run_point(1, recipe, settings, "cpu")
    assert two.status == "ok", two.error
    torch.testing.assert_close(two.losses, one.losses, rtol=1e-5, atol=0)
