#!/usr/bin/env bash
# `kvserve serve` at saturation on the workload of `kvserve bench offline --workload throughput`:
# random weights of a named shape, the offline workload's token-id prompts sent all at once.
#   OUT=results bash scripts/gpu_serve.sh        (results under $OUT or ./bench-results)
# Settings, from the environment:
#   ARCH           shape name or config.json path (default qwen3-0.6b)
#   WORKLOAD       a `kvserve bench offline` workload (default throughput; smoke for a CPU check)
#   MAX_MODEL_LEN  default 2048, as the documented offline command
#   ENGINE_ARGS    engine flags for serve (and offline), e.g. "--kv-cache-gib 0.05" on a CPU
#   OFFLINE=1      first run `kvserve bench offline` on the same workload and print served/offline
#   PORT (8011), READY_TIMEOUT (180 s), BENCH_TIMEOUT (300 s)
# Exits with the benchmark's status (1 if the server never became ready).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench-results}; mkdir -p "$OUT"
ARCH=${ARCH:-qwen3-0.6b} WORKLOAD=${WORKLOAD:-throughput} MAX_MODEL_LEN=${MAX_MODEL_LEN:-2048}
PORT=${PORT:-8011} READY_TIMEOUT=${READY_TIMEOUT:-180} BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
read -r -a engine_args <<< "${ENGINE_ARGS:-}"
URL=http://127.0.0.1:$PORT

VOCAB=$(python3 -c 'import sys; from kvserve.models.shapes import shape_config; print(shape_config(sys.argv[1])["vocab_size"])' "$ARCH") \
  || { echo "cannot read the shape $ARCH"; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

if [ "${OFFLINE:-0}" = 1 ]; then
  echo "== kvserve bench offline --arch $ARCH --workload $WORKLOAD --max-model-len $MAX_MODEL_LEN ${engine_args[*]}"
  timeout "$BENCH_TIMEOUT" python3 -m kvserve.cli.main bench offline --arch "$ARCH" --workload "$WORKLOAD" \
    --max-model-len "$MAX_MODEL_LEN" "${engine_args[@]}" --no-progress --output-json "$OUT/offline-$WORKLOAD.json" 2>&1 | tail -n 5
fi

echo "== kvserve serve --arch $ARCH --max-model-len $MAX_MODEL_LEN --port $PORT ${engine_args[*]}"
python3 -m kvserve.cli.main serve --arch "$ARCH" --max-model-len "$MAX_MODEL_LEN" --port "$PORT" "${engine_args[@]}" > "$OUT/serve.log" 2>&1 &
server=$!
stop_server() {
  kill -0 "$server" 2>/dev/null || return 0
  kill -TERM "$server"
  for _ in $(seq 60); do kill -0 "$server" 2>/dev/null || return 0; sleep 0.5; done
  echo "the server ignored SIGTERM for 30 s; killing it"; kill -KILL "$server"
}
trap stop_server EXIT

ready() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/ready" 2>/dev/null; }
started=$SECONDS deadline=$((SECONDS + READY_TIMEOUT))
until ready; do
  if ! kill -0 "$server" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "the server is not ready (exited, or not within $READY_TIMEOUT s); its log ends:"; tail -n 40 "$OUT/serve.log"
    exit 1
  fi
  sleep 1
done
echo "ready after $((SECONDS - started)) s"

bench() {  # workload, seed, result file, more flags...
  local workload=$1 seed=$2 result=$3; shift 3
  timeout "$BENCH_TIMEOUT" python3 -m kvserve.cli.main bench serve --base-url "$URL" --model "$ARCH" \
    --dataset token-ids --offline-workload "$workload" --vocab-size "$VOCAB" --seed "$seed" --ignore-eos \
    --request-rate inf --request-timeout "$BENCH_TIMEOUT" --no-progress --result-file "$result" "$@"
}
# warm-up: the offline bench's own (the smoke workload, seed 1), so that start-up JIT is not timed
bench smoke 1 "$OUT/serve-warmup.json" > "$OUT/serve-warmup.txt" 2>&1 || { echo "warm-up failed:"; cat "$OUT/serve-warmup.txt"; }
engine_counters() {  # steps and seconds in steps so far, from the server's /metrics
  python3 - "$URL/metrics" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
value = lambda name: sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))
print(int(value("kvserve:engine_steps_total")), value("kvserve:engine_step_seconds_total"))
PY
}
echo "== kvserve bench serve --dataset token-ids --offline-workload $WORKLOAD (all at once)"
read -r steps0 seconds0 < <(engine_counters)
bench "$WORKLOAD" 0 "$OUT/serve-$WORKLOAD.json"
status=$?
read -r steps1 seconds1 < <(engine_counters)
python3 -c 'import sys; n, s = int(sys.argv[2]) - int(sys.argv[1]), float(sys.argv[4]) - float(sys.argv[3])
print(f"engine while serving: {n} steps, {s:.2f} s inside steps ({1000 * s / max(n, 1):.2f} ms a step)")' \
  "$steps0" "$steps1" "$seconds0" "$seconds1"
stop_server

[ -f "$OUT/serve-$WORKLOAD.json" ] && python3 - "$OUT" "$WORKLOAD" <<'PY'
import json, pathlib, sys
out, workload = pathlib.Path(sys.argv[1]), sys.argv[2]
served = json.loads((out / f"serve-{workload}.json").read_text())["summary"]
line = f"served {workload}: {served['output_throughput']:.1f} output tok/s ({served['succeeded']}/{served['sent']} requests)"
offline_file = out / f"offline-{workload}.json"
if offline_file.exists():
    offline = json.loads(offline_file.read_text())["engine"]["output_tok_s"]
    line += f"; offline {offline:.1f} output tok/s; served/offline {served['output_throughput'] / offline:.3f}"
print(line)
PY
exit "$status"
