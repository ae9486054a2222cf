"""suites/training/gpu_time.py: a profiled step's compute, communication and exposed communication from device spans
(hand-made, with kernel names as the H200 profiles list them), and where it measures nothing; the point's columns."""
from __future__ import annotations

import pytest
import torch

from retnet_bench.suites.training.gpu_time import gpu_time_ms, is_communication, profile_step

NCCL_AG = "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
NCCL_RS = "ncclDevKernel_ReduceScatter_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)"


def test_nccl_kernels_are_communication_and_nothing_else_is():
    assert is_communication(NCCL_AG) and is_communication(NCCL_RS) and is_communication("ncclKernel_AllReduce_x")
    for name in ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "chunk_bwd_kernel_dqkwg",
                 "void at::native::detail::chunk_cat_cuda_kernel<float, c10::BFloat16>", "Memcpy DtoD (Device -> Device)",
                 "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26"):
        assert not is_communication(name)


def test_compute_communication_and_the_part_no_compute_overlaps():
    spans = [("nvjet_gemm", 0.0, 4000.0), ("_rotate_kernel", 3000.0, 5000.0),  # compute 0-5 ms (overlapping streams)
             (NCCL_AG, 4500.0, 7000.0), (NCCL_RS, 6000.0, 8000.0),           # communication 4.5-8 ms
             ("Memcpy DtoD (Device -> Device)", 7500.0, 9000.0)]              # compute 7.5-9 ms
    got = gpu_time_ms(spans)
    # compute 5 + 1.5 ms; communication 3.5 ms, of which 4.5-5 and 7.5-8 overlap compute: exposed 2.5 ms
    assert got == pytest.approx({"gpu_compute_ms": 6.5, "gpu_comm_ms": 3.5, "exposed_comm_ms": 2.5})
    one_gpu = gpu_time_ms([s for s in spans if not is_communication(s[0])])
    assert one_gpu == pytest.approx({"gpu_compute_ms": 6.5, "gpu_comm_ms": 0.0, "exposed_comm_ms": 0.0})


def test_on_a_cpu_nothing_is_profiled_and_the_step_is_not_run():
    ran = []
    assert profile_step(lambda: ran.append(1), torch.device("cpu")) is None and ran == []


def test_a_point_reports_its_busiest_gpu_s_compute_and_exposed_communication():
    """Two ranks: the row takes the largest of each (the busiest GPU bounds the step; the slowest collective too)."""
    from retnet_bench.suites.training import ModelRecipe, TrainSettings, summarize
    from retnet_bench.suites.training.launch import RankResult

    settings = TrainSettings(seq_len=32, steps=2, warmup_steps=0)
    ranks = [RankResult(rank=r, world_size=2, status="ok", kernel="fla", step_ms=[10.0, 11.0], losses=[1.0, 0.9],
                        gpu_compute_ms=c, gpu_comm_ms=3.0, exposed_comm_ms=e)
             for r, (c, e) in enumerate([(8.0, 1.5), (9.0, 0.5)])]
    point = summarize(ranks, ModelRecipe("retnet", "tiny"), settings)
    fields = point.row_fields(settings)
    assert fields["gpu_compute_ms"] == 9.0 and fields["exposed_comm_ms"] == 1.5
    ranks[1].gpu_compute_ms = None  # a rank without a profile: the others still give the largest they measured
    assert summarize(ranks, ModelRecipe("retnet", "tiny"), settings).gpu_compute_ms == 8.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the profiler's device activity")
def test_a_one_gpu_training_point_has_its_compute_time_and_no_communication():
    from retnet_bench.suites.training import ModelRecipe, TrainSettings, run_point

    settings = TrainSettings(seq_len=512, chunk_size=128, steps=3, warmup_steps=1)
    point = run_point(1, ModelRecipe("retnet", "small", kernel="auto", overrides={"vocab_size": 512}), settings, "cuda")
    assert point.status == "ok", point.error
    # the GPU computes for part of the step (the rest is the host's launches at this small size), never longer
    assert 0 < point.gpu_compute_ms <= point.ms_p90 * 1.2
    # the same model at T=256 after them: a shorter step, never none (it runs on every GPU point)
    assert 0 < point.short_step_ms < point.ms_p90 * 1.2
    assert point.exposed_comm_ms == 0.0 and point.ranks[0].gpu_comm_ms == 0.0
