"""`kvserve gateway` as a real process: reload on SIGHUP under load, graceful SIGTERM (exit 0),
bounded request heads."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import yaml

from tests.helpers import wait_until

from .conftest import chat, fast_config, one_pool


def test_a_bad_config_exits_with_the_field_named(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": {"pool": {"endpoints": ["http://127.0.0.1:1"],
                                                              "policy": "fastest"}}}}))
    result = subprocess.run([sys.executable, "-m", "kvserve.cli.main", "gateway", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models.m.pool.policy" in result.stderr and "unknown policy 'fastest'" in result.stderr


def test_sighup_reload_under_load_fails_no_request(processes, tmp_path):
    old, new = processes.upstream("--name", "old"), processes.upstream("--name", "new")
    path = tmp_path / "gateway.yaml"
    gw = processes.gateway(path, fast_config(one_pool([old.url])))
    seen: Counter = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v1/chat/completions", json=chat(stream=True))
                    seen[r.headers.get("x-upstream-name")] += 1
                    if r.status_code != 200 or not r.text.endswith("data: [DONE]\n\n"):
                        failures.append(f"{r.status_code} {r.text[-100:]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: seen["old"] > 20, 20, "no load reached the old upstream")
    path.write_text(yaml.safe_dump(fast_config(one_pool([new.url]))))
    gw.signal(signal.SIGHUP)
    wait_until(lambda: seen["new"] > 20, 20, "the reload did not move traffic")
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    path.write_text("models: [")  # a broken file is logged and ignored
    gw.signal(signal.SIGHUP)
    time.sleep(0.3)
    assert httpx.post(gw.url + "/v1/chat/completions", json=chat()).headers["x-upstream-name"] == "new"


def test_sigterm_lets_in_flight_streams_finish(processes, tmp_path):
    up = processes.upstream("--num-tokens", "15", "--tokens-per-second", "10")  # 1.5 s per answer
    config = fast_config(one_pool([up.url]))
    config["server"]["shutdown_grace_s"] = 10
    gw = processes.gateway(tmp_path / "gateway.yaml", config)
    result = {}

    def stream() -> None:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat(stream=True), timeout=10) as r:
            result["body"] = r.read()

    thread = threading.Thread(target=stream)
    thread.start()
    time.sleep(0.4)
    gw.signal(signal.SIGTERM)
    thread.join()
    assert result["body"].endswith(b"data: [DONE]\n\n")
    assert gw.proc.wait(timeout=10) == 0  # a drained SIGTERM is a clean exit, not death by signal


def test_sigterm_with_a_drain_delay_reports_not_ready_while_still_serving(processes, tmp_path):
    up = processes.upstream()
    config = fast_config(one_pool([up.url]))
    config["server"]["drain_delay_s"] = 1.5
    gw = processes.gateway(tmp_path / "gateway.yaml", config)
    wait_until(lambda: httpx.get(gw.url + "/ready").status_code == 200, 5, "never ready")
    gw.signal(signal.SIGTERM)
    wait_until(lambda: httpx.get(gw.url + "/ready").status_code == 503, 2, "still ready after SIGTERM")
    assert httpx.post(gw.url + "/v1/chat/completions", json=chat()).status_code == 200
    assert gw.proc.wait(timeout=10) == 0


def test_hostile_request_heads_get_431_and_the_gateway_keeps_answering(processes, tmp_path):
    # one unauthenticated request with a huge header once stalled the event loop for 86 s
    up = processes.upstream()
    gw = processes.gateway(tmp_path / "gateway.yaml", fast_config(one_pool([up.url])))
    for head in (b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (1 << 20) + b"\r\n\r\n",
                 b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(5000)) + b"\r\n"):
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            try:
                sock.sendall(head)
            except OSError:  # answered and closed before the client was done
                pass
            sock.settimeout(10)
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["code"]
        assert time.monotonic() - start < 5
    assert httpx.get(gw.url + "/health", timeout=5).status_code == 200
