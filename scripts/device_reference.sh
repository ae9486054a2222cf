#!/usr/bin/env bash
# The reference runs on a GPU machine, one mode per call (the device's calls last 10 minutes at most): each suite is
# stopped cleanly by --time-limit, so every finished row comes back, packed into $OUT/reference_<mode>.tgz.
# Usage, from the repo root on the GPU machine:
#   RETNET_BENCH_GIT_SHA=<commit> RETNET_BENCH_GIT_DIRTY=0 [BUDGET=seconds] [TAG=run-id prefix] \
#     bash scripts/device_reference.sh MODE
# with the commit written out as a literal where the tree was committed: the device's .git is the session's first
# checkout, so a `$(git rev-parse HEAD)` evaluated there names that (session 14's runs say c5f9d5b for a2abd56).
# Each mode is a function, with what it runs and why written above it: scripts/device_modes_one_gpu.sh (one GPU) and
# scripts/device_modes_multi_gpu.sh (2 to 8 GPUs: FSDP2, tensor parallelism, scaling). Modes that need
# FlashAttention-4 say so (`source .fa4b/install.sh && bash scripts/device_reference.sh MODE`). An unknown mode gets
# the list and exit 2, before anything is installed. The modes of the current questions:
#   multi4-a, then multi4-b   4 GPUs: 1.3B on 1, 2, 4 ranks; 2.7B-13B over 4; the 4-rank profile (issue #14)
#   x2-host                   2 GPUs: why RetNet's per-GPU rate falls from 1 to 2 GPUs at 1.3B
#   x2-graphs                 2 GPUs: the same with fla replayed from CUDA graphs (its GPU tests first)
#   x2-sweep                  2 GPUs: 2.7B and 6.7B on 1 and 2 GPUs of one lease, then 1.3B again
#   x2-graphs-host            2 GPUs: 1.3B over 2 ranks with fla, fla-graphs, SDPA cuDNN; the 2-rank host profile
#   x2-graphs-scaling         2 GPUs: 1.3B with fla, fla-graphs, SDPA cuDNN on 1 GPU and over 2
#   tp                        4+ GPUs: tensor parallelism inside FSDP2 at 6.7B and 13B
#   fla-host, fla-dims        1 GPU: fla's host time per call; fla's backward per head-dim shape and config
#   graphs                    1 GPU: the fla-graphs kernel's GPU tests, then table4 with it at 1.3B (8k, 256), 2.7B
#   host-floor, nvml-ab       1 GPU: the host's time per training step (T=256); NVML reads between steps or not
set -uo pipefail
source "$(dirname "$0")/device_modes_one_gpu.sh"
source "$(dirname "$0")/device_modes_multi_gpu.sh"
declare -F "mode_${1:-}" > /dev/null || {
  echo "usage: $0 MODE, one of: $(declare -F | sed -n 's/^declare -f mode_//p' | tr '\n' ' ')"; exit 2; }
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
FINAL=${OUT:-/tmp/out}; W=$(mktemp -d); R=$W/runs; mkdir -p "$R"
MODE=$1  # the trap runs where a mode function called exit, so it cannot read the script's $1
trap 'tar czf "$FINAL/reference_$MODE.tgz" -C "$W" . && echo "packed: $(cd "$W" && find . -type f | wc -l) files"' EXIT
source scripts/gpu_setup.sh > "$W/setup.log" 2>&1 || { cat "$W/setup.log"; exit 1; }
tail -1 "$W/setup.log"; python3 -c "import torch; print(torch.cuda.device_count(), 'GPUs')"
T0=$SECONDS; BUDGET=${BUDGET:-540}
left() { echo $(( BUDGET - (SECONDS - T0) )); }
bench() { local gpu=$1 name=$2; shift 2
  # a suite needs its model built and warmed up before --time-limit can stop it cleanly: not begun with under 45 s
  [ "$(left)" -ge 45 ] || { echo "== $name: $(left) s left, not run"; return 0; }
  CUDA_VISIBLE_DEVICES=$gpu timeout $(( $(left) + 20 )) retnet-bench run "$@" --out "$R" --run-id "$name" --no-report \
    --time-limit $(( $(left) - 15 )) > "$W/$name.log" 2>&1
  echo "== $name (GPU $gpu) rc=$? at $((SECONDS - T0))s: $(grep -a "rows in" "$W/$name.log" | tail -1)"; }
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
ALL=$(seq -s, 0 $((NGPU - 1)))
TESTS="tests/test_retention_kernels.py tests/test_retnet_prefill.py tests/test_retnet_kernel_gpu.py
  tests/test_retnet_step_fused.py tests/test_baselines_kernels.py tests/test_baselines_gqa.py tests/test_runner_gpu.py
  tests/test_peers.py tests/test_retnet_torchscale.py"  # tests/test_fla_head_dims.py: its own mode, fla-dims
FLA_VS_CUDNN=(--impl retnet-chunkwise,transformer --kernel fla,sdpa-cudnn)  # each side's fastest kernel that needs
# no install of its own (FlashAttention-4 does: the modes that use it say so)
GRAPHS_FLA_VS_CUDNN=(--impl retnet-chunkwise,transformer --kernel fla,fla-graphs,sdpa-cudnn)  # and fla replayed from
# CUDA graphs (opt-in: suites/definitions/table4.toml)
# profile NAME ARGS...: scripts/profile_train_step.py ARGS into $W/profile-NAME with the time left, unless 90 s or less
# remain (a profile cut short writes nothing; what a mode runs after it may still fit)
profile() { local name=$1; shift
  [ "$(left)" -gt 90 ] || { echo "== profile ${name//-/ }: $(left) s left, not run"; return 0; }
  mkdir -p "$W/profile-$name"; OUT="$W/profile-$name" timeout $(( $(left) - 5 )) python3 scripts/profile_train_step.py \
    "$@" > "$W/profile-$name/log" 2>&1; echo "== profile ${name//-/ } rc=$? at $((SECONDS - T0))s"; }
oom_in() { grep -q "\"model\": \"$2\".*\"status\": \"oom\"" "$R/$1/rows.jsonl" 2>/dev/null; }
"mode_$MODE"
