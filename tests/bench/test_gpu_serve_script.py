"""scripts/gpu_serve.sh end to end on the CPU, with a tiny shape and the smoke workload.

On the GPU machine the same script serves qwen3-0.6b and sends the throughput workload;
here it must start the server, warm it up, send the offline workload's requests, stop the
server and report served against offline throughput, all within a minute or so.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_tiny_shape
from tests.helpers import free_port

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_serve.sh"


def test_the_script_serves_the_offline_workload_and_compares(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "ARCH": str(write_tiny_shape(tmp_path)), "WORKLOAD": "smoke", "MAX_MODEL_LEN": "256",
           "ENGINE_ARGS": "--kv-cache-gib 0.05", "OFFLINE": "1", "PORT": str(free_port()), "OUT": str(out)}
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("served smoke: ") and "(8/8 requests); offline " in last and "served/offline" in last
    served = json.loads((out / "serve-smoke.json").read_text())["summary"]
    offline = json.loads((out / "offline-smoke.json").read_text())["engine"]
    assert served["prompt_tokens"] == offline["prompt_tokens"]
    assert served["completion_tokens"] == offline["output_tokens"]
    assert json.loads((out / "serve-warmup.json").read_text())["summary"]["succeeded"] == 8
    assert "server stopped" in (out / "serve.log").read_text()  # SIGTERM: a clean shutdown
