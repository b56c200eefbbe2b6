"""Hostile request heads against a real server: huge or countless headers get 431 at once,
a 64 MB header costs neither memory nor latency, slow headers are cut off (408)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import start_server

pytestmark = pytest.mark.slow  # starts a server process

HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def bounded(tiny_llama, tmp_path_factory):
    proc = start_server(tmp_path_factory, tiny_llama, "--max-model-len", "256", "--max-headers", "50",
                        "--header-timeout", str(HEADER_TIMEOUT_S))
    yield proc
    proc.stop()


def _exchange(server, head: bytes, read_timeout: float = 10.0) -> tuple[bytes, float]:
    """Send `head` on a raw connection (the server may cut it short), then read until close."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        try:
            sock.sendall(head)
        except OSError:  # the server answered and closed before the client was done
            pass
        return _read_all(sock, read_timeout), time.monotonic() - start


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except OSError:
        pass
    return out


def _error(reply: bytes, status: int) -> dict:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _request(*headers: bytes) -> bytes:
    return b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(headers) + b"\r\n"


def test_a_1mb_header_gets_431_at_once(bounded):
    reply, took = _exchange(bounded, _request(b"X-Big: " + b"a" * (1 << 20) + b"\r\n"))
    assert _error(reply, 431)["code"] == "request_header_fields_too_large"
    assert took < 2.0


@pytest.mark.parametrize("count", [51, 10_000])
def test_too_many_headers_get_431(bounded, count):
    reply, took = _exchange(bounded, _request(*(b"a%d:1\r\n" % i for i in range(count))))
    assert "more than 50 header fields" in _error(reply, 431)["message"]
    assert took < 2.0


def test_requests_within_the_limits_are_served(bounded):
    headers = {f"x-h{i}": "v" * 1000 for i in range(40)}  # 40 kB in 40 fields
    assert httpx.get(bounded.url + "/health", headers=headers, timeout=10.0).status_code == 200
    reply = httpx.post(bounded.url + "/tokenize", json={"prompt": "Hello"}, headers=headers, timeout=10.0)
    assert reply.status_code == 200 and reply.json()["count"] > 0


def _rss_mb(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_64mb_header_costs_no_memory_and_no_latency(bounded):
    rss_before = _rss_mb(bounded.proc.pid)
    replies: list[bytes] = []
    sender = threading.Thread(target=lambda: replies.append(_send_in_chunks(bounded, 64 << 20)))
    sender.start()
    worst, peak = 0.0, rss_before
    with httpx.Client(base_url=bounded.url, timeout=10.0) as client:
        while sender.is_alive():
            start = time.monotonic()
            assert client.get("/health").status_code == 200
            worst = max(worst, time.monotonic() - start)
            peak = max(peak, _rss_mb(bounded.proc.pid))
            time.sleep(0.01)
    sender.join()
    assert _error(replies[0], 431)["code"] == "request_header_fields_too_large"
    assert peak - rss_before < 20, (rss_before, peak)
    assert worst < 0.5, worst


def _send_in_chunks(server, total: int) -> bytes:
    """A 64 MB header sent as a client would stream it; stops when the server cuts it off."""
    chunk = b"a" * (1 << 20)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(total // len(chunk)):
                sock.sendall(chunk)
        except OSError:
            pass
        return _read_all(sock, 10.0)


def test_headers_sent_byte_by_byte_are_cut_off_after_the_timeout(bounded):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        try:
            for byte in _request(b"X-Slow: " + b"s" * 100 + b"\r\n"):
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass
        reply = _read_all(sock, 10.0)
    took = time.monotonic() - start
    assert _error(reply, 408)["code"] == "request_header_timeout"
    assert HEADER_TIMEOUT_S * 0.9 <= took < HEADER_TIMEOUT_S + 3  # the event loop's timers are ms-rounded


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(bounded):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        assert _read_all(sock, 10.0) == b""
    assert HEADER_TIMEOUT_S * 0.9 <= time.monotonic() - start < HEADER_TIMEOUT_S + 2


def test_keep_alive_requests_each_get_the_full_timeout(bounded):
    """The timer runs per request head, not per connection: one connection carries a slow
    session of quick requests for longer than the timeout."""
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        sock.settimeout(5.0)
        for _ in range(4):
            sock.sendall(_request())
            reply = b""
            while not reply.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(4096)
                assert chunk, "the server closed a keep-alive connection between requests"
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200 ")
            time.sleep(HEADER_TIMEOUT_S * 0.8)
