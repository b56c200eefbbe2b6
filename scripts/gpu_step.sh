#!/usr/bin/env bash
# Issue 18's batch-1 target on one GPU, in under 3 minutes, nothing installed:
#   bash scripts/gpu_step.sh [check]        (JSON copies under $OUT or ./bench-results)
# `check` first runs the GPU tests of the decode path (engine and graphs against transformers,
# logprobs, speculation's graphs; at most 5 minutes more).
# 1. `kvserve bench offline` batch1 on Qwen3-0.6B (the figure the issue quotes: tok/s, ms per step);
# 2. scripts/step_host_profile.py on the same shape: tok/s and ms per step of a batch-1 request,
#    host µs per phase of EngineCore.step, GPU busy fraction, kernels per token, top kernels.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench-results}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
if [ "${1:-}" = check ]; then
  timeout 300 python3 -m pytest -q -m gpu tests/gpu/test_engine_gpu.py tests/gpu/test_parity_matrix_gpu.py \
    tests/gpu/test_spec_decode_gpu.py -p no:cacheprovider 2>&1 | tail -n 15
fi
echo "== kvserve bench offline --arch qwen3-0.6b --workload batch1 --max-model-len 2048"
timeout 80 python3 -m kvserve.cli.main bench offline --no-progress --arch qwen3-0.6b --workload batch1 \
  --max-model-len 2048 --output-json "$OUT/qwen3-batch1.json" 2>&1 | grep -v "it/s]" | tail -n 6
echo "== scripts/step_host_profile.py --arch qwen3-0.6b --gpu-profile"
timeout 90 python3 scripts/step_host_profile.py --arch qwen3-0.6b --max-model-len 2048 --rounds 3 --gpu-profile \
  2>&1 | grep -v "^INFO\|it/s]" | tee "$OUT/qwen3-batch1-steps.txt" | tail -n 20
