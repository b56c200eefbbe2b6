#!/usr/bin/env bash
# FP8 KV cache on the GPU machine, one command (about 4 minutes on an H200): the GPU tests,
# then Llama-3-8B batch512 in bf16, with --kv-cache-dtype fp8, and with fp8 weights too;
# a table last. Results under $OUT (or ./bench-results).
#   bash scripts/gpu_kv_fp8.sh
# (ARCH, WORKLOAD and ENGINE_ARGS override the shape, the workload and the sizing flags: a CPU dry run.)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench-results}; mkdir -p "$OUT"
ARCH=${ARCH:-llama3-8b} WORKLOAD=${WORKLOAD:-batch512}
ENGINE_ARGS=${ENGINE_ARGS:---max-model-len 2048 --max-num-seqs 512 --max-num-batched-tokens 16384}
nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader
timeout 90 python3 -m pytest -q -s -m gpu tests/gpu/test_kv_fp8_gpu.py -p no:cacheprovider 2>&1 \
  | grep -E "passed|failed|skipped|error|Error|cosine|agree|assert" | tail -n 20
batch512() {  # name, timeout, extra flags
  local name=$1 limit=$2; shift 2
  echo "== $name"
  # shellcheck disable=SC2086  # ENGINE_ARGS is a list of flags
  timeout "$limit" python3 -m kvserve.cli.main bench offline --arch "$ARCH" --workload "$WORKLOAD" $ENGINE_ARGS \
    --no-progress --output-json "$OUT/kvfp8-$name.json" "$@" 2>&1 | grep -v "it/s]" | tail -n 4
}
batch512 bf16 100
batch512 kv-fp8 80 --kv-cache-dtype fp8
batch512 fp8-kv-fp8 70 --quantization fp8 --kv-cache-dtype fp8
python3 - "$OUT" "$ARCH" "$WORKLOAD" <<'PY'
import json, pathlib, sys
print(f"== {sys.argv[2]} {sys.argv[3]}")
print(f"{'run':<12} {'weights':<7} {'KV':<5} {'out tok/s':>10} {'preemptions':>12} {'KV pool tokens':>15}")
for name, weights, kv in (("bf16", "bf16", "bf16"), ("kv-fp8", "bf16", "fp8"), ("fp8-kv-fp8", "fp8", "fp8")):
    f = pathlib.Path(sys.argv[1]) / f"kvfp8-{name}.json"
    if not f.exists():
        print(f"{name:<12} {weights:<7} {kv:<5} no result (timed out or failed)")
        continue
    e = json.loads(f.read_text())["engine"]
    print(f"{name:<12} {weights:<7} {kv:<5} {e['output_tok_s']:>10.1f} {e['num_preemptions']:>12} {e['kv_cache_tokens']:>15}")
PY
