"""Training engine (issue #14), single process on the CPU: the real step, FSDP2 on one rank against a plain training
loop (its naive twin), checkpointing, mixed precision, faults, FLOPs hand counts, the summary of rank results."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import retnet
from retnet_bench.baselines import Transformer, TransformerConfig
from retnet_bench.suites.training import (
    FAULT_ENV, ModelRecipe, RankResult, TrainSettings, build_model, check_nproc, mfu, model_forward, peak_flops,
    retnet_train_flops_per_token, run_distributed, summarize, synthetic_batch, train_step,
    transformer_train_flops_per_token,
)
from retnet_bench.suites.training.recipe import TransformerForTraining, matmul_params
from retnet_bench.suites.training.step import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from training_testing import record_step_timer  # noqa: E402

VOCAB = 256
# the transformer runs sdpa-math: a named backend exercises the per-block sdpa_context under recomputation
RECIPES = {
    "retnet": ModelRecipe("retnet", "tiny", kernel="torch", overrides={"vocab_size": VOCAB}),
    "transformer": ModelRecipe("transformer", "tiny", kernel="sdpa-math", overrides={"vocab_size": VOCAB}),
}
# fp32 compute on the CPU so that runs can be compared exactly; lr high enough to see the loss move in 6 steps
SETTINGS = TrainSettings(micro_batch=2, grad_accum=2, seq_len=32, chunk_size=8, steps=6, warmup_steps=0,
                         compute_dtype="float32", lr=1e-2, collective_timeout_s=60)


def plain_training_losses(recipe: ModelRecipe, settings: TrainSettings) -> list[float]:
    """The naive twin: the same model, data and step without FSDP or a process group."""
    torch.manual_seed(settings.seed)
    model = build_model(recipe, "cpu", torch.float32, torch.float32)
    opt = make_optimizer(model, settings, torch.device("cpu"))
    losses = []
    for step in range(settings.warmup_steps + settings.steps):
        batch = synthetic_batch(step, settings, VOCAB, 1, 0)
        losses.append(train_step(lambda ids: model_forward(model, recipe, ids, settings.chunk_size), opt, batch).item())
    return losses


@pytest.mark.parametrize("family", ["retnet", "transformer"])
def test_one_process_fsdp_step_trains_like_plain_training(family):
    recipe = RECIPES[family]
    (res,) = run_distributed(1, recipe, SETTINGS, "cpu")
    assert res.status == "ok", res.error
    assert not dist.is_initialized()  # the in-process group is torn down
    assert len(res.step_ms) == SETTINGS.steps and all(ms > 0 for ms in res.step_ms)
    assert len(res.losses) == SETTINGS.steps
    # learns the data's cycle: from ~log(256) = 5.5 clearly down within 6 steps
    assert res.losses[-1] < res.losses[0] - 0.3, res.losses
    # one FSDP rank (gradient reduce-scatter over one rank: a divide by 1) is plain training, to fp32 rounding
    torch.testing.assert_close(res.losses, plain_training_losses(recipe, SETTINGS), rtol=1e-6, atol=0)


@pytest.mark.parametrize("family", ["retnet", "transformer"])
def test_compiled_blocks_train_like_eager_blocks(family):
    """compile="blocks" (torch.compile per block, inside FSDP2) computes the same step: Inductor reorders float
    sums, so equal to fp32 rounding over a few steps, not bit for bit. One compiled graph serves every block."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # process-wide: an earlier test's graphs must not count here
    settings = dataclasses.replace(SETTINGS, steps=2)
    eager, compiled = (run_distributed(1, RECIPES[family], dataclasses.replace(settings, compile=c), "cpu")[0]
                       for c in ("none", "blocks"))
    assert eager.status == compiled.status == "ok", (eager.error, compiled.error)
    torch.testing.assert_close(compiled.losses, eager.losses, rtol=1e-5, atol=0)
    stats = torch._dynamo.utils.counters["stats"]
    assert stats["unique_graphs"] >= 1  # something was compiled: the test cannot pass on eager blocks alone


@pytest.mark.parametrize("family", ["retnet", "transformer"])
def test_full_checkpointing_recomputes_the_same_step(family):
    settings = dataclasses.replace(SETTINGS, steps=2)
    none, full = (run_distributed(1, RECIPES[family], dataclasses.replace(settings, checkpointing=c), "cpu")[0]
                  for c in ("none", "full"))
    assert none.status == full.status == "ok", (none.error, full.error)
    torch.testing.assert_close(full.losses, none.losses, rtol=1e-6, atol=0)


def test_every_nth_block_checkpointing_recomputes_the_same_step():
    """every-2 wraps blocks 1, 3, ... (torchtitan's count) and trains like the plain step."""
    from retnet_bench.suites.training.step import checkpointed_blocks

    assert checkpointed_blocks(8, "every-4") == [3, 7] and checkpointed_blocks(3, "full") == [0, 1, 2]
    assert checkpointed_blocks(3, "none") == [] and checkpointed_blocks(3, "every-8") == []
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from retnet_bench.suites.training.step import apply_checkpointing

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(4))
    apply_checkpointing(model, "every-2")
    assert [isinstance(b, CheckpointWrapper) for b in model.layers] == [False, True, False, True]
    settings = dataclasses.replace(SETTINGS, steps=2)
    none, every2 = (run_distributed(1, RECIPES["retnet"], dataclasses.replace(settings, checkpointing=c), "cpu")[0]
                    for c in ("none", "every-2"))
    assert none.status == every2.status == "ok", (none.error, every2.error)
    torch.testing.assert_close(every2.losses, none.losses, rtol=1e-6, atol=0)


def test_bf16_compute_with_fp32_master_weights_runs():
    settings = dataclasses.replace(SETTINGS, steps=2)
    fp32 = run_distributed(1, RECIPES["retnet"], settings, "cpu")[0]
    bf16 = run_distributed(1, RECIPES["retnet"], dataclasses.replace(settings, compute_dtype="bfloat16"), "cpu")[0]
    assert bf16.status == "ok", bf16.error
    # same fp32 weights, bf16 matmuls: the first loss agrees to bf16 precision, and it is not the fp32 run
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=2e-2)
    assert bf16.losses != fp32.losses


def test_transformer_training_view_is_the_baseline_forward():
    cfg = TransformerConfig.from_name("tiny", vocab_size=VOCAB)
    torch.manual_seed(0)
    model = Transformer(cfg, kernel="sdpa-math")
    ids = torch.randint(VOCAB, (2, 16))
    torch.testing.assert_close(TransformerForTraining(model)(ids), model(ids), rtol=0, atol=0)


def test_global_batch_is_split_over_ranks_in_order():
    one = synthetic_batch(3, dataclasses.replace(SETTINGS, grad_accum=4), VOCAB, 1, 0)  # (4, 2, T + 1)
    ranks = [synthetic_batch(3, SETTINGS, VOCAB, 2, r) for r in range(2)]  # 2 x (2, 2, T + 1)
    assert torch.equal(torch.cat(ranks), one)
    assert not torch.equal(synthetic_batch(4, SETTINGS, VOCAB, 2, 0), ranks[0])  # fresh data every step


def test_injected_oom_becomes_an_oom_result(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "0:oom")
    (res,) = run_distributed(1, RECIPES["retnet"], dataclasses.replace(SETTINGS, steps=1), "cpu")
    assert res.status == "oom" and "injected" in res.error
    assert not dist.is_initialized()
    point = summarize([res], RECIPES["retnet"], SETTINGS)
    assert point.status == "oom" and point.tokens_per_s is None


def test_a_loss_that_is_not_finite_makes_an_error_result_not_a_speed():
    """A kernel that computes garbage must not leave a tokens/s behind: an absurd learning rate blows the weights up
    after the warm-up step, so the timed steps' loss is inf or nan."""
    settings = dataclasses.replace(SETTINGS, lr=1e30, warmup_steps=1, steps=2)
    (res,) = run_distributed(1, RECIPES["retnet"], settings, "cpu")
    assert res.status == "error" and "not finite" in res.error and res.step_ms


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError):
        check_nproc(0, "cpu")
    with pytest.raises(ValueError):
        check_nproc(torch.cuda.device_count() + 1, "cuda")
    with pytest.raises(ValueError):
        TrainSettings(checkpointing="selective")
    with pytest.raises(ValueError):
        TrainSettings(compile="everything")
    with pytest.raises(ValueError):
        ModelRecipe("mamba", "tiny")


# ---------------------------------------------------------------------------------------------------- FLOPs
def test_retnet_flops_per_token_hand_count():
    cfg = retnet.RetNetConfig.from_name("tiny", vocab_size=VOCAB)  # L=2, d=64, H=2 -> dk=32, dv=64, ffn 128
    # per layer: qkvg 64*384 = 24576, out 128*64 = 8192, fc_in 64*128 = 8192, fc_out 8192 -> 49152 (= 12 d^2)
    # N = 2 * 49152 + head 64*256 = 16384 -> 114688; 6 N = 688128
    # retention, C = 8: per head 2*8*32 + 2*8*64 + 2*32*64 + 2*32*64 = 512 + 1024 + 4096 + 4096 = 9728,
    # x H = 2 -> 19456 per layer forward, x3 x L=2 -> 116736
    assert retnet_train_flops_per_token(cfg, chunk_size=8, seq_len=32) == 688128 + 116736
    assert retnet_train_flops_per_token(cfg, chunk_size=512, seq_len=32) == retnet_train_flops_per_token(cfg, 32, 32)
    torch.manual_seed(0)
    assert matmul_params(retnet.RetNet(cfg)) == 114688  # the N above is the model's


def test_transformer_flops_per_token_hand_count():
    cfg = TransformerConfig.from_name("tiny", vocab_size=VOCAB)  # L=2, d=64, 2 heads of 32, ffn 256
    # per layer: wqkv 64*192 = 12288, wo 4096, fc1 64*256 = 16384, fc2 16384 -> 49152; N = 98304 + 16384 = 114688
    # attention (PaLM 12 L H Q T): 12 * 2 * 2 * 32 * 32 = 49152
    assert transformer_train_flops_per_token(cfg, seq_len=32) == 6 * 114688 + 49152
    assert matmul_params(TransformerForTraining(Transformer(cfg))) == 114688


def test_peak_table_and_mfu():
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops(None) is None and peak_flops("Some CPU") is None
    assert mfu(1e4, 1e10, "NVIDIA H200", 2) == pytest.approx(1e14 / (2 * 989e12))
    assert mfu(1e4, 1e10, None, 1) is None


# ---------------------------------------------------------------------------------------------------- summary
def _ok(rank: int, step_ms: list[float], peak: float) -> RankResult:
    return RankResult(rank=rank, world_size=2, status="ok", kernel="torch", gpu_name="NVIDIA H200", n_params=10,
                      step_ms=step_ms, losses=[2.0], mem_torch_peak_gb=peak, mem_torch_reserved_gb=peak + 1)


def test_summary_takes_the_slowest_rank_per_step_and_max_memory():
    settings = dataclasses.replace(SETTINGS, grad_accum=1, micro_batch=1, seq_len=1000)
    point = summarize([_ok(0, [10.0, 30.0, 20.0], 5.0), _ok(1, [20.0, 10.0, 20.0], 7.0)], RECIPES["retnet"], settings)
    assert point.status == "ok" and point.world_size == 2 and point.n_repeats == 3
    assert point.ms_median == 20.0  # per-step maxima 20, 30, 20
    assert point.tokens_per_step == 2000 and point.tokens_per_s == pytest.approx(1e5)
    assert point.tokens_per_s_per_gpu == pytest.approx(5e4)
    assert point.mem_torch_peak_gb == 7.0 and point.mem_torch_reserved_gb == 8.0
    assert point.mfu == pytest.approx(1e5 * point.flops_per_token / (2 * 989e12))
    from retnet_bench.suites.contract import ROW_COLUMNS  # the runner's row contract

    fields = point.row_fields(settings)
    assert set(fields) <= set(ROW_COLUMNS) and fields["world_size"] == 2 and fields["batch_size"] == 2


def test_summary_names_the_first_failure():
    stopped = RankResult(rank=0, world_size=3, error="rank 0: no result (stopped by the launcher)")
    late = RankResult(rank=2, world_size=3, error="rank 2: gloo connection closed", failed_at=200.0)
    cause = RankResult(rank=1, world_size=3, status="oom", error="rank 1: OutOfMemoryError", failed_at=100.0)
    point = summarize([stopped, cause, late], RECIPES["retnet"], SETTINGS)
    assert point.status == "oom" and point.error.startswith("rank 1: OutOfMemoryError")
    assert point.ms_median is None and point.mfu is None


def test_nvml_is_read_between_steps_only_and_by_no_thread(monkeypatch):
    """The rank's memory reader must not run while a step is timed: a polling thread slowed the measured step on an
    H200 (RetNet 1.3B 243 vs 177 ms). Every read falls between a step's stop and the next step's start."""
    import threading

    from retnet_bench.suites.training import launch

    events: list[str] = []
    record_step_timer(monkeypatch, events)

    class Reader:
        def __init__(self, device):
            self.baseline, self.peak = 0, 0
            events.append("init")

        def read(self) -> None:
            events.append("read")
            self.peak += 1

    threads_before = threading.active_count()
    monkeypatch.setattr(launch, "NvmlStepPeak", Reader)
    settings = dataclasses.replace(SETTINGS, steps=2, warmup_steps=1)
    (res,) = run_distributed(1, RECIPES["retnet"], settings, "cpu")
    assert res.status == "ok" and threading.active_count() == threads_before
    assert events == ["init"] + ["start", "stop", "read"] * 3 + ["read"]
    off = dataclasses.replace(settings, nvml_sampling=False)
    events.clear()
    (res,) = run_distributed(1, RECIPES["retnet"], off, "cpu")
    assert res.status == "ok" and "read" not in events and res.mem_nvml_peak_gb is None


def test_every_engine_step_gets_its_batch_through_batch_on_device(monkeypatch):
    """The engine's loop copies each step's batch with `batch_on_device` (pinned memory, no sync on a GPU: the GPU
    test checks that the copy and the step never sync), before the step's timer starts; never a plain .to()."""
    from retnet_bench.suites.training import launch

    events: list[str] = []
    record_step_timer(monkeypatch, events)
    real = launch.batch_on_device

    def spy(batch, device):
        events.append("copy")
        return real(batch, device)

    monkeypatch.setattr(launch, "batch_on_device", spy)
    settings = dataclasses.replace(SETTINGS, steps=2, warmup_steps=1, nvml_sampling=False)
    (res,) = run_distributed(1, RECIPES["retnet"], settings, "cpu")
    assert res.status == "ok"
    assert events == ["copy", "start", "stop"] * 3


def test_the_transformer_hands_attention_a_contiguous_v_when_training(monkeypatch):
    """In training the attention kernel saves v: a view of the q|k|v projection would keep all of it alive until
    backward, so the model passes a contiguous v (inference keeps the view: nothing is saved there)."""
    from retnet_bench.baselines import transformer as tmod

    seen: list[bool] = []
    real = tmod.causal_attention

    def spy(q, k, v, kernel):
        seen.append(v.is_contiguous())
        return real(q, k, v, kernel)

    monkeypatch.setattr(tmod, "causal_attention", spy)
    model = Transformer(TransformerConfig.from_name("tiny", vocab_size=VOCAB), kernel="sdpa-math")
    ids = torch.randint(0, VOCAB, (1, 16))
    model(ids).sum().backward()
    assert seen and all(seen)
    seen.clear()
    with torch.no_grad():
        model(ids)
    assert seen and not any(seen)


def test_alloc_retries_count_this_points_retries_and_the_summary_takes_the_max(monkeypatch):
    """torch's num_alloc_retries is cumulative per process: a point reports its own increase; null on the CPU."""
    from retnet_bench.suites.trackers import AllocRetries

    assert AllocRetries(torch.device("cpu")).count() is None
    stats = {"num_alloc_retries": 5}
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device=None: dict(stats))
    counter = AllocRetries(torch.device("cuda", 0))
    assert counter.count() == 0
    stats["num_alloc_retries"] = 7
    assert counter.count() == 2
    settings = dataclasses.replace(SETTINGS, grad_accum=1, micro_batch=1, seq_len=1000)
    ranks = [dataclasses.replace(_ok(0, [10.0], 5.0), alloc_retries=0), dataclasses.replace(_ok(1, [10.0], 5.0),
                                                                                           alloc_retries=3)]
    point = summarize(ranks, RECIPES["retnet"], settings)
    assert point.alloc_retries == 3 and point.row_fields(settings)["alloc_retries"] == 3


def test_a_short_step_is_the_same_model_and_engine_at_t_256(monkeypatch):
    """short_step_ms trains 2 + 5 steps at min(256, seq_len) tokens with the point's model and optimizer, timing the
    last 5 as the timed steps are (the engine calls it on GPUs only; here on the CPU for its bookkeeping)."""
    from retnet_bench.suites.training import launch
    from retnet_bench.suites.training.fsdp import init_distributed, shutdown_distributed
    from retnet_bench.suites.training.recipe import build_model, model_forward

    seen, real = [], launch.train_step

    def recording(fwd, opt, batch):
        seen.append(tuple(batch.shape))
        return real(fwd, opt, batch)

    monkeypatch.setattr(launch, "train_step", recording)
    recipe, device = RECIPES["retnet"], torch.device("cpu")
    settings = dataclasses.replace(SETTINGS, seq_len=300)
    mesh = init_distributed(device, 0, 1, settings.collective_timeout_s, dist.HashStore())
    try:
        model = build_model(recipe, device, torch.float32, torch.float32)
        opt = launch.prepare_for_training(model, recipe, settings, mesh, device)
        ms = launch.short_step_ms(lambda ids: model_forward(model, recipe, ids, settings.chunk_size), opt, settings,
                                  VOCAB, 1, 0, device)
    finally:
        shutdown_distributed()
    assert ms > 0 and len(seen) == launch.SHORT_WARMUP + launch.SHORT_STEPS
    assert {s[-1] for s in seen} == {launch.SHORT_SEQ_LEN + 1}  # ids carry one token more (the targets)
