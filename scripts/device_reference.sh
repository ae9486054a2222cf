#!/usr/bin/env bash
# The reference runs, spread over the GPUs of one machine (one suite process per GPU, in parallel), each stopped
# cleanly by --time-limit so that every finished row comes back. Usage (repo root, on the GPU machine):
#   bash scripts/device_reference.sh single   # 4 GPUs: table4 (1 rank), fig6 subset, capacity, long, kernels, GPU tests
#   bash scripts/device_reference.sh fsdp     # all GPUs: table4 over 2 and 4 ranks (FSDP2), the NCCL test
#   bash scripts/device_reference.sh multi2   # 2 GPUs (nvidia-h200-x2): 1.3B on 1 and 2 ranks, table4 over 2 ranks
#                                             # at 2.7B and 6.7B; then on the same machine:
#   bash scripts/device_reference.sh multi2-b # the NCCL test, 13B over 2 ranks, the 2-rank profile
#   bash scripts/device_reference.sh x2-host  # 2 GPUs: 1.3B over 2 ranks again, with fla's dispatch off, profiled
#                                             # with every rank's host side
#   bash scripts/device_reference.sh multi    # 4 GPUs: 1.3B on 1, 2, 4 ranks alone, table4 over 4 ranks (13B with
#                                             # checkpointing if it does not fit), the 4-rank profile, then lanes:
#                                             # table4 over 2 ranks, table4-long, long at 16k/64k
#   bash scripts/device_reference.sh gputests # 1 GPU: every GPU test, beside it the training-memory census (1.3B)
#   bash scripts/device_reference.sh onegpu-a # 1 GPU alone: table4 (1.3B-6.7B, fla / cuDNN), prefill (RetNet vs
#       static cuDNN), fla's chunk-size probe; then at once, on the same machine:
#   source .fa4b/install.sh && bash scripts/device_reference.sh onegpu-b   # FA4's table4 and prefill rows, its census
#   bash scripts/device_reference.sh gap67    # 1 GPU alone: 6.7B idle-gap profile + allocator counters, table4, census
#   bash scripts/device_reference.sh gap67b   # 1 GPU alone: census vs allocator, 6.7B with checkpointing, profiles
#   bash scripts/device_reference.sh census   # 1 GPU: training-engine GPU tests, then the census at 6.7B and 1.3B
#   bash scripts/device_reference.sh expandable  # 1 GPU alone: table4 6.7B/1.3B + 6.7B profile, expandable segments
#   bash scripts/device_reference.sh compile  # 1 GPU alone: table4 1.3B/6.7B with torch.compile per block, then plain
#   bash scripts/device_reference.sh compileprof  # 1 GPU alone: the 1.3B step profiled compiled and plain
#   bash scripts/device_reference.sh ckptpart-a   # 1 GPU alone: 6.7B plain, every-8/-4 blocks and fully checkpointed;
#   source .fa4b/install.sh && bash scripts/device_reference.sh ckptpart-b   # then FA4's 6.7B rows, repeats, profile
#   bash scripts/device_reference.sh verdict-a    # 1 GPU alone: table4 1.3B/2.7B (fla, cuDNN) with 3 + 10 steps;
#   source .fa4b/install.sh && bash scripts/device_reference.sh verdict-b    # then FA4's rows and every GPU test
#   bash scripts/device_reference.sh gemm-a   # 1 GPU: decode-projection / state-pass / energy-counter probes, GPU tests
#   bash scripts/device_reference.sh gemm-b   # 1 GPU alone: fig6 6.7B/8k B1,8,16 and capacity with decode_gemm auto
#                                             # (Triton), RetNet vs static cuDNN (MHA, GQA-8); the kernel's GPU tests
#   bash scripts/device_reference.sh decode-energy   # 1 GPU alone: fig6 6.7B/8k B1,8,16 and capacity at 80 GiB,
#                                             # each decode point timed >= 1.2 s (the energy counter's resolution);
#                                             # the GPU tests of decode memory
#   bash scripts/device_reference.sh train-energy    # 1 GPU alone: table4 1.3B-6.7B (fla, cuDNN), energy per token
#   bash scripts/device_reference.sh repeat-2.7b     # 1 GPU alone: table4 2.7B again, then the decode GPU tests
#   bash scripts/device_reference.sh capacity-again  # 1 GPU alone: capacity at 80 GiB, peaks restarted after step 1
#   bash scripts/device_reference.sh lease-variance  # 1 GPU alone: decode-memory GPU tests, then the 2.7B step profiled
#                                             # 3x per side, each autotuning afresh (fla's configs vs step time)
#   bash scripts/device_reference.sh async-a  # 1 GPU alone: table4 without a sync per step (1.3B-6.7B, 6.7B every-8)
#   source .fa4p3/install.sh && bash scripts/device_reference.sh async-b   # then FA4's rows with the same loop (FA4 in
#                                             # three pieces .fa4p1-3 now: see 2026-11-29-probes-s11/README.md)
#   bash scripts/device_reference.sh async-repeat  # 1 GPU alone: table4 1.3B/2.7B again, the 1.3B step profiled
#   bash scripts/device_reference.sh fwdbwd   # 1 GPU alone: forward + backward path's no-sync test, the paper's pipeline
#   PRESET=2.7b [ORDER=async-first] bash scripts/device_reference.sh sync-ab  # 1 GPU alone: the step with and without
#                                             # the per-step sync
#   bash scripts/device_reference.sh fla-dims # 1 GPU: fla's chunk kernel against torch per head-dim shape and per config
#                                             # pair of its two backward kernels (the refusal below 64 in dk or dv), then
#                                             # the fwd+bwd GPU tests
#   [VARIANTS=paired] bash scripts/device_reference.sh fla-host  # 1 GPU alone: host time of one fla call, public vs
#                                             # dispatch off vs inner, and dispatch on/off in one process
#   bash scripts/device_reference.sh tp       # 4+ GPUs: table4 6.7B/13B with FSDP2 alone, with TP 2 and TP over all
#   source .fa4b/install.sh && bash scripts/device_reference.sh flash4   # FlashAttention-4 installed, 4 GPUs, a lane
#       each: fig6 static FA4 (MHA, GQA-8, FP8 KV) + long; table4-long FA4 + probes; table4 on 1 GPU + the paper's
#       pipeline; GPU tests
set -uo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
FINAL=${OUT:-/tmp/out}; W=$(mktemp -d); R=$W/runs; mkdir -p "$R"
trap 'tar czf "$FINAL/reference_$1.tgz" -C "$W" . && echo "packed: $(cd "$W" && find . -type f | wc -l) files"' EXIT
source scripts/gpu_setup.sh > "$W/setup.log" 2>&1 || { cat "$W/setup.log"; exit 1; }
tail -1 "$W/setup.log"; python3 -c "import torch; print(torch.cuda.device_count(), 'GPUs')"
T0=$SECONDS; BUDGET=${BUDGET:-540}
left() { echo $(( BUDGET - (SECONDS - T0) )); }
bench() { local gpu=$1 name=$2; shift 2
  CUDA_VISIBLE_DEVICES=$gpu timeout $(( $(left) + 20 )) retnet-bench run "$@" --out "$R" --run-id "$name" --no-report \
    --time-limit $(( $(left) - 15 )) > "$W/$name.log" 2>&1
  echo "== $name (GPU $gpu) rc=$? at $((SECONDS - T0))s: $(grep -a "rows in" "$W/$name.log" | tail -1)"; }
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
ALL=$(seq -s, 0 $((NGPU - 1)))
TESTS="tests/test_retention_kernels.py tests/test_retnet_prefill.py tests/test_retnet_kernel_gpu.py
  tests/test_retnet_step_fused.py tests/test_baselines_kernels.py tests/test_baselines_gqa.py tests/test_runner_gpu.py
  tests/test_peers.py tests/test_retnet_torchscale.py"  # tests/test_fla_head_dims.py: its own mode, fla-dims
oom_in() { grep -q "\"model\": \"$2\".*\"status\": \"oom\"" "$R/$1/rows.jsonl" 2>/dev/null; }
case "$1" in
gemm-a)  # one GPU: probes first (nothing else on the GPU), then the tests of what changed
  timeout 330 python3 scripts/probe_decode_kernels.py > "$W/probe_decode_kernels.log" 2>&1
  echo "== decode probe rc=$? at $((SECONDS - T0))s"; cp "$FINAL/decode_kernels.json" "$W/" 2>/dev/null
  OUT=$W timeout 60 python3 scripts/probe_energy_counter.py > "$W/probe_energy_counter.log" 2>&1
  echo "== energy probe rc=$?: $(tr -d '\n ' < "$W/energy_counter.json" | head -c 300)"
  timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 200 -rfE --durations=8 \
    tests/test_skinny_linear.py tests/test_retnet_step_fused.py tests/test_baselines_gqa.py \
    tests/test_baselines_decode.py tests/test_runner_gpu.py tests/test_energy.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ;;
decode-energy)  # one GPU alone. The suites' decode windows (0.3 s) are below the energy counter's resolution
  # (trackers.ENERGY_MIN_WINDOW_S): the same suites with windows of >= 1.2 s, written beside the runs (suite.toml)
  for s in fig6 capacity; do
    sed -e 's/^min_seconds = .*/min_seconds = 1.2/' -e 's/^max_steps = .*/max_steps = 400/' \
      suites/definitions/$s.toml > "$W/$s.toml"; done
  bench 0 s10-fig6-energy "$W/fig6.toml" --model 6.7b --seq 8192 --batch 1,8,16 --impl retnet-recurrent,static \
    --kernel sdpa-cudnn
  bench 0 s10-capacity-gib "$W/capacity.toml" --impl retnet-recurrent,static --kernel sdpa-cudnn
  timeout 120 python3 -m pytest -q -p no:cacheprovider --timeout 100 -rfE tests/test_runner_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ;;
train-energy)  # one GPU alone: table4 1.3B-6.7B, RetNet (fla) and the Transformer (cuDNN), 10 steps: windows >= 1 s
  bench 0 s10-table4-energy table4 --model 1.3b,2.7b,6.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn ;;
capacity-again)  # one GPU alone: the 80 GiB capacity search again with the peaks restarted after each probe's first
  # step (decode-energy's windows), then the decode-memory GPU tests
  sed -e 's/^min_seconds = .*/min_seconds = 1.2/' -e 's/^max_steps = .*/max_steps = 400/' \
    suites/definitions/capacity.toml > "$W/capacity.toml"
  bench 0 s10-capacity-first-step "$W/capacity.toml" --impl retnet-recurrent,static --kernel sdpa-cudnn
  timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider --timeout 150 -rfE tests/test_runner_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ;;
repeat-2.7b)  # one GPU alone: table4 2.7B again (RetNet 23,600 -> 22,530 tok/s between two leases), then GPU tests
  bench 0 s10-table4-2.7b-repeat table4 --model 2.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 150 -rfE --durations=5 \
    tests/test_runner_gpu.py tests/test_skinny_linear.py tests/test_energy.py -k "not 8192 and not 24576" \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ;;
gemm-b)  # one GPU alone: fig6 and the capacity search with the Triton projections (auto), then their GPU tests
  bench 0 s9-fig6-triton fig6 --model 6.7b --seq 8192 --batch 1,8,16 --impl retnet-recurrent,static --kernel sdpa-cudnn
  bench 0 s9-capacity capacity --impl retnet-recurrent,static --kernel sdpa-cudnn
  timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 200 -rfE \
    tests/test_skinny_linear.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ;;
single)  # two GPUs, one lane each
  ( bench 0 table4 table4 --model 1.3b,2.7b,6.7b,13b
    bench 0 capacity capacity --impl retnet-recurrent,static,paper-like ) &
  ( CUDA_VISIBLE_DEVICES=1 timeout 170 python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 150 -rfE --durations=8 \
      tests/test_retention_kernels.py tests/test_retnet_prefill.py tests/test_retnet_kernel_gpu.py \
      tests/test_retnet_step_fused.py tests/test_baselines_kernels.py tests/test_baselines_gqa.py \
      tests/test_runner_gpu.py tests/test_peers.py > "$W/gpu_tests.log" 2>&1
    echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
    bench 1 kernels kernels
    bench 1 fig6-gqa fig6 --impl retnet-recurrent,static --kernel sdpa-cudnn,flash-attn-4 --batch 1,8,16 ) &
  wait ;;
fsdp)  # all GPUs: the NCCL test, table4 over 2 ranks (FSDP2), then the long suite on one GPU
  timeout 120 python3 -m pytest -q -p no:cacheprovider --timeout 100 -rfE tests/test_training_distributed.py \
    > "$W/nccl_tests.log" 2>&1; echo "== nccl tests rc=$?: $(tail -1 "$W/nccl_tests.log")"
  bench 0,1 table4-x2 table4 --nproc 2 --model 1.3b,2.7b,6.7b,13b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  ( bench 0 long long --seq 8192,32768,131072 ) &
  ( CUDA_VISIBLE_DEVICES=1 timeout $(( $(left) - 10 )) python3 -m pytest -v -p no:cacheprovider -n 8 --timeout 200 -rfE \
      --durations=15 tests/test_retention_kernels.py tests/test_retnet_prefill.py tests/test_retnet_kernel_gpu.py \
      tests/test_retnet_step_fused.py tests/test_baselines_kernels.py tests/test_baselines_gqa.py \
      tests/test_runner_gpu.py tests/test_peers.py > "$W/gpu_tests.log" 2>&1
    echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ) &
  wait ;;
multi)  # all GPUs: NCCL test, table4 over all ranks and over 2, then one lane per GPU (no FlashAttention-4 needed)
  timeout 120 python3 -m pytest -q -p no:cacheprovider --timeout 100 -rfE tests/test_training_distributed.py \
    > "$W/nccl_tests.log" 2>&1; echo "== nccl tests rc=$?: $(tail -1 "$W/nccl_tests.log")"
  # scaling 1 -> 2 -> N at 1.3B on this machine, each alone on its GPUs (other lanes load the host)
  bench 0 table4-x1-scaling table4 --model 1.3b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  bench 0,1 table4-x2-scaling table4 --nproc 2 --model 1.3b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  bench $ALL table4-x$NGPU table4 --nproc $NGPU --model 1.3b,2.7b,6.7b,13b --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn
  mkdir -p "$W/profile-x$NGPU"  # where the per-GPU scaling goes: exposed communication per step (issue #14)
  OUT="$W/profile-x$NGPU" timeout 240 python3 scripts/profile_train_step.py --preset 1.3b --seq 8192 --nproc $NGPU \
    --family retnet:fla transformer:sdpa-cudnn > "$W/profile-x$NGPU/log" 2>&1; echo "== profile x$NGPU rc=$?"
  if oom_in table4-x$NGPU 13b; then
    bench $ALL table4-x$NGPU-13b-ckpt table4 --model 13b --checkpointing full --nproc $NGPU \
      --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn; fi
  ( bench 0,1 table4-x2 table4 --nproc 2 --model 2.7b,6.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn ) &
  ( bench 2 table4-long table4-long --kernel fla,sdpa-cudnn ) &
  ( bench 3 long-16k-64k long --seq 16384,65536 --kernel sdpa-cudnn ) &
  wait ;;
flash4)  # FlashAttention-4 installed (source .fa4b/install.sh first), one lane per GPU
  python3 -c "from flash_attn.cute import flash_attn_func" || { echo "flash-attn-4 not importable"; exit 1; }
  ( bench 0 fig6-static-fa4 fig6 --impl static --kernel flash-attn-4 --batch 1,8,16 --seq 1024,2048,4096,8192
    bench 0 long-fa4 long --impl static --kernel flash-attn-4 ) &
  ( bench 1 table4-long-fa4 table4-long --impl transformer --kernel flash-attn-4
    export CUDA_VISIBLE_DEVICES=1
    OUT=$W timeout 120 python3 scripts/probe_gqa_kernels.py --batch 16 --seq 8192 > "$W/gqa_probe.log" 2>&1
    echo "== gqa probe rc=$? at $((SECONDS - T0))s"
    OUT=$W timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py --preset 1.3b --seq 8192 \
      > "$W/train_profile.log" 2>&1; echo "== train profile rc=$? at $((SECONDS - T0))s" ) &
  ( bench 2 table4-x1 table4 --model 1.3b,2.7b,6.7b --impl retnet-chunkwise,transformer \
      --kernel fla,sdpa-cudnn,flash-attn-4
    bench 2 fig6-recheck fig6 --impl retnet-recurrent --batch 1,16 --seq 8192
    bench 2 table4-paper table4 --impl torchscale-retnet,torchscale-transformer --model 1.3b ) &
  ( CUDA_VISIBLE_DEVICES=3 timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 200 \
      -rfE --durations=10 --deselect tests/test_retnet_step_fused.py::test_bf16_state_drift_over_1000_steps \
      $TESTS tests/test_rotation.py tests/test_gate.py > "$W/gpu_tests.log" 2>&1
    echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ) &
  wait ;;
clean)  # one GPU, nothing else running: training and prefill numbers free of other lanes' host load, the host profile
  bench 0 table4-clean table4 --model 1.3b,2.7b,6.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  OUT=$W timeout 150 python3 scripts/profile_train_step.py --preset 1.3b --seq 8192 --host \
    --family retnet:fla transformer:sdpa-cudnn > "$W/train_profile.log" 2>&1; echo "== train profile rc=$?"
  bench 0 prefill prefill --kernel sdpa-cudnn
  timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider -n 4 --timeout 120 -rfE \
    tests/test_retnet_kernel_gpu.py tests/test_rotation.py tests/test_gate.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$?: $(tail -1 "$W/gpu_tests.log")" ;;
hostcheck)  # one GPU: is the runner's RetNet training step slowed by the ranks' NVML thread or by too short a warm-up?
  bench 0 t4-nonvml table4 --model 1.3b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn --no-nvml
  sed -e '/^warmup = /d' -e 's/^steps = .*$/steps = 5\nwarmup = 3/' suites/definitions/table4.toml > "$W/table4-warm3.toml"
  bench 0 t4-warm3 "$W/table4-warm3.toml" --model 1.3b --impl retnet-chunkwise --kernel fla
  bench 0 t4-default table4 --model 1.3b --impl retnet-chunkwise --kernel fla ;;
gputests)  # one GPU: all GPU tests (8 workers) and, in parallel, what a training forward saves (allocator-only numbers)
  ( timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 240 -rfE --durations=10 \
      --deselect tests/test_retnet_step_fused.py::test_bf16_state_drift_over_1000_steps $TESTS tests/test_rotation.py tests/test_gate.py > "$W/gpu_tests.log" 2>&1
    echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ) &
  mkdir -p "$W/census"; OUT="$W/census" timeout 300 python3 scripts/profile_train_memory.py --preset 1.3b --seq 8192 \
    --family retnet:fla transformer:sdpa-cudnn > "$W/census/log" 2>&1; echo "== memory census rc=$?"
  wait ;;
onegpu-a)  # one GPU alone, no FlashAttention-4 needed (the first half of its install travels beside this call): the
  # #12 verdict rows with the fixed NVML reader for fla and cuDNN, and fla's chunk-size probe (training memory)
  OUT=$W timeout 120 python3 scripts/probe_fla_chunk.py > "$W/fla_chunk.log" 2>&1; echo "== fla chunk probe rc=$?"
  bench 0 table4-1gpu table4 --model 1.3b,6.7b,2.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  bench 0 prefill prefill --kernel sdpa-cudnn ;;
onegpu-b)  # the same machine right after, FlashAttention-4 installed: its table4 and prefill rows, its census
  python3 -c "from flash_attn.cute import flash_attn_func" || echo "flash-attn-4 not importable: its rows say so"
  bench 0 table4-1gpu-fa4 table4 --model 1.3b,6.7b,2.7b --impl transformer --kernel flash-attn-4
  bench 0 prefill-fa4 prefill --impl static --kernel flash-attn-4
  mkdir -p "$W/census"; OUT="$W/census" timeout $(( $(left) - 5 )) python3 scripts/profile_train_memory.py \
    --preset 1.3b --seq 8192 --family transformer:flash-attn-4 > "$W/census/log" 2>&1; echo "== census rc=$?" ;;
gap67)  # one GPU alone: why RetNet's 6.7B step is slower than its kernels (issue #12's open question): the idle-gap
  # profile with the allocator's counters, the table4 rows (alloc_retries), the memory census after its fix
  mkdir -p "$W/profile-6.7b"; OUT="$W/profile-6.7b" timeout 240 python3 scripts/profile_train_step.py --preset 6.7b \
    --seq 8192 --steps 3 --host --family retnet:fla transformer:sdpa-cudnn > "$W/profile-6.7b/log" 2>&1
  echo "== profile 6.7b rc=$? at $((SECONDS - T0))s"
  bench 0 table4-6.7b table4 --model 6.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  mkdir -p "$W/census"; OUT="$W/census" timeout $(( $(left) - 5 )) python3 scripts/profile_train_memory.py \
    --preset 6.7b --seq 8192 --family retnet:fla transformer:sdpa-cudnn > "$W/census/log" 2>&1; echo "== census rc=$?" ;;
gap67b)  # one GPU alone, after gap67: the census's check against the allocator (what the forward leaves allocated),
  # 6.7B with full activation checkpointing on both sides (no memory pressure), the Transformer's profile alone
  mkdir -p "$W/census"; OUT="$W/census" timeout 200 python3 scripts/profile_train_memory.py --preset 6.7b --seq 8192 \
    --family retnet:fla transformer:sdpa-cudnn > "$W/census/log" 2>&1; echo "== census rc=$? at $((SECONDS - T0))s"
  bench 0 table4-6.7b-ckpt table4 --model 6.7b --checkpointing full --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn
  mkdir -p "$W/profile-6.7b"; OUT="$W/profile-6.7b" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 6.7b --seq 8192 --steps 3 --host --family transformer:sdpa-cudnn retnet:fla > "$W/profile-6.7b/log" 2>&1
  echo "== profile 6.7b rc=$? at $((SECONDS - T0))s" ;;
tp)  # all GPUs (4 or 8): table4 with tensor parallelism inside FSDP2 (the paper's setting for 6.7B and 13B), TP 2 and
  # TP over all ranks, beside the plain FSDP2 rows of the same machine
  bench $ALL table4-x$NGPU-fsdp table4 --nproc $NGPU --model 6.7b,13b --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn
  for tp in 2 $NGPU; do bench $ALL table4-x$NGPU-tp$tp table4 --nproc $NGPU --tp $tp --model 6.7b,13b \
    --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn; done
  mkdir -p "$W/profile-tp2"; OUT="$W/profile-tp2" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 6.7b --seq 8192 --nproc $NGPU --tp 2 --family retnet:fla transformer:sdpa-cudnn > "$W/profile-tp2/log" \
    2>&1; echo "== profile tp2 rc=$?" ;;
census)  # one GPU: the GPU tests of the training engine and the census (its allocator cross-check included), then the
  # memory census at 1.3B and 6.7B (each model in a fresh process, nothing else on the GPU)
  timeout 170 python3 -m pytest -q -p no:cacheprovider -n 4 --timeout 150 -rfE tests/test_training_saved.py \
    tests/test_training.py tests/test_runner_gpu.py tests/test_gate.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  for preset in 6.7b 1.3b; do mkdir -p "$W/census-$preset"
    OUT="$W/census-$preset" timeout $(( $(left) - 5 )) python3 scripts/profile_train_memory.py --preset $preset \
      --seq 8192 --family retnet:fla transformer:sdpa-cudnn > "$W/census-$preset/log" 2>&1
    echo "== census $preset rc=$? at $((SECONDS - T0))s"; done ;;
expandable)  # one GPU alone: the 6.7B and 1.3B steps with the caching allocator's expandable segments (torchtitan's
  # run_train.sh sets PYTORCH_ALLOC_CONF=expandable_segments:True), then the 6.7B profile with its allocator counters
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  bench 0 table4-exp table4 --model 6.7b,1.3b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  mkdir -p "$W/profile-6.7b"; OUT="$W/profile-6.7b" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 6.7b --seq 8192 --steps 3 --host --family retnet:fla transformer:sdpa-cudnn > "$W/profile-6.7b/log" 2>&1
  echo "== profile 6.7b rc=$? at $((SECONDS - T0))s" ;;
compile)  # one GPU alone: table4 with torch.compile per block (torchtitan's `compile`) at ${MODELS:-1.3b,6.7b}, then
  # the plain steps of the same machine beside them
  export TORCHINDUCTOR_CACHE_DIR="$W/inductor"
  bench 0 ${TAG:-}table4-compiled table4 --model ${MODELS:-1.3b,6.7b} --compile blocks \
    --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  bench 0 ${TAG:-}table4-plain table4 --model ${MODELS:-1.3b,6.7b} --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn
  rm -rf "$W/inductor" ;;
compileprof)  # one GPU alone, after `compile`: the 1.3B step profiled compiled and plain, each model in fresh processes
  export TORCHINDUCTOR_CACHE_DIR="$W/inductor"
  for c in blocks none; do mkdir -p "$W/profile-1.3b-$c"
    OUT="$W/profile-1.3b-$c" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py --preset 1.3b --seq 8192 \
      --steps 3 --host --compile $c --family retnet:fla transformer:sdpa-cudnn > "$W/profile-1.3b-$c/log" 2>&1
    echo "== profile 1.3b compile $c rc=$? at $((SECONDS - T0))s"; done
  rm -rf "$W/inductor" ;;
ckptpart-a)  # one GPU alone: 6.7B with every N-th block checkpointed (torchtitan's selective per-layer option), both
  # sides on one lease, plain first; the first half of FlashAttention-4's install travels beside this call
  bench 0 table4-6.7b-plain table4 --model 6.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  for v in every-8 every-4 full; do
    bench 0 table4-6.7b-$v table4 --model 6.7b --checkpointing $v --impl retnet-chunkwise,transformer \
      --kernel fla,sdpa-cudnn; done ;;
ckptpart-b)  # the same machine right after, FlashAttention-4 installed: its 6.7B rows plain and every-8, both sides
  # again (a second sample), then RetNet's every-8 step profiled (are the allocator's retries and idle gaps gone?)
  python3 -c "from flash_attn.cute import flash_attn_func" || echo "flash-attn-4 not importable: its rows say so"
  bench 0 table4-6.7b-fa4 table4 --model 6.7b --impl transformer --kernel flash-attn-4
  bench 0 table4-6.7b-fa4-every-8 table4 --model 6.7b --checkpointing every-8 --impl transformer \
    --kernel flash-attn-4
  bench 0 table4-6.7b-every-8-again table4 --model 6.7b --checkpointing every-8 --impl retnet-chunkwise \
    --kernel fla
  bench 0 table4-6.7b-plain-again table4 --model 6.7b --impl retnet-chunkwise --kernel fla
  mkdir -p "$W/profile-6.7b-every-8"; OUT="$W/profile-6.7b-every-8" timeout $(( $(left) - 5 )) python3 \
    scripts/profile_train_step.py --preset 6.7b --seq 8192 --steps 3 --host --checkpointing every-8 \
    --family retnet:fla > "$W/profile-6.7b-every-8/log" 2>&1; echo "== profile 6.7b every-8 rc=$? at $((SECONDS - T0))s" ;;
verdict-a)  # one GPU alone: table4 at 1.3B and 2.7B with 3 + 10 steps (the one-GPU verdict rows of session 5 had
  # 1 + 3), fla and SDPA cuDNN; the first half of FlashAttention-4's install travels beside this call
  bench 0 table4-1gpu-steps10 table4 --model 1.3b,2.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn ;;
verdict-b)  # the same machine right after, FlashAttention-4 installed: its rows at 1.3B and 2.7B, then every GPU test
  python3 -c "from flash_attn.cute import flash_attn_func" || echo "flash-attn-4 not importable: its rows say so"
  bench 0 table4-1gpu-steps10-fa4 table4 --model 1.3b,2.7b --impl transformer --kernel flash-attn-4
  timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 240 -rfE --durations=10 \
    --deselect tests/test_retnet_step_fused.py::test_bf16_state_drift_over_1000_steps $TESTS tests/test_rotation.py \
    tests/test_gate.py tests/test_compile_gpu.py tests/test_tensor_parallel_gpu.py tests/test_training_saved.py \
    tests/test_baselines_hf.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ;;
lease-variance)  # one GPU alone: the decode-memory GPU tests (the final decode path had not run on a GPU), then the
  # 2.7B step profiled three times per side, each autotuning afresh: do fla's autotuners pick different configs
  # from process to process (as from lease to lease), and does RetNet's step time follow them?
  { lscpu | grep -E "^Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit,\
temperature.gpu,driver_version --format=csv; } > "$W/host.txt" 2>&1; cat "$W/host.txt"
  timeout 200 python3 -m pytest -q -p no:cacheprovider --timeout 150 -rfE tests/test_runner_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  mkdir -p "$W/profile-2.7b"; OUT="$W/profile-2.7b" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 2.7b --seq 8192 --steps 4 --host --repeat 3 --fresh-autotune --family retnet:fla transformer:sdpa-cudnn \
    > "$W/profile-2.7b/log" 2>&1; echo "== profile 2.7b rc=$? at $((SECONDS - T0))s" ;;
async-a)  # one GPU alone: the timed training steps without a sync per step (batch_on_device), the test of that, then
  # table4 at 1.3B-6.7B plain and 6.7B every-8, RetNet (fla) and the Transformer (cuDNN); FA4's first half beside it
  # 300 s: on a fresh machine the first test compiles fla's and our kernels (call 2 of session 11 ran out at 120 s)
  timeout 300 python3 -m pytest -q -p no:cacheprovider --timeout 280 -rfE tests/test_training_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  bench 0 s11-table4 table4 --model 1.3b,2.7b,6.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  bench 0 s11-table4-6.7b-every-8 table4 --model 6.7b --checkpointing every-8 --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn ;;
async-b)  # the same machine right after, FlashAttention-4 installed: its table4 rows with the same loop
  python3 -c "from flash_attn.cute import flash_attn_func" || echo "flash-attn-4 not importable: its rows say so"
  bench 0 s11-table4-fa4 table4 --model 1.3b,2.7b,6.7b --impl transformer --kernel flash-attn-4
  bench 0 s11-table4-6.7b-fa4-every-8 table4 --model 6.7b --checkpointing every-8 --impl transformer \
    --kernel flash-attn-4 ;;
async-repeat)  # one GPU alone, another lease: table4 at 1.3B and 2.7B again with the asynchronous loop (does RetNet
  # still move more than the Transformer between leases?), then the 1.3B step profiled (the GPU's idle time now)
  bench 0 s11-table4-repeat table4 --model 1.3b,2.7b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  mkdir -p "$W/profile-1.3b"; OUT="$W/profile-1.3b" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 1.3b --seq 8192 --steps 4 --host --family retnet:fla transformer:sdpa-cudnn > "$W/profile-1.3b/log" 2>&1
  echo "== profile 1.3b rc=$? at $((SECONDS - T0))s" ;;
first-point)  # one GPU alone: table4 1.3B twice, back to back (is a run's first training point slow on a fresh machine?
  # how far apart are two runs on one machine?); run ids ${TAG:-s11-}first-point and ${TAG:-s11-}first-point-again
  bench 0 ${TAG:-s11-}first-point table4 --model 1.3b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  bench 0 ${TAG:-s11-}first-point-again table4 --model 1.3b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn ;;
fwdbwd)  # one GPU alone: the forward + backward path's GPU tests (ids without a sync), then the paper's pipeline
  # (torchscale, 1.3B, forward + backward only) again with that path
  timeout 300 python3 -m pytest -q -p no:cacheprovider --timeout 280 -rfE tests/test_training_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  bench 0 s12-table4-paper table4 --impl torchscale-retnet,torchscale-transformer --model 1.3b ;;
sync-ab)  # one GPU alone: what the per-step sync (the loop before session 11) cost each side, on one machine: the
  # ${PRESET:-1.3b} step profiled with the blocking copy and without, alternating, each model in fresh processes;
  # ORDER=async-first swaps the order within a pair. A pair is begun only with time for one: 1.2x the last pair, or
  # 250 s (session 12's first pair took 242 s on a fresh machine); a first run that timed out ends the mode (its pair
  # cannot finish)
  need=250; pair=0; mkdir -p "$W/sync-ab"; first=--blocking-copy; second=""
  case "${ORDER:-blocking-first}" in blocking-first) ;; async-first) first=""; second=--blocking-copy ;;
    *) echo "ORDER=$ORDER: expected blocking-first or async-first"; exit 2 ;; esac
  for opens in 1 0 1 0; do  # 1: the run that opens a pair
    if [ $opens = 1 ]; then
      copy=$first
      [ "$(left)" -lt "$need" ] && { echo "== sync-ab: $(left) s left, less than a pair needs ($need s)"; break; }
      pair=$((pair + 1)); pair_t0=$SECONDS
    else copy=$second; fi
    mode=${copy:+blocking}; mode=${mode:-async}
    [ "$(left)" -gt 15 ] || { echo "== sync-ab: $(left) s left, stopped"; break; }
    rm -f "$W/sync-ab/train_profile.txt"
    OUT="$W/sync-ab" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py --preset ${PRESET:-1.3b} \
      --seq 8192 --steps 6 $copy --family retnet:fla transformer:sdpa-cudnn >> "$W/sync-ab/log" 2>&1; rc=$?
    [ -f "$W/sync-ab/train_profile.txt" ] && mv "$W/sync-ab/train_profile.txt" \
      "$W/sync-ab/train_profile_pair${pair}_${mode}.txt"
    echo "== sync-ab pair $pair $mode rc=$rc at $((SECONDS - T0))s"
    [ $opens = 1 ] && [ $rc -eq 124 ] && break
    [ $opens = 0 ] && need=$(( (SECONDS - pair_t0) * 6 / 5 )); done ;;
fla-dims)  # one GPU: tests/test_fla_head_dims.py (10 shapes in parallel child processes within 400 s; each compiles
  # fla's kernels and runs every pair of configs of its two backward kernels; their output kept in fla-dims/ as they
  # run), then the forward + backward GPU tests if 60 s are left
  mkdir -p "$W/fla-dims"
  FLA_DIMS_RECORD="$W/fla-dims" timeout 480 python3 -m pytest -v -s -p no:cacheprovider -rfE \
    tests/test_fla_head_dims.py > "$W/fla-dims/pytest.log" 2>&1
  echo "== fla dims rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/fla-dims/pytest.log")"
  [ "$(left)" -gt 60 ] || { echo "== gpu tests: $(left) s left, not run"; exit 0; }
  timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider --timeout 280 -rfE tests/test_training_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ;;
fla-host)  # one GPU alone: the host time of one fla retention call at 1.3B's head dims, public entry point vs
  # fla's dispatch switch off vs its inner fwd/bwd, and both in one process (scripts/probe_fla_host.py, each variant in
  # a fresh process; VARIANTS="paired" picks some)
  mkdir -p "$W/fla-host"; OUT="$W/fla-host" timeout $(( $(left) - 5 )) python3 scripts/probe_fla_host.py ${VARIANTS:-} \
    > "$W/fla-host/log" 2>&1; echo "== fla host rc=$? at $((SECONDS - T0))s"; cat "$W/fla-host/log" ;;
multi2)  # nvidia-h200-x2, first call: 1.3B on 1 rank and on 2, each alone (per-GPU scaling 1 -> 2), then table4 over 2
  # ranks at 2.7B and 6.7B; half of issue #14's scaling. Then, on the same machine: multi2-b
  bench 0 ${TAG:-}x2-table4-x1-scaling table4 --model 1.3b --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn
  bench 0,1 ${TAG:-}x2-table4-x2-scaling table4 --nproc 2 --model 1.3b --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn
  bench 0,1 ${TAG:-}x2-table4-x2 table4 --nproc 2 --model 2.7b,6.7b --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn ;;
multi2-b)  # nvidia-h200-x2, after multi2: the NCCL test (two ranks train like one GPU), 13B over 2 ranks (fully
  # checkpointed where plain is oom), then the 2-rank 1.3B step profiled (exposed communication)
  timeout 300 python3 -m pytest -q -p no:cacheprovider --timeout 280 -rfE -k nccl tests/test_training_distributed.py \
    > "$W/nccl_tests.log" 2>&1; echo "== nccl tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/nccl_tests.log")"
  bench 0,1 ${TAG:-}x2-table4-x2-13b table4 --nproc 2 --model 13b --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn
  if oom_in ${TAG:-}x2-table4-x2-13b 13b; then
    bench 0,1 ${TAG:-}x2-table4-x2-13b-ckpt table4 --nproc 2 --model 13b --checkpointing full \
      --impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn; fi
  [ "$(left)" -gt 90 ] || { echo "== profile x2: $(left) s left, not run"; exit 0; }
  mkdir -p "$W/profile-x2"; OUT="$W/profile-x2" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 1.3b --seq 8192 --nproc 2 --family retnet:fla transformer:sdpa-cudnn > "$W/profile-x2/log" 2>&1
  echo "== profile x2 rc=$? at $((SECONDS - T0))s" ;;
x2-host)  # nvidia-h200-x2 alone: why RetNet's per-GPU rate falls 13% from 1 to 2 GPUs at 1.3B (session 14: rank 1's
  # GPU idled 30 ms a step, rank 0 waited in all-gathers): 1.3B over 2 ranks again, RetNet again with fla's dispatch
  # wrappers off (0.2 ms of host time per layer and step), then the 2-rank step profiled with the host side (--host:
  # every rank's costliest host ops)
  bench 0,1 ${TAG:-}x2-table4-x2-scaling-again table4 --nproc 2 --model 1.3b --impl retnet-chunkwise,transformer \
    --kernel fla,sdpa-cudnn
  FLA_DISABLE_BACKEND_DISPATCH=1 bench 0,1 ${TAG:-}x2-table4-x2-nodispatch table4 --nproc 2 --model 1.3b \
    --impl retnet-chunkwise --kernel fla
  [ "$(left)" -gt 90 ] || { echo "== profile x2 host: $(left) s left, not run"; exit 0; }
  mkdir -p "$W/profile-x2-host"; OUT="$W/profile-x2-host" timeout $(( $(left) - 5 )) python3 \
    scripts/profile_train_step.py --preset 1.3b --seq 8192 --nproc 2 --host --family retnet:fla transformer:sdpa-cudnn \
    > "$W/profile-x2-host/log" 2>&1; echo "== profile x2 host rc=$? at $((SECONDS - T0))s" ;;
*) echo "usage: $0 gemm-a|decode-energy|train-energy|capacity-again|repeat-2.7b|gemm-b|single|fsdp|multi|flash4|clean|hostcheck|gputests|onegpu-a|onegpu-b|gap67|gap67b|tp|census|expandable|compile|compileprof|ckptpart-a|ckptpart-b|verdict-a|verdict-b|lease-variance|async-a|async-b|async-repeat|first-point|fwdbwd|sync-ab|fla-dims|fla-host|multi2|multi2-b|x2-host"; exit 2 ;;
esac
