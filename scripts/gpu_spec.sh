#!/usr/bin/env bash
# Speculative decoding on the GPU machine, one command (< 4 minutes on an H200): the GPU
# tests of tests/gpu/test_spec_decode_gpu.py (greedy equality with verification graphs,
# graph replays, mixed draft counts), then `bench offline` at batch 1 on the embedded
# model (kvserve.default_model, as bench offline finds it) for the copy and novel
# workloads in float32 and the default dtype, each with and without speculation on one
# engine; a table last.
#   bash scripts/gpu_spec.sh            (results under $OUT or ./bench-results/spec)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench-results/spec}; mkdir -p "$OUT"
SPEC='{"method":"ngram","num_speculative_tokens":4,"prompt_lookup_max":4}'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# the embedded model's directory (converted from its GGUF on first use): fail early and clearly
python3 -c "from kvserve.default_model import default_model_dir; print('model:', default_model_dir())" || exit 1

timeout 130 python3 -m pytest -q -m gpu tests/gpu/test_spec_decode_gpu.py -p no:cacheprovider --durations=5 2>&1 \
  | tail -n 15
for workload in copy novel; do
  for dtype in float32 auto; do
    name=$workload-$dtype
    echo "== $name: kvserve bench offline --workload $workload --max-num-seqs 1 --dtype $dtype --speculative-config $SPEC"
    timeout 50 python3 -m kvserve.cli.main bench offline --no-progress --workload "$workload" --max-num-seqs 1 \
      --dtype "$dtype" --speculative-config "$SPEC" --output-json "$OUT/$name.json" 2>&1 | tail -n 12
  done
done

python3 - "$OUT" <<'PY'
import json, pathlib, sys
print("== speculation at batch 1 (verify ms/step: the non-decode steps of the speculating run, "
      "i.e. verification steps plus the 4 prompts' prefills)")
print(f"{'run':<15} {'speed-up':>8} {'identical':>9} {'acceptance':>10} {'per proposal':>12} "
      f"{'verify ms/step':>14} {'decode ms/step':>14} {'tok/s spec':>10} {'tok/s plain':>11}")
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    if "speculation" not in r:
        continue
    s, e, base = r["speculation"], r["engine"], r["no_speculation"]
    ms = lambda p: 1000 * p["seconds"] / p["steps"] if p["steps"] else float("nan")
    print(f"{f.stem:<15} {s['speedup']:>7.2f}x {str(s['identical_outputs']):>9} {100 * s.get('acceptance_rate', 0):>9.1f}% "
          f"{s.get('mean_accepted_per_draft', 0):>12.2f} {ms(e['phases']['prefill']):>14.2f} "
          f"{ms(base['phases']['decode']):>14.2f} {e['output_tok_s']:>10.1f} {base['output_tok_s']:>11.1f}")
PY
