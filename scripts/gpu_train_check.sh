#!/usr/bin/env bash
# Training engine on GPUs (issue #14): FSDP2 real training steps at 1.3B, T=8192, RetNet (chunk kernel auto: fla if
# installed) and the Transformer (fastest attention kernel that runs), world sizes 1, 2, 4 (as many as GPUs).
# Prints one line per point and the scaling efficiency; writes $OUT/train_check_1.3b.json. About 3 minutes on
# 4 H200s. Extra arguments go to the module (e.g. --checkpointing full, --preset 2.7b, --world-sizes 1,2).
# Run from the repository root after `source scripts/gpu_setup.sh`; then also:
#   python -m pytest -q tests/test_training.py tests/test_training_distributed.py   (the 2-GPU NCCL test runs)
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}" TORCH_SYMM_MEM_DISABLE_MULTICAST="${TORCH_SYMM_MEM_DISABLE_MULTICAST:-1}"
OUT="${OUT:-$(mktemp -d)}"
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv || true
timeout 290 python3 -m retnet_bench.suites.training.gpu_check --preset 1.3b --seq-len 8192 --out "$OUT" "$@" \
  2>&1 | grep -v -E '^(W|I)[0-9]{4} ' | tee "$OUT/train_check.log"
