#!/usr/bin/env bash
# Tensor parallelism on a multi-GPU machine (nvidia-h200-x2 or larger), one command: the
# Llama-3-8B shape (random bf16 weights) at TP=1 and TP=2, batch 1 and 512 x 1000/1000,
# then the all-reduce share of a step (torch.profiler, eager), a table last. Results
# under $OUT (or ./bench-results).
#   bash scripts/gpu_tp.sh
# (ARCH, TP and ENGINE_ARGS override the shape, the second size and the sizing flags; CUDA graphs
# with NCCL collectives inside are unrun as yet: if TP=2 fails at capture, add --enforce-eager.)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench-results}; mkdir -p "$OUT"
ARCH=${ARCH:-llama3-8b} TP=${TP:-2}
ENGINE_ARGS=${ENGINE_ARGS:---max-model-len 2048 --max-num-seqs 512 --max-num-batched-tokens 16384}
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
run() {  # tp, workload, timeout
  local tp=$1 workload=$2 limit=$3
  echo "== TP=$tp $workload"
  # shellcheck disable=SC2086  # ENGINE_ARGS is a list of flags
  timeout "$limit" python3 -m kvserve.cli.main bench offline --arch "$ARCH" --workload "$workload" $ENGINE_ARGS \
    --tensor-parallel-size "$tp" --no-progress --output-json "$OUT/tp$tp-$workload.json" 2>&1 \
    | grep -v "it/s]" | tail -n 4
}
for tp in 1 "$TP"; do
  run "$tp" batch1 120
  run "$tp" batch512 300
done
timeout 300 python3 scripts/tp_allreduce_profile.py --arch "$ARCH" --tensor-parallel-size "$TP" 2>&1 \
  | grep -v "it/s]" | tee "$OUT/tp-allreduce.txt" | tail -n 6
python3 - "$OUT" "$ARCH" "$TP" <<'PY'
import json, pathlib, sys
out, arch, tp = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"== {arch}: TP=1 vs TP={tp}")
print(f"{'workload':<9} {'TP':>3} {'out tok/s':>10} {'vs TP=1':>8} {'KV pool tokens':>15} {'preemptions':>12}")
for workload in ("batch1", "batch512"):
    base = None
    for size in ("1", tp):
        f = out / f"tp{size}-{workload}.json"
        if not f.exists():
            print(f"{workload:<9} {size:>3} no result (timed out or failed)")
            continue
        e = json.loads(f.read_text())["engine"]
        base = base or e["output_tok_s"]
        print(f"{workload:<9} {size:>3} {e['output_tok_s']:>10.1f} {e['output_tok_s'] / base:>7.2f}x "
              f"{e['kv_cache_tokens']:>15} {e['num_preemptions']:>12}")
PY
