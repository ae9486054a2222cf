# One-GPU modes of scripts/device_reference.sh (sourced by it: functions only). Each ran on the lent H200 in the
# session its probes README names; they stay so that those runs can be made again. Helpers from device_reference.sh:
# bench GPUS RUN_ID SUITE [OPTIONS] (one suite within the time left), left (seconds of BUDGET left), oom_in RUN MODEL,
# $W (what comes back), $R (run folders), $TESTS (the GPU tests), $NGPU, $ALL.

# gemm-a: one GPU: probes first (nothing else on the GPU), then the tests of what changed
mode_gemm-a() {
  timeout 330 python3 scripts/probe_decode_kernels.py > "$W/probe_decode_kernels.log" 2>&1
  echo "== decode probe rc=$? at $((SECONDS - T0))s"; cp "$FINAL/decode_kernels.json" "$W/" 2>/dev/null
  OUT=$W timeout 60 python3 scripts/probe_energy_counter.py > "$W/probe_energy_counter.log" 2>&1
  echo "== energy probe rc=$?: $(tr -d '\n ' < "$W/energy_counter.json" | head -c 300)"
  timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 200 -rfE --durations=8 \
    tests/test_skinny_linear.py tests/test_retnet_step_fused.py tests/test_baselines_gqa.py \
    tests/test_baselines_decode.py tests/test_runner_gpu.py tests/test_energy.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
}

# decode-energy: one GPU alone. The suites' decode windows (0.3 s) are below the energy counter's resolution
# (trackers.ENERGY_MIN_WINDOW_S): the same suites with windows of >= 1.2 s, written beside the runs (suite.toml)
mode_decode-energy() {
  for s in fig6 capacity; do
    sed -e 's/^min_seconds = .*/min_seconds = 1.2/' -e 's/^max_steps = .*/max_steps = 400/' \
      suites/definitions/$s.toml > "$W/$s.toml"; done
  bench 0 s10-fig6-energy "$W/fig6.toml" --model 6.7b --seq 8192 --batch 1,8,16 --impl retnet-recurrent,static \
    --kernel sdpa-cudnn
  bench 0 s10-capacity-gib "$W/capacity.toml" --impl retnet-recurrent,static --kernel sdpa-cudnn
  timeout 120 python3 -m pytest -q -p no:cacheprovider --timeout 100 -rfE tests/test_runner_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
}

# train-energy: one GPU alone: table4 1.3B-6.7B, RetNet (fla) and the Transformer (cuDNN), 10 steps: windows >= 1 s
mode_train-energy() {
  bench 0 s10-table4-energy table4 --model 1.3b,2.7b,6.7b "${FLA_VS_CUDNN[@]}"
}

# capacity-again: one GPU alone: the 80 GiB capacity search again with the peaks restarted after each probe's first
# step (decode-energy's windows), then the decode-memory GPU tests
mode_capacity-again() {
  sed -e 's/^min_seconds = .*/min_seconds = 1.2/' -e 's/^max_steps = .*/max_steps = 400/' \
    suites/definitions/capacity.toml > "$W/capacity.toml"
  bench 0 s10-capacity-first-step "$W/capacity.toml" --impl retnet-recurrent,static --kernel sdpa-cudnn
  timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider --timeout 150 -rfE tests/test_runner_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
}

# repeat-2.7b: one GPU alone: table4 2.7B again (RetNet 23,600 -> 22,530 tok/s between two leases), then GPU tests
mode_repeat-2.7b() {
  bench 0 s10-table4-2.7b-repeat table4 --model 2.7b "${FLA_VS_CUDNN[@]}"
  timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 150 -rfE --durations=5 \
    tests/test_runner_gpu.py tests/test_skinny_linear.py tests/test_energy.py -k "not 8192 and not 24576" \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
}

# gemm-b: one GPU alone: fig6 and the capacity search with the Triton projections (auto), then their GPU tests
mode_gemm-b() {
  bench 0 s9-fig6-triton fig6 --model 6.7b --seq 8192 --batch 1,8,16 --impl retnet-recurrent,static --kernel sdpa-cudnn
  bench 0 s9-capacity capacity --impl retnet-recurrent,static --kernel sdpa-cudnn
  timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 200 -rfE \
    tests/test_skinny_linear.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
}

# clean: one GPU, nothing else running: training and prefill numbers free of other lanes' host load, the host profile
mode_clean() {
  bench 0 table4-clean table4 --model 1.3b,2.7b,6.7b "${FLA_VS_CUDNN[@]}"
  OUT=$W timeout 150 python3 scripts/profile_train_step.py --preset 1.3b --seq 8192 --host \
    --family retnet:fla transformer:sdpa-cudnn > "$W/train_profile.log" 2>&1; echo "== train profile rc=$?"
  bench 0 prefill prefill --kernel sdpa-cudnn
  timeout $(( $(left) - 5 )) python3 -m pytest -q -p no:cacheprovider -n 4 --timeout 120 -rfE \
    tests/test_retnet_kernel_gpu.py tests/test_rotation.py tests/test_gate.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$?: $(tail -1 "$W/gpu_tests.log")"
}

# hostcheck: one GPU: is the runner's RetNet training step slowed by the ranks' NVML thread or by too short a warm-up?
mode_hostcheck() {
  bench 0 t4-nonvml table4 --model 1.3b "${FLA_VS_CUDNN[@]}" --no-nvml
  sed -e '/^warmup = /d' -e 's/^steps = .*$/steps = 5\nwarmup = 3/' suites/definitions/table4.toml > "$W/table4-warm3.toml"
  bench 0 t4-warm3 "$W/table4-warm3.toml" --model 1.3b --impl retnet-chunkwise --kernel fla
  bench 0 t4-default table4 --model 1.3b --impl retnet-chunkwise --kernel fla
}

# gputests: one GPU: all GPU tests (8 workers) and, in parallel, what a training forward saves (allocator-only numbers)
mode_gputests() {
  ( timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 240 -rfE --durations=10 \
      --deselect tests/test_retnet_step_fused.py::test_bf16_state_drift_over_1000_steps $TESTS tests/test_rotation.py tests/test_gate.py > "$W/gpu_tests.log" 2>&1
    echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")" ) &
  mkdir -p "$W/census"; OUT="$W/census" timeout 300 python3 scripts/profile_train_memory.py --preset 1.3b --seq 8192 \
    --family retnet:fla transformer:sdpa-cudnn > "$W/census/log" 2>&1; echo "== memory census rc=$?"
  wait
}

# onegpu-a: one GPU alone, no FlashAttention-4 needed (the first half of its install travels beside this call): the
# #12 verdict rows with the fixed NVML reader for fla and cuDNN, and fla's chunk-size probe (training memory)
mode_onegpu-a() {
  OUT=$W timeout 120 python3 scripts/probe_fla_chunk.py > "$W/fla_chunk.log" 2>&1; echo "== fla chunk probe rc=$?"
  bench 0 table4-1gpu table4 --model 1.3b,6.7b,2.7b "${FLA_VS_CUDNN[@]}"
  bench 0 prefill prefill --kernel sdpa-cudnn
}

# onegpu-b: the same machine right after, FlashAttention-4 installed: its table4 and prefill rows, its census
mode_onegpu-b() {
  python3 -c "from flash_attn.cute import flash_attn_func" || echo "flash-attn-4 not importable: its rows say so"
  bench 0 table4-1gpu-fa4 table4 --model 1.3b,6.7b,2.7b --impl transformer --kernel flash-attn-4
  bench 0 prefill-fa4 prefill --impl static --kernel flash-attn-4
  mkdir -p "$W/census"; OUT="$W/census" timeout $(( $(left) - 5 )) python3 scripts/profile_train_memory.py \
    --preset 1.3b --seq 8192 --family transformer:flash-attn-4 > "$W/census/log" 2>&1; echo "== census rc=$?"
}

# gap67: one GPU alone: why RetNet's 6.7B step is slower than its kernels (issue #12's open question): the idle-gap
# profile with the allocator's counters, the table4 rows (alloc_retries), the memory census after its fix
mode_gap67() {
  mkdir -p "$W/profile-6.7b"; OUT="$W/profile-6.7b" timeout 240 python3 scripts/profile_train_step.py --preset 6.7b \
    --seq 8192 --steps 3 --host --family retnet:fla transformer:sdpa-cudnn > "$W/profile-6.7b/log" 2>&1
  echo "== profile 6.7b rc=$? at $((SECONDS - T0))s"
  bench 0 table4-6.7b table4 --model 6.7b "${FLA_VS_CUDNN[@]}"
  mkdir -p "$W/census"; OUT="$W/census" timeout $(( $(left) - 5 )) python3 scripts/profile_train_memory.py \
    --preset 6.7b --seq 8192 --family retnet:fla transformer:sdpa-cudnn > "$W/census/log" 2>&1; echo "== census rc=$?"
}

# gap67b: one GPU alone, after gap67: the census's check against the allocator (what the forward leaves allocated),
# 6.7B with full activation checkpointing on both sides (no memory pressure), the Transformer's profile alone
mode_gap67b() {
  mkdir -p "$W/census"; OUT="$W/census" timeout 200 python3 scripts/profile_train_memory.py --preset 6.7b --seq 8192 \
    --family retnet:fla transformer:sdpa-cudnn > "$W/census/log" 2>&1; echo "== census rc=$? at $((SECONDS - T0))s"
  bench 0 table4-6.7b-ckpt table4 --model 6.7b --checkpointing full "${FLA_VS_CUDNN[@]}"
  mkdir -p "$W/profile-6.7b"; OUT="$W/profile-6.7b" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 6.7b --seq 8192 --steps 3 --host --family transformer:sdpa-cudnn retnet:fla > "$W/profile-6.7b/log" 2>&1
  echo "== profile 6.7b rc=$? at $((SECONDS - T0))s"
}

# census: one GPU: the GPU tests of the training engine and the census (its allocator cross-check included), then the
# memory census at 1.3B and 6.7B (each model in a fresh process, nothing else on the GPU)
mode_census() {
  timeout 170 python3 -m pytest -q -p no:cacheprovider -n 4 --timeout 150 -rfE tests/test_training_saved.py \
    tests/test_training.py tests/test_runner_gpu.py tests/test_gate.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  for preset in 6.7b 1.3b; do mkdir -p "$W/census-$preset"
    OUT="$W/census-$preset" timeout $(( $(left) - 5 )) python3 scripts/profile_train_memory.py --preset $preset \
      --seq 8192 --family retnet:fla transformer:sdpa-cudnn > "$W/census-$preset/log" 2>&1
    echo "== census $preset rc=$? at $((SECONDS - T0))s"; done
}

# expandable: one GPU alone: the 6.7B and 1.3B steps with the caching allocator's expandable segments (torchtitan's
# run_train.sh sets PYTORCH_ALLOC_CONF=expandable_segments:True), then the 6.7B profile with its allocator counters
mode_expandable() {
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  bench 0 table4-exp table4 --model 6.7b,1.3b "${FLA_VS_CUDNN[@]}"
  mkdir -p "$W/profile-6.7b"; OUT="$W/profile-6.7b" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 6.7b --seq 8192 --steps 3 --host --family retnet:fla transformer:sdpa-cudnn > "$W/profile-6.7b/log" 2>&1
  echo "== profile 6.7b rc=$? at $((SECONDS - T0))s"
}

# compile: one GPU alone: table4 with torch.compile per block (torchtitan's `compile`) at ${MODELS:-1.3b,6.7b}, then
# the plain steps of the same machine beside them
mode_compile() {
  export TORCHINDUCTOR_CACHE_DIR="$W/inductor"
  bench 0 ${TAG:-}table4-compiled table4 --model ${MODELS:-1.3b,6.7b} --compile blocks \
    "${FLA_VS_CUDNN[@]}"
  bench 0 ${TAG:-}table4-plain table4 --model ${MODELS:-1.3b,6.7b} "${FLA_VS_CUDNN[@]}"
  rm -rf "$W/inductor"
}

# compileprof: one GPU alone, after `compile`: the 1.3B step profiled compiled and plain, each model in fresh processes
mode_compileprof() {
  export TORCHINDUCTOR_CACHE_DIR="$W/inductor"
  for c in blocks none; do mkdir -p "$W/profile-1.3b-$c"
    OUT="$W/profile-1.3b-$c" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py --preset 1.3b --seq 8192 \
      --steps 3 --host --compile $c --family retnet:fla transformer:sdpa-cudnn > "$W/profile-1.3b-$c/log" 2>&1
    echo "== profile 1.3b compile $c rc=$? at $((SECONDS - T0))s"; done
  rm -rf "$W/inductor"
}

# ckptpart-a: one GPU alone: 6.7B with every N-th block checkpointed (torchtitan's selective per-layer option), both
# sides on one lease, plain first; the first half of FlashAttention-4's install travels beside this call
mode_ckptpart-a() {
  bench 0 table4-6.7b-plain table4 --model 6.7b "${FLA_VS_CUDNN[@]}"
  for v in every-8 every-4 full; do
    bench 0 table4-6.7b-$v table4 --model 6.7b --checkpointing $v "${FLA_VS_CUDNN[@]}"; done
}

# ckptpart-b: the same machine right after, FlashAttention-4 installed: its 6.7B rows plain and every-8, both sides
# again (a second sample), then RetNet's every-8 step profiled (are the allocator's retries and idle gaps gone?)
mode_ckptpart-b() {
  python3 -c "from flash_attn.cute import flash_attn_func" || echo "flash-attn-4 not importable: its rows say so"
  bench 0 table4-6.7b-fa4 table4 --model 6.7b --impl transformer --kernel flash-attn-4
  bench 0 table4-6.7b-fa4-every-8 table4 --model 6.7b --checkpointing every-8 --impl transformer \
    --kernel flash-attn-4
  bench 0 table4-6.7b-every-8-again table4 --model 6.7b --checkpointing every-8 --impl retnet-chunkwise \
    --kernel fla
  bench 0 table4-6.7b-plain-again table4 --model 6.7b --impl retnet-chunkwise --kernel fla
  mkdir -p "$W/profile-6.7b-every-8"; OUT="$W/profile-6.7b-every-8" timeout $(( $(left) - 5 )) python3 \
    scripts/profile_train_step.py --preset 6.7b --seq 8192 --steps 3 --host --checkpointing every-8 \
    --family retnet:fla > "$W/profile-6.7b-every-8/log" 2>&1; echo "== profile 6.7b every-8 rc=$? at $((SECONDS - T0))s"
}

# verdict-a: one GPU alone: table4 at 1.3B and 2.7B with 3 + 10 steps (the one-GPU verdict rows of session 5 had
# 1 + 3), fla and SDPA cuDNN; the first half of FlashAttention-4's install travels beside this call
mode_verdict-a() {
  bench 0 table4-1gpu-steps10 table4 --model 1.3b,2.7b "${FLA_VS_CUDNN[@]}"
}

# verdict-b: the same machine right after, FlashAttention-4 installed: its rows at 1.3B and 2.7B, then every GPU test
mode_verdict-b() {
  python3 -c "from flash_attn.cute import flash_attn_func" || echo "flash-attn-4 not importable: its rows say so"
  bench 0 table4-1gpu-steps10-fa4 table4 --model 1.3b,2.7b --impl transformer --kernel flash-attn-4
  timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 240 -rfE --durations=10 \
    --deselect tests/test_retnet_step_fused.py::test_bf16_state_drift_over_1000_steps $TESTS tests/test_rotation.py \
    tests/test_gate.py tests/test_compile_gpu.py tests/test_tensor_parallel_gpu.py tests/test_training_saved.py \
    tests/test_baselines_hf.py > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
}

# lease-variance: one GPU alone: the decode-memory GPU tests (the final decode path had not run on a GPU), then the
# 2.7B step profiled three times per side, each autotuning afresh: do fla's autotuners pick different configs
# from process to process (as from lease to lease), and does RetNet's step time follow them?
mode_lease-variance() {
  { lscpu | grep -E "^Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit,\
temperature.gpu,driver_version --format=csv; } > "$W/host.txt" 2>&1; cat "$W/host.txt"
  timeout 200 python3 -m pytest -q -p no:cacheprovider --timeout 150 -rfE tests/test_runner_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  mkdir -p "$W/profile-2.7b"; OUT="$W/profile-2.7b" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 2.7b --seq 8192 --steps 4 --host --repeat 3 --fresh-autotune --family retnet:fla transformer:sdpa-cudnn \
    > "$W/profile-2.7b/log" 2>&1; echo "== profile 2.7b rc=$? at $((SECONDS - T0))s"
}

# async-a: one GPU alone: the timed training steps without a sync per step (batch_on_device), the test of that, then
# table4 at 1.3B-6.7B plain and 6.7B every-8, RetNet (fla) and the Transformer (cuDNN); FA4's first half beside it
# 300 s: on a fresh machine the first test compiles fla's and our kernels (call 2 of session 11 ran out at 120 s)
mode_async-a() {
  timeout 300 python3 -m pytest -q -p no:cacheprovider --timeout 280 -rfE tests/test_training_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  bench 0 s11-table4 table4 --model 1.3b,2.7b,6.7b "${FLA_VS_CUDNN[@]}"
  bench 0 s11-table4-6.7b-every-8 table4 --model 6.7b --checkpointing every-8 "${FLA_VS_CUDNN[@]}"
}

# async-b: the same machine right after, FlashAttention-4 installed: its table4 rows with the same loop
mode_async-b() {
  python3 -c "from flash_attn.cute import flash_attn_func" || echo "flash-attn-4 not importable: its rows say so"
  bench 0 s11-table4-fa4 table4 --model 1.3b,2.7b,6.7b --impl transformer --kernel flash-attn-4
  bench 0 s11-table4-6.7b-fa4-every-8 table4 --model 6.7b --checkpointing every-8 --impl transformer \
    --kernel flash-attn-4
}

# async-repeat: one GPU alone, another lease: table4 at 1.3B and 2.7B again with the asynchronous loop (does RetNet
# still move more than the Transformer between leases?), then the 1.3B step profiled (the GPU's idle time now)
mode_async-repeat() {
  bench 0 s11-table4-repeat table4 --model 1.3b,2.7b "${FLA_VS_CUDNN[@]}"
  mkdir -p "$W/profile-1.3b"; OUT="$W/profile-1.3b" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    --preset 1.3b --seq 8192 --steps 4 --host --family retnet:fla transformer:sdpa-cudnn > "$W/profile-1.3b/log" 2>&1
  echo "== profile 1.3b rc=$? at $((SECONDS - T0))s"
}

# first-point: one GPU alone: table4 1.3B twice, back to back (is a run's first training point slow on a fresh machine?
# how far apart are two runs on one machine?); run ids ${TAG:-s11-}first-point and ${TAG:-s11-}first-point-again
mode_first-point() {
  bench 0 ${TAG:-s11-}first-point table4 --model 1.3b "${FLA_VS_CUDNN[@]}"
  bench 0 ${TAG:-s11-}first-point-again table4 --model 1.3b "${FLA_VS_CUDNN[@]}"
}

# fwdbwd: one GPU alone: the forward + backward path's GPU tests (ids without a sync), then the paper's pipeline
# (torchscale, 1.3B, forward + backward only) again with that path
mode_fwdbwd() {
  timeout 300 python3 -m pytest -q -p no:cacheprovider --timeout 280 -rfE tests/test_training_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  bench 0 s12-table4-paper table4 --impl torchscale-retnet,torchscale-transformer --model 1.3b
}

# sync-ab: one GPU alone: what the per-step sync (the loop before session 11) cost each side, on one machine: the
# ${PRESET:-1.3b} step profiled with the blocking copy and without, alternating, each model in fresh processes;
# ORDER=async-first swaps the order within a pair. A pair is begun only with time for one: 1.2x the last pair, or
# 250 s (session 12's first pair took 242 s on a fresh machine); a first run that timed out ends the mode (its pair
# cannot finish)
mode_sync-ab() {
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
    [ $opens = 0 ] && need=$(( (SECONDS - pair_t0) * 6 / 5 )); done
}

# fla-dims: one GPU: tests/test_fla_head_dims.py (10 shapes in parallel child processes within 400 s; each compiles
# fla's kernels and runs every pair of configs of its two backward kernels; their output kept in fla-dims/ as they
# run), then the forward + backward GPU tests if 60 s are left
mode_fla-dims() {
  mkdir -p "$W/fla-dims"
  FLA_DIMS_RECORD="$W/fla-dims" timeout 480 python3 -m pytest -v -s -p no:cacheprovider -rfE \
    tests/test_fla_head_dims.py > "$W/fla-dims/pytest.log" 2>&1
  echo "== fla dims rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/fla-dims/pytest.log")"
  [ "$(left)" -gt 60 ] || { echo "== gpu tests: $(left) s left, not run"; exit 0; }
  timeout $(( $(left) - 10 )) python3 -m pytest -q -p no:cacheprovider --timeout 280 -rfE tests/test_training_gpu.py \
    > "$W/gpu_tests.log" 2>&1
  echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
}

# fla-host: one GPU alone: the host time of one fla retention call at 1.3B's head dims, public entry point vs
# fla's dispatch switch off vs its inner fwd/bwd, and both in one process (scripts/probe_fla_host.py, each variant in
# a fresh process; VARIANTS="paired" picks some)
mode_fla-host() {
  mkdir -p "$W/fla-host"; OUT="$W/fla-host" timeout $(( $(left) - 5 )) python3 scripts/probe_fla_host.py ${VARIANTS:-} \
    > "$W/fla-host/log" 2>&1; echo "== fla host rc=$? at $((SECONDS - T0))s"; cat "$W/fla-host/log"
}

# host-floor: one GPU alone: how long the host takes to issue one training step, per side. At T=256 a 1.3B or 2.7B
# step has little GPU work (the optimizer, short GEMMs; the rows' gpu_compute_ms say how little), so its time is the
# host's: what a rank cannot go below however fast its GPU. Then the same contestants at T=8192 on this lease, and
# the 1.3B step at T=256 profiled with the host's ops (which host calls each side's step is made of)
mode_host-floor() {
  bench 0 ${TAG:-}table4-host-floor table4 --model 1.3b,2.7b --seq 256 "${FLA_VS_CUDNN[@]}"
  bench 0 ${TAG:-}table4-8k table4 --model 1.3b "${FLA_VS_CUDNN[@]}"
  profile host-1.3b-256 --preset 1.3b --seq 256 --steps 3 --host --family retnet:fla transformer:sdpa-cudnn
}

# nvml-ab: one GPU alone, after host-floor: the suite's T=256 steps (host-bound) took 1.4x the profile script's at
# 1.3B on both sides. The suite's loop differs from the script's in its NVML reads between steps (and the energy
# counter, on the same switch): 1.3B at T=256 with them, without (--no-nvml), PAIRS times, then the script's steps
mode_nvml-ab() {
  for i in $(seq 1 "${PAIRS:-2}"); do
    bench 0 ${TAG:-}table4-256-nvml-$i table4 --model 1.3b --seq 256 "${FLA_VS_CUDNN[@]}"
    bench 0 ${TAG:-}table4-256-no-nvml-$i table4 --model 1.3b --seq 256 --no-nvml "${FLA_VS_CUDNN[@]}"; done
  profile 1.3b-256 --preset 1.3b --seq 256 --steps 10 --family retnet:fla transformer:sdpa-cudnn
}

# graphs: one GPU alone: the fla-graphs kernel (fla replayed from CUDA graphs, retnet/kernels/chunk_graphs.py): its
# GPU tests, then table4 at 1.3B with fla, fla-graphs and SDPA cuDNN at T=8192 and at T=256 (the host's time per
# step), then at 2.7B and T=8192 with the time left
mode_graphs() {
  timeout 200 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_chunk_graphs.py tests/test_training_gpu.py \
    > "$W/gpu_tests.log" 2>&1; echo "== gpu tests rc=$? at $((SECONDS - T0))s: $(tail -1 "$W/gpu_tests.log")"
  bench 0 ${TAG:-}table4-graphs table4 --model 1.3b "${GRAPHS_FLA_VS_CUDNN[@]}"
  bench 0 ${TAG:-}table4-graphs-256 table4 --model 1.3b --seq 256 "${GRAPHS_FLA_VS_CUDNN[@]}"
  bench 0 ${TAG:-}table4-graphs-2.7b table4 --model 2.7b "${GRAPHS_FLA_VS_CUDNN[@]}"
}
