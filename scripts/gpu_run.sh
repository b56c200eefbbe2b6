#!/usr/bin/env bash
# One GPU-machine session: correctness first, then the target workloads of docs/benchmarks.md, a table last.
#   bash scripts/gpu_run.sh [check|bench|big|hf|hf-llama|hf-qwen|all]     (results under $OUT or ./bench-results)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench-results}; mkdir -p "$OUT"
what=${1:-all}
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
bench() {  # name, timeout, args...
  local name=$1 limit=$2; shift 2
  echo "== $name: kvserve bench offline $*"
  timeout "$limit" python3 -m kvserve.cli.main bench offline --no-progress --output-json "$OUT/$name.json" "$@" \
    2>&1 | grep -v "it/s]" | tail -n 25
}
if [ "$what" = check ] || [ "$what" = all ]; then
  timeout 480 python3 -m pytest -q -m gpu tests/gpu tests/models -p no:cacheprovider --durations=8 2>&1 | tail -n 30
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  bench qwen3-throughput 200 --arch qwen3-0.6b --workload throughput --max-model-len 2048 --profile
  bench qwen3-throughput-sync 200 --arch qwen3-0.6b --workload throughput --max-model-len 2048 --no-async-scheduling
  bench llama8b-batch1 150 --arch llama3-8b --workload batch1 --max-model-len 4096 --max-num-seqs 8
  bench llama8b-prefill8k 150 --arch llama3-8b --workload prefill8k --max-model-len 8448 --max-num-seqs 8 --max-num-batched-tokens 8192 --profile
fi
if [ "$what" = big ] || [ "$what" = all ]; then
  bench llama8b-batch512 400 --arch llama3-8b --workload batch512 --max-model-len 2048 --max-num-seqs 512 --max-num-batched-tokens 16384
fi
case $what in hf|hf-llama)  # the transformers peers, same weights and workloads, same process
  bench llama8b-prefill8k-hf 100 --arch llama3-8b --workload prefill8k --max-model-len 8448 --max-num-seqs 8 --max-num-batched-tokens 8192 --compare-hf
  bench llama8b-batch1-hf 200 --arch llama3-8b --workload batch1 --max-model-len 4096 --max-num-seqs 8 --compare-hf ;;
esac
case $what in hf|hf-qwen)  # transformers' continuous batching takes minutes here: time-boxed (see bench/hf_peer.py)
  bench qwen3-throughput-hf 400 --arch qwen3-0.6b --workload throughput --max-model-len 2048 --compare-hf --hf-time-limit 200 ;;
esac
python3 - "$OUT" <<'PY'
import json, pathlib, sys
rows = []
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    if "engine" not in r:
        continue  # not a `bench offline` result (gpu_serve.sh writes beside these)
    e = r["engine"]
    hf = "; ".join(f"{k} {v['output_tok_s']:.1f}" for k, v in r.get("hf", {}).items())
    prof = r.get("profile", {})
    busy = f"{100 * prof['gpu_busy_fraction']:.0f}%" if prof else ""
    rows.append(f"{f.stem:<22} {e['output_tok_s']:>10.1f} tok/s  TTFT max {e['ttft_s_max']:.3f}s  step {e['step_ms_median']:.2f}ms  busy {busy}  {hf}")
print("\n".join(["== results (" + (json.loads(f.read_text()).get('device', '?') if (f := next(pathlib.Path(sys.argv[1]).glob('*.json'), None)) else '?') + ")"] + rows))
PY
