# Multi-GPU modes of scripts/device_reference.sh (sourced by it: functions only): FSDP2 over 2-8 ranks, tensor
# parallelism, per-GPU scaling, lanes of one suite per GPU. Helpers as in device_modes_one_gpu.sh.

# single: two GPUs, one lane each
mode_single() {
  ( bench 0 table4 table4 --model 1.3b,2.7b,6.7b,13b
    bench 0 capacity capacity --impl retnet-recurrent,static,paper-like ) &
  ( CUDA_VISIBLE_DEVICES=1 timeout 170 python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 150 -rfE --durations=8 \
      tests/test_retention_kernels.py tests/test_retnet_prefill.py tests/test_retnet_kernel_gpu.py \
      tests/test_retnet_step_fused.py tests/test_baselines_kernels.py tests/test_baselines_gqa.py \
      tests/test_runner_gpu.py tests/test_peers.py > "$W/gpu_tests.log" 2>&1
    echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
    bench 1 kernels kernels
    bench 1 fig6-gqa fig6 --impl retnet-recurrent,static --kernel sdpa-cudnn,flash-attn-4 --batch 1,8,16 ) &
  wait
}

# fsdp: all GPUs: the NCCL test, table4 over 2 ranks (FSDP2), then the long suite on one GPU
mode_fsdp() {
  timeout 120 python3 -m pytest -q -p no:cacheprovider --timeout 100 -rfE tests/test_training_distributed.py \
    > "$W/nccl_tests.log" 2>&1; echo "== nccl tests rc=$?: $(tail -1 "$W/nccl_tests.log")"
  bench 0,1 table4-x2 table4 --nproc 2 --model 1.3b,2.7b,6.7b,13b "${FLA_VS_CUDNN[@]}"
  ( bench 0 long long --seq 8192,32768,131072 ) &
  ( CUDA_VISIBLE_DEVICES=1 timeout $(( $(left) - 10 )) python3 -m pytest -v -p no:cacheprovider -n 8 --timeout 200 -rfE \
      --durations=15 tests/test_retention_kernels.py tests/test_retnet_prefill.py tests/test_retnet_kernel_gpu.py \
      tests/test_retnet_step_fused.py tests/test_baselines_kernels.py tests/test_baselines_gqa.py \
      tests/test_runner_gpu.py tests/test_peers.py > "$W/gpu_tests.log" 2>&1
    echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ) &
  wait
}

# multi: all GPUs: NCCL test, table4 over all ranks and over 2, then one lane per GPU (no FlashAttention-4 needed)
mode_multi() {
  timeout 120 python3 -m pytest -q -p no:cacheprovider --timeout 100 -rfE tests/test_training_distributed.py \
    > "$W/nccl_tests.log" 2>&1; echo "== nccl tests rc=$?: $(tail -1 "$W/nccl_tests.log")"
  # scaling 1 -> 2 -> N at 1.3B on this machine, each alone on its GPUs (other lanes load the host)
  bench 0 table4-x1-scaling table4 --model 1.3b "${FLA_VS_CUDNN[@]}"
  bench 0,1 table4-x2-scaling table4 --nproc 2 --model 1.3b "${FLA_VS_CUDNN[@]}"
  bench $ALL table4-x$NGPU table4 --nproc $NGPU --model 1.3b,2.7b,6.7b,13b "${FLA_VS_CUDNN[@]}"
  mkdir -p "$W/profile-x$NGPU"  # where the per-GPU scaling goes: exposed communication per step (issue #14)
  OUT="$W/profile-x$NGPU" timeout 240 python3 scripts/profile_train_step.py --preset 1.3b --seq 8192 --nproc $NGPU \
    --family retnet:fla transformer:sdpa-cudnn > "$W/profile-x$NGPU/log" 2>&1; echo "== profile x$NGPU rc=$?"
  if oom_in table4-x$NGPU 13b; then
    bench $ALL table4-x$NGPU-13b-ckpt table4 --model 13b --checkpointing full --nproc $NGPU \
      "${FLA_VS_CUDNN[@]}"; fi
  ( bench 0,1 table4-x2 table4 --nproc 2 --model 2.7b,6.7b "${FLA_VS_CUDNN[@]}" ) &
  ( bench 2 table4-long table4-long --kernel fla,sdpa-cudnn ) &
  ( bench 3 long-16k-64k long --seq 16384,65536 --kernel sdpa-cudnn ) &
  wait
}

# flash4: FlashAttention-4 installed (source .fa4b/install.sh first), one lane per GPU
mode_flash4() {
  python3 -c "from flash_attn.cute import flash_attn_func" || { echo "flash-attn-4 not importable"; exit 1; }
  ( bench 0 fig6-static-fa4 fig6 --impl static --kernel flash-attn-4 --batch 1,8,16 --seq 1024,2048,4096,8192
    bench 0 long-fa4 long --impl static --kernel flash-attn-4 ) &
  ( bench 1 table4-long-fa4 table4-long --impl transformer --kernel flash-attn-4
    export CUDA_VISIBLE_DEVICES=1
    OUT=$W timeout 120 python3 scripts/probe_gqa_kernels.py --batch 16 --seq 8192 > "$W/gqa_probe.log" 2>&1
    echo "== gqa probe rc=$? at $((SECONDS - T0))s"
    OUT=$W timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py --preset 1.3b --seq 8192 \
      > "$W/train_profile.log" 2>&1; echo "== train profile rc=$? at $((SECONDS - T0))s" ) &
  ( bench 2 table4-x1 table4 --model 1.3b,2.7b,6.7b "${FLA_VS_CUDNN[@]}",flash-attn-4
    bench 2 fig6-recheck fig6 --impl retnet-recurrent --batch 1,16 --seq 8192
    bench 2 table4-paper table4 --impl torchscale-retnet,torchscale-transformer --model 1.3b ) &
  ( CUDA_VISIBLE_DEVICES=3 timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 200 \
      -rfE --durations=10 --deselect tests/test_retnet_step_fused.py::test_bf16_state_drift_over_1000_steps \
      $TESTS tests/test_rotation.py tests/test_gate.py > "$W/gpu_tests.log" 2>&1
    echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ) &
  wait
}

# tp: all GPUs (2, 4 or 8): table4 with tensor parallelism inside FSDP2 (the paper's setting for 6.7B and 13B), TP 2
# and TP over all ranks (one run where they are the same), beside the plain FSDP2 rows of the same machine, then a
# TP-2 profile as time allows
mode_tp() {
  local tp
  bench $ALL table4-x$NGPU-fsdp table4 --nproc $NGPU --model 6.7b,13b "${FLA_VS_CUDNN[@]}"
  for tp in $(printf '%s\n' 2 $NGPU | sort -nu); do bench $ALL table4-x$NGPU-tp$tp table4 --nproc $NGPU --tp $tp \
    --model 6.7b,13b "${FLA_VS_CUDNN[@]}"; done
  profile tp2 --preset 6.7b --seq 8192 --nproc $NGPU --tp 2 --family retnet:fla transformer:sdpa-cudnn
}

# (a helper of the modes below, not a mode) the NCCL test (ranks train like one GPU), then 13B on GPUS over NPROC
# ranks as run RUN, and again fully checkpointed as RUN-ckpt where the plain step was oom
nccl_test_then_13b() { local run=$1 gpus=$2 nproc=$3
  timeout 300 python3 -m pytest -q -p no:cacheprovider --timeout 280 -rfE -k nccl tests/test_training_distributed.py \
    > "$W/nccl_tests.log" 2>&1; echo "== nccl tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/nccl_tests.log")"
  bench $gpus $run table4 --nproc $nproc --model 13b "${FLA_VS_CUDNN[@]}"
  if oom_in $run 13b; then
    bench $gpus $run-ckpt table4 --nproc $nproc --model 13b --checkpointing full "${FLA_VS_CUDNN[@]}"; fi
}

# collectives N: how fast N ranks exchange FSDP2's messages (scripts/probe_collectives.py: all-gather and
# reduce-scatter at every preset's block size, the link NCCL used, and each preset's milliseconds of collectives per
# step), with NCCL's own choice of protocol, then with NCCL_PROTO=Simple: in session 14's 2-rank profile, NCCL ran
# FSDP2's ~100 MB all-gathers as ring LL kernels (its low-latency protocol), 4.9 GB in 75 ms on rank 0, waits included
# (65 GB/s), where NVLink (NV18) carries several times that
collectives() { local nproc=$1 proto dir
  for proto in default Simple; do
    dir="$W/collectives-x$nproc-$proto"; mkdir -p "$dir"
    ( [ $proto = default ] || export NCCL_PROTO=$proto
      OUT="$dir" timeout 150 python3 -m torch.distributed.run --standalone --nproc-per-node $nproc \
        scripts/probe_collectives.py > "$dir/log" 2>&1 )
    echo "== collectives x$nproc $proto rc=$? at $((SECONDS - T0))s: $(grep -a " 1.3b:" "$dir/collectives.txt" 2>/dev/null)"
  done
}

# multi2: nvidia-h200-x2, first call: 1.3B on 1 rank and on 2, each alone (per-GPU scaling 1 -> 2), then table4 over 2
# ranks at 2.7B and 6.7B; half of issue #14's scaling. Then, on the same machine: multi2-b
mode_multi2() {
  bench 0 ${TAG:-}x2-table4-x1-scaling table4 --model 1.3b "${FLA_VS_CUDNN[@]}"
  bench 0,1 ${TAG:-}x2-table4-x2-scaling table4 --nproc 2 --model 1.3b "${FLA_VS_CUDNN[@]}"
  bench 0,1 ${TAG:-}x2-table4-x2 table4 --nproc 2 --model 2.7b,6.7b "${FLA_VS_CUDNN[@]}"
}

# multi2-b: nvidia-h200-x2, after multi2: the NCCL test (two ranks train like one GPU), 13B over 2 ranks (fully
# checkpointed where plain is oom), then the 2-rank 1.3B step profiled (exposed communication)
mode_multi2-b() {
  nccl_test_then_13b ${TAG:-}x2-table4-x2-13b 0,1 2
  profile x2 --preset 1.3b --seq 8192 --nproc 2 --family retnet:fla transformer:sdpa-cudnn
}

# multi4-a: nvidia-h200-x4, first call (~500 s on a fresh machine, from session 17's 2-GPU timings): 1.3B on 1, 2
# and 4 ranks, each alone (per-GPU scaling 1 -> 2 -> 4, issue #14's >= 90% target), with fla-graphs beside fla (over
# 2 ranks fla's host work made 2 of 4 draws on one lease host-bound, 81-85% of one GPU's rate; fla-graphs' were 96-98%:
# session 17), then 2.7B and 6.7B over 4
mode_multi4-a() {
  bench 0 ${TAG:-}x4-table4-x1-scaling table4 --model 1.3b "${GRAPHS_FLA_VS_CUDNN[@]}"
  bench 0,1 ${TAG:-}x4-table4-x2-scaling table4 --nproc 2 --model 1.3b "${GRAPHS_FLA_VS_CUDNN[@]}"
  bench $ALL ${TAG:-}x4-table4-x4-scaling table4 --nproc $NGPU --model 1.3b "${GRAPHS_FLA_VS_CUDNN[@]}"
  bench $ALL ${TAG:-}x4-table4-x4 table4 --nproc $NGPU --model 2.7b,6.7b "${FLA_VS_CUDNN[@]}"
}

# multi4-b: nvidia-h200-x4, after multi4-a: the NCCL test, 13B over 4 ranks (fully checkpointed where plain is oom),
# the 4-rank 1.3B step profiled with every rank's host side, then 2.7B and 6.7B on 1 and 2 ranks (the rest of
# issue #14's 1 / 2 / 4 sweep) as time allows
mode_multi4-b() {
  collectives $NGPU
  nccl_test_then_13b ${TAG:-}x4-table4-x4-13b $ALL $NGPU
  profile x4 --preset 1.3b --seq 8192 --nproc $NGPU --host --family retnet:fla transformer:sdpa-cudnn
  bench 0,1 ${TAG:-}x4-table4-x2 table4 --nproc 2 --model 2.7b,6.7b "${FLA_VS_CUDNN[@]}"
  bench 0 ${TAG:-}x4-table4-x1 table4 --model 2.7b,6.7b "${FLA_VS_CUDNN[@]}"
}

# x2-graphs: nvidia-h200-x2 alone: does taking fla's host cost out of RetNet's step (the fla-graphs kernel: fla
# replayed from CUDA graphs) bring back its per-GPU rate on two GPUs at 1.3B, where its host needs as long as its GPU
# (session 16)? fla-graphs' GPU tests first, on one GPU; only if they pass do its rows run, beside fla and SDPA cuDNN,
# on 1 GPU and over 2 (each row has short_step_ms, the host's time per step on one GPU)
mode_x2-graphs() {
  local kernels=fla,sdpa-cudnn
  # its tests on GPU 0 (~180 s in session 16's call 4, fla's autotuning included), the engine's on GPU 1 meanwhile
  ( CUDA_VISIBLE_DEVICES=1 timeout 240 python3 -m pytest -v -p no:cacheprovider --timeout 200 -rfE \
      tests/test_gpu_time.py tests/test_training_gpu.py > "$W/gpu_tests_engine.log" 2>&1
    echo "== engine GPU tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests_engine.log")" ) &
  CUDA_VISIBLE_DEVICES=0 timeout 240 python3 -m pytest -v -p no:cacheprovider --timeout 200 -rfE \
    tests/test_chunk_graphs.py > "$W/gpu_tests.log" 2>&1 && kernels=fla,fla-graphs,sdpa-cudnn
  echo "== fla-graphs GPU tests at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log"); kernels $kernels"
  wait
  bench 0 ${TAG:-}x2-table4-x1-graphs table4 --model 1.3b --impl retnet-chunkwise,transformer --kernel $kernels
  bench 0,1 ${TAG:-}x2-table4-x2-graphs table4 --nproc 2 --model 1.3b --impl retnet-chunkwise,transformer \
    --kernel $kernels
}

# x2-host: nvidia-h200-x2 alone: why RetNet's per-GPU rate falls 13% from 1 to 2 GPUs at 1.3B (session 14: rank 1's
# GPU idled about 30 ms a step, rank 0 had 28 ms of exposed communication): the link's rate at FSDP2's message sizes
# (collectives), 1.3B over 2 ranks again, again with NCCL_PROTO=Simple should the probe find it faster, then the
# 2-rank step profiled with the host side (--host: every rank's costliest host ops), then RetNet with fla's dispatch
# wrappers off (0.2 ms of host time per layer and step)
mode_x2-host() {
  collectives 2
  bench 0,1 ${TAG:-}x2-table4-x2-scaling-again table4 --nproc 2 --model 1.3b "${FLA_VS_CUDNN[@]}"
  NCCL_PROTO=Simple bench 0,1 ${TAG:-}x2-table4-x2-simple table4 --nproc 2 --model 1.3b "${FLA_VS_CUDNN[@]}"
  profile x2-host --preset 1.3b --seq 8192 --nproc 2 --host --family retnet:fla transformer:sdpa-cudnn
  FLA_DISABLE_BACKEND_DISPATCH=1 bench 0,1 ${TAG:-}x2-table4-x2-nodispatch table4 --nproc 2 --model 1.3b \
    --impl retnet-chunkwise --kernel fla
}

# x2-sweep: nvidia-h200-x2, after x2-graphs on a lease of the same session: 2.7B and 6.7B on 1 GPU and over 2, on
# one lease (session 14's 2-GPU rows and session 15's 1-GPU rows came from different hosts, and the host decides
# much at 1.3B: session 16), then 1.3B on 1 and 2 again as time allows (a second draw of x2-graphs' scaling)
mode_x2-sweep() {
  bench 0 ${TAG:-}x2-table4-x1-sweep table4 --model 2.7b,6.7b "${FLA_VS_CUDNN[@]}"
  bench 0,1 ${TAG:-}x2-table4-x2-sweep table4 --nproc 2 --model 2.7b,6.7b "${FLA_VS_CUDNN[@]}"
  bench 0 ${TAG:-}x2-table4-x1-again table4 --model 1.3b "${FLA_VS_CUDNN[@]}"
  bench 0,1 ${TAG:-}x2-table4-x2-again table4 --nproc 2 --model 1.3b "${FLA_VS_CUDNN[@]}"
}

# x2-graphs-host: nvidia-h200-x2: RetNet's 1.3B rate over 2 ranks moved from lease to lease in session 17 (43.5k and
# 38.3k tokens/s per GPU, the Transformer 42.7k and 43.8k): fla, fla-graphs and SDPA cuDNN over 2 ranks, then the
# 2-rank step profiled with every rank's host side, then the three again (a second draw on the same lease)
mode_x2-graphs-host() {
  bench 0,1 ${TAG:-}x2-table4-x2-graphs-1 table4 --nproc 2 --model 1.3b "${GRAPHS_FLA_VS_CUDNN[@]}"
  profile x2-host --preset 1.3b --seq 8192 --nproc 2 --host --family retnet:fla retnet:fla-graphs transformer:sdpa-cudnn
  bench 0,1 ${TAG:-}x2-table4-x2-graphs-2 table4 --nproc 2 --model 1.3b "${GRAPHS_FLA_VS_CUDNN[@]}"
}

# x2-graphs-scaling: nvidia-h200-x2, after x2-graphs-host on its lease: 1.3B with fla, fla-graphs and SDPA cuDNN on 1
# GPU, then over 2 ranks (one more draw of each side's 1 -> 2 scaling on one lease)
mode_x2-graphs-scaling() {
  bench 0 ${TAG:-}x2-table4-x1-graphs-3 table4 --model 1.3b "${GRAPHS_FLA_VS_CUDNN[@]}"
  bench 0,1 ${TAG:-}x2-table4-x2-graphs-3 table4 --nproc 2 --model 1.3b "${GRAPHS_FLA_VS_CUDNN[@]}"
}
