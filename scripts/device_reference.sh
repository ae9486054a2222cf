#!/usr/bin/env bash
# The reference runs, spread over the GPUs of one machine (one suite process per GPU, in parallel), each stopped
# cleanly by --time-limit so that every finished row comes back. Usage (repo root, on the GPU machine):
#   bash scripts/device_reference.sh single   # 4 GPUs: table4 (1 rank), fig6 subset, capacity, long, kernels, GPU tests
#   bash scripts/device_reference.sh fsdp     # all GPUs: table4 over 2 and 4 ranks (FSDP2), the NCCL test
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
case "$1" in
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
esac
