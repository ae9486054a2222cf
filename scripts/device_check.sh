#!/usr/bin/env bash
# One device call that checks every GPU-only test and runs the kernel-level probes, writing logs and JSON to $OUT.
# Usage on the GPU machine (repo root, wheels carried in .whl/): bash scripts/device_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
FINAL=${OUT:-/tmp/out}; OUT=$(mktemp -d); export OUT  # logs and JSON gathered here, one tarball goes back
trap 'tar czf "$FINAL/device_check.tgz" -C "$OUT" . && echo "packed $(ls "$OUT" | wc -l) files"' EXIT
source scripts/gpu_setup.sh > "$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; exit 1; }
tail -1 "$OUT/setup.log"
step() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "== $name rc=$rc $((SECONDS - t0))s: $(tail -1 "$OUT/$name.log")"; }
step gpu_tests 240 python3 -m pytest -q -p no:cacheprovider --timeout 240 -rfE \
  tests/test_retention_kernels.py tests/test_retnet_prefill.py tests/test_retnet_kernel_gpu.py \
  tests/test_retnet_step_fused.py tests/test_baselines_kernels.py tests/test_baselines_gqa.py tests/test_runner_gpu.py \
  tests/test_peers.py
step retention 110 python3 scripts/gpu_retention_check.py
step step_profile 110 python3 scripts/profile_retnet_step.py --batch 1,8,16 --drift --drift-steps 300
step gqa_probe 45 python3 scripts/probe_gqa_kernels.py --batch 16 --seq 8192
# issue 13: a finished fig6 subset resumed once adds no row (the RetNet step kernel resolves to triton on a GPU)
step resume_a 70 retnet-bench run fig6 --model 1.3b --batch 1 --seq 1024 --impl retnet-recurrent,static \
  --kernel sdpa-cudnn --out /tmp/res --run-id resume-check --no-report
step resume_b 40 retnet-bench run fig6 --model 1.3b --batch 1 --seq 1024 --impl retnet-recurrent,static \
  --kernel sdpa-cudnn --out /tmp/res --resume resume-check --no-report
cp /tmp/res/resume-check/rows.jsonl "$OUT/resume_rows.jsonl" 2>/dev/null
ls "$OUT"
