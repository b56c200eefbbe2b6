"""docs/gateway.md's quick start, run as written: its config, its command, its curl.

A fake upstream stands in for the `kvserve serve --port 8000` the quick start assumes
(any OpenAI-compatible server will do); the ports are moved to free ones.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.helpers import ServerProcess, answers, free_port, kvserve


DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def quick_start() -> tuple[str, str, str]:
    text = DOC.read_text().split("<!-- quickstart:begin -->", 1)[1].split("<!-- quickstart:end -->", 1)[0]
    (config,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    command, curl = re.findall(r"```bash\n(.*?)```", text, re.S)
    return config, command.strip(), curl.strip()


def test_the_quick_start_runs_as_written(upstream, tmp_path, caplog):
    config, command, curl = quick_start()
    assert len(config.strip().splitlines()) == 5
    server = upstream(num_tokens=3)
    gateway_port = free_port()
    moved = config.replace("127.0.0.1:8000", server.url.removeprefix("http://")).replace(
        "port: 8080", f"port: {gateway_port}")
    assert moved != config and yaml.safe_load(moved)["server"]["port"] == gateway_port
    (tmp_path / "gateway.yaml").write_text(moved)
    assert command == "kvserve gateway --config gateway.yaml"
    args = kvserve(*command.split()[1:])
    args[-1] = str(tmp_path / "gateway.yaml")
    gateway = ServerProcess(args, gateway_port, tmp_path / "gateway.log", stop_timeout=10)
    try:
        gateway.start("/health", ready=answers)
        done = subprocess.run(["bash", "-c", curl.replace("127.0.0.1:8080", f"127.0.0.1:{gateway_port}")],
                              capture_output=True, text=True, timeout=30)
        answer = json.loads(done.stdout)
        assert answer["model"] == "chat" and answer["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
        last = json.loads(subprocess.run(["curl", "-s", server.url + "/admin/last_request"], capture_output=True,
                                         text=True, timeout=10).stdout)
        assert last["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    finally:
        gateway.stop()
    log = gateway.logs()
    assert f"listening on http://127.0.0.1:{gateway_port}" in log
    assert "model 'chat' version 'default'" in log and "least_request over " + server.url in log
    assert f"gateway on 127.0.0.1:{gateway_port} stopped" in log
