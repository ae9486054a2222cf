"""scripts/profile_train_step.py (a script, not part of the package) on hand-made and H200-named inputs: kernel
categories, exposed communication, idle gaps, one rank's line of a several-rank profile, the autotuners' record."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))  # as when run: the script imports profile_timeline from its own folder


def _profile_script():
    """scripts/profile_train_step.py as a module (a script, not part of the package)."""
    path = SCRIPTS / "profile_train_step.py"
    spec = importlib.util.spec_from_file_location("profile_train_step", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_profile_categories_on_kernel_names_from_h200_profiles():
    """Kernel names as the H200 profiles list them. FSDP2's copy-in kernel (torch._chunk_cat) is not fla's chunk
    kernel: it had been counted as retention time, in the Transformer's profile too."""
    category = _profile_script().category
    assert category("void at::native::detail::chunk_cat_cuda_kernel<float, c10::BFloat16>(c10::BFloat16**") \
        == "fsdp copy-in/out"
    assert category("chunk_bwd_kernel_dqkwg") == category("chunk_fwd_kernel_h") == "retention (fla)"
    assert category("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26") == "attention"
    assert category("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT") == "gemm"
    assert category("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<") == "optimizer"
    assert category("ncclDevKernel_ReduceScatter_Sum_f32_RING_LL") == "communication"
    assert category("Memcpy DtoD (Device -> Device)") == "other"


def test_exposed_communication_is_the_part_no_compute_kernel_overlaps():
    """scripts/profile_train_step.py's overlap arithmetic (what --nproc N reports per step), on hand-made spans."""
    mod = _profile_script()
    spans = [("gemm", 0.0, 4000.0), ("norm", 3000.0, 5000.0),             # compute 0-5 ms
             ("communication", 4500.0, 7000.0), ("communication", 6000.0, 8000.0),  # comm 4.5-8 ms
             ("gemm", 7500.0, 9000.0)]                                     # compute 7.5-9 ms
    got = mod.overlap_ms(spans, steps=1)
    # busy 0-9 ms; comm 3.5 ms, of which 4.5-5 and 7.5-8 overlap compute: exposed 2.5 ms
    assert got == {"gpu_busy_ms": 9.0, "comm_ms": 3.5, "exposed_comm_ms": 2.5}
    assert mod.overlap_ms(spans, steps=2)["exposed_comm_ms"] == 1.25


def test_a_rank_s_profile_line_has_its_idle_gpu_and_costliest_host_ops():
    """--nproc N profiles list every rank: the slow rank is the one whose GPU idles (its host is behind), so each
    rank's idle time and, with --host, its five costliest host ops are kept; a rank that failed keeps its error."""
    mod = _profile_script()
    ops = [dict(name=f"op{i}", self_cpu_ms=10.0 - i, calls_per_step=1) for i in range(8)]
    r = dict(rank=1, step_ms=210.6, gpu_busy_ms=180.5, comm_ms=40.7, exposed_comm_ms=8.5,
             idle=dict(idle_ms=30.1, idle_long_gaps_ms=2.0), host_ops=ops, categories={"gemm": 93.0})
    got = mod.rank_summary(r)
    assert got["gpu_idle_ms"] == 30.1 and [o["name"] for o in got["host_ops"]] == ["op0", "op1", "op2", "op3", "op4"]
    assert got["error"] is None and "categories" not in got
    failed = mod.rank_summary(dict(rank=0, error="OutOfMemoryError: x"))
    assert failed["error"] == "OutOfMemoryError: x" and failed["gpu_idle_ms"] is None and failed["host_ops"] == []


def test_idle_gaps_attribute_long_gpu_gaps_to_the_host_calls_inside_them():
    """scripts/profile_train_step.py's idle-time attribution on hand-made spans (us): the gaps between kernels, the
    long ones (>= 0.5 ms) with the host calls that overlap them and the kernels on either side."""
    mod = _profile_script()
    kernels = [("gemm_a", 0.0, 1000.0), ("norm_b", 900.0, 1100.0),  # overlapping: busy 0-1.1 ms
               ("gemm_c", 1300.0, 2000.0),                            # 0.2 ms gap: short
               ("chunk_d", 4000.0, 5000.0)]                           # 2 ms gap: long
    host = [("cudaFree", 2100.0, 3600.0), ("cudaLaunchKernel", 3900.0, 3950.0), ("aten::mm", 0.0, 500.0)]
    got = mod.idle_gaps(kernels, host, steps=1)
    assert got["idle_ms"] == 2.2 and got["idle_long_gaps_ms"] == 2.0 and got["long_gaps_per_step"] == 1
    assert got["host_in_long_gaps_ms"] == {"cudaFree": 1.5, "cudaLaunchKernel": 0.05}
    (gap,) = got["longest_gaps"]
    assert gap["ms"] == 2.0 and gap["after_kernel"] == "gemm_c" and gap["before_kernel"] == "chunk_d"
    assert gap["host"][0].startswith("cudaFree 1.50")
    assert mod.idle_gaps(kernels, host, steps=2)["idle_ms"] == 1.1


def test_autotuned_configs_lists_each_triton_autotuners_choice_per_key():
    """scripts/profile_train_step.py's record of what Triton's autotuners picked (fla's kernels and ours): a kernel
    with a tuned key appears with that key and the config; one never launched does not."""
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.autotune(configs=[triton.Config({"BLOCK": 16}), triton.Config({"BLOCK": 32}, num_warps=8)], key=["n"])
    @triton.jit
    def _tuned_in_test(x, n, BLOCK: tl.constexpr):
        pass

    @triton.autotune(configs=[triton.Config({"BLOCK": 16})], key=["n"])
    @triton.jit
    def _never_launched_in_test(x, n, BLOCK: tl.constexpr):
        pass

    # what a launch's tuning stores: the choice per key, and the candidates' timings (median, p20, p80 in ms)
    _tuned_in_test.cache[(4096, "torch.bfloat16")] = _tuned_in_test.configs[1]
    _tuned_in_test.configs_timings = {_tuned_in_test.configs[0]: [0.5, 0.45, 0.55],
                                      _tuned_in_test.configs[1]: [0.25, 0.2, 0.3]}
    got = _profile_script().autotuned_configs()
    assert "_never_launched_in_test" not in got
    choice, fastest, runner_up = got["_tuned_in_test"]
    assert choice.startswith("(4096, 'torch.bfloat16'): ") and "BLOCK: 32" in choice and "num_warps: 8" in choice
    assert fastest.startswith("candidate (its last tuning) BLOCK: 32") and fastest.endswith(": 0.2500/0.2000/0.3000 ms")
    assert runner_up.startswith("candidate (its last tuning) BLOCK: 16")
    assert runner_up.endswith(": 0.5000/0.4500/0.5500 ms")


def test_forget_autotuning_deletes_tuning_results_and_keeps_compiled_kernels(tmp_path, monkeypatch):
    triton = pytest.importorskip("triton")
    (tmp_path / "abc").mkdir()
    for name in ("abc/chunk_fwd_kernel_h.autotune.json", "abc/chunk_fwd_kernel_h.cubin", "abc/x.json"):
        (tmp_path / name).write_text("{}")
    monkeypatch.setattr(triton.knobs.cache, "dir", str(tmp_path))
    assert _profile_script().forget_autotuning() == 1
    assert sorted(p.name for p in (tmp_path / "abc").iterdir()) == ["chunk_fwd_kernel_h.cubin", "x.json"]
