"""docs/deploy.md's steps 4 and 5 as written, against the gateway config of the manifests:
its `kvserve keys create` makes a key in the store that config names, and its request,
sent with that key to a gateway running that config, is answered."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import yaml

from tests.deploy.manifests import gateway_config_text

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
CONFIG_PATH = "/etc/kvserve/gateway.yaml"  # where the gateway pod mounts its ConfigMap


def shell_commands() -> list[str]:
    """The docs' bash blocks as commands (continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def test_the_documented_key_and_request_work_with_the_manifests_gateway_config(
        tmp_path, redis_server, upstream, gateway):
    config = yaml.safe_load(gateway_config_text("gpu"))
    config["redis"].update(url=redis_server.url, prefix=f"docs-{uuid.uuid4().hex[:8]}")
    config["server"]["host"] = "127.0.0.1"  # tests listen on loopback only
    replica = upstream(model="chat")
    config["models"]["chat"]["pool"]["endpoints"] = [replica.url]
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))

    (create,) = [c for c in shell_commands() if "kvserve keys create" in c]
    argv = shlex.split(create.split(" -- ", 1)[1].replace(CONFIG_PATH, str(path)))
    assert argv[0] == "kvserve"
    created = subprocess.run([sys.executable, "-m", "kvserve.cli.main", *argv[1:], "--json"],
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]

    (curl,) = [c for c in shell_commands() if c.startswith("curl ")]
    body = json.loads(shlex.split(curl)[shlex.split(curl).index("-d") + 1])
    gw = gateway(config)
    answer = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    refused = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-kvs-x-y"})
    assert refused.status_code == 401
