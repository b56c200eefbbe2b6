"""An OpenAI-compatible fake upstream that streams canned tokens at a fixed pace.

It is the fixture for gateway tests and for the gateway-overhead benchmark: it speaks
`/v1/chat/completions`, `/v1/completions` (SSE streaming and plain JSON, with usage),
`/v1/models`, `/health`, `/ready` and `/metrics` (vLLM metric names, real in-flight
counts), and it can be told to fail, answer an error status or hang, at start or at
runtime through `POST /admin/config` (a JSON object of `FakeUpstreamConfig` fields).

    python -m kvserve.bench.fake_upstream --port 8001 --tokens-per-second 100 --num-tokens 32

`--workers N` serves from N forked processes on one port (SO_REUSEPORT: the kernel
spreads connections), so a benchmark can drive more streamed chunks than one core
makes; each worker keeps its own counters and runtime config, so /metrics and
`/admin/config` then speak for one worker only.

A simulated prefix cache (chained hashes of 64-character chunks) makes time to first
token depend on how much of the prompt it has seen before, when
`--prefill-chars-per-second` is set; hits are exported as vLLM's prefix-cache counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from kvserve.bench.fake_answers import Completion, PrefixCache, prompt_text
from kvserve.bench.uvicorn_thread import UvicornThread

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass
class FakeUpstreamConfig:
    """How the fake upstream behaves; every field can be changed at runtime."""

    model: str = "fake-model"  # the model id it serves (any requested name is accepted)
    name: str = ""  # reported in the x-upstream-name response header (tells replicas apart)
    tokens_per_second: float = 100.0  # pace of streamed tokens per request; 0 = no delay
    num_tokens: int = 16  # tokens per answer (capped by the request's max_tokens)
    ttft: float = 0.0  # seconds before the first token
    fail_rate: float = 0.0  # fraction of requests answered with status_code
    status_code: int = 503  # status of injected failures
    hang: bool = False  # accept requests and never answer (until the client goes away)
    ready_delay: float = 0.0  # seconds /health and /ready take to answer (a busy server's slow probe)
    max_running: int = 0  # concurrent requests served; the rest wait (0 = unlimited)
    kv_capacity_tokens: int = 65536  # simulated KV cache size behind vllm:kv_cache_usage_perc
    prefill_chars_per_second: float = 0.0  # uncached prompt chars add to ttft (0 = off)
    prefix_cache_chunks: int = 4096  # LRU capacity of the simulated prefix cache
    tokens: list[str] = dataclasses.field(default_factory=list)  # the answer's tokens, cycled ([]: "tok0 ", ...)


@dataclass
class Counters:
    """Live counts exported on /metrics."""

    running: int = 0
    waiting: int = 0
    kv_tokens: int = 0
    requests: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    generated: int = 0


def error_body(message: str, code: int) -> bytes:
    kind = "invalid_request_error" if code < 500 else "server_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def body_problem(body: Any, chat: bool) -> str | None:
    """Why the fake cannot read this body, or None."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    if chat and not (isinstance(body.get("messages"), list) and all(isinstance(m, dict) for m in body["messages"])):
        return "'messages' must be an array of objects"
    if not chat and not isinstance(body.get("prompt", ""), (str, list)):
        return "'prompt' must be a string or an array"
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None and (not isinstance(body[name], int) or body[name] < 1):
            return f"'{name}' must be a positive integer"
    return None


class FakeUpstream:
    """The ASGI app. `config` may be replaced or mutated while it serves."""

    def __init__(self, config: FakeUpstreamConfig | None = None) -> None:
        self.config = config or FakeUpstreamConfig()
        self.counters = Counters()
        self.prefix_cache = PrefixCache(self.config.prefix_cache_chunks)
        self.last_request: dict[str, Any] = {}
        self._slots: asyncio.Semaphore | None = None
        self._slots_size = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # run with lifespan="off"
        route = (scope["method"], scope["path"])
        if route in (("POST", "/v1/chat/completions"), ("POST", "/v1/completions")):
            await self.complete(scope, receive, send, chat=route[1].endswith("chat/completions"))
        elif route in (("GET", "/health"), ("GET", "/ready")):
            await self.probe(send)
        elif route == ("GET", "/metrics"):
            await respond(send, 200, self.metrics_text().encode(), [(b"content-type", b"text/plain")])
        elif route == ("GET", "/v1/models"):
            models = {"object": "list", "data": [{"id": self.config.model, "object": "model", "owned_by": "fake"}]}
            await respond(send, 200, json.dumps(models).encode())
        elif route == ("POST", "/admin/config"):
            await self.update_config(receive, send)
        elif route == ("GET", "/admin/last_request"):
            await respond(send, 200, json.dumps(self.last_request).encode())
        else:
            await respond(send, 404, error_body(f"no route {scope['path']}", 404))

    async def probe(self, send: Send) -> None:
        if self.config.ready_delay > 0:
            await asyncio.sleep(self.config.ready_delay)
        if self.config.fail_rate >= 1.0:
            await respond(send, self.config.status_code, error_body("injected failure", self.config.status_code))
        else:
            await respond(send, 200, b'{"status":"ok"}')

    async def update_config(self, receive: Receive, send: Send) -> None:
        try:
            changes = json.loads(await read_body(receive))
            self.config = dataclasses.replace(self.config, **changes)
        except (ValueError, TypeError) as exc:
            await respond(send, 400, error_body(f"bad config: {exc}", 400))
            return
        await respond(send, 200, json.dumps(dataclasses.asdict(self.config)).encode())

    def metrics_text(self) -> str:
        c, label = self.counters, f'{{model_name="{self.config.model}"}}'
        usage = min(1.0, c.kv_tokens / max(1, self.config.kv_capacity_tokens))
        return (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{label} {c.running}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{label} {c.waiting}\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{label} {usage}\n"
            "# TYPE vllm:prefix_cache_queries counter\n"
            f"vllm:prefix_cache_queries_total{label} {c.prefix_queries}\n"
            "# TYPE vllm:prefix_cache_hits counter\n"
            f"vllm:prefix_cache_hits_total{label} {c.prefix_hits}\n"
            "# TYPE vllm:generation_tokens counter\n"
            f"vllm:generation_tokens_total{label} {c.generated}\n"
            "# TYPE vllm:request_success counter\n"
            f"vllm:request_success_total{label} {c.requests}\n"
        )

    async def complete(self, scope: Scope, receive: Receive, send: Send, chat: bool) -> None:
        try:
            body = json.loads(await read_body(receive))
        except ValueError:
            body = None
        problem = body_problem(body, chat)
        if problem is not None:  # a real server's 400, not a crash
            await respond(send, 400, error_body(problem, 400))
            return
        self.remember(scope, body)
        cfg = self.config
        if cfg.hang:
            await self.hang(receive)
            return
        if cfg.fail_rate > 0 and random.random() < cfg.fail_rate:
            await respond(send, cfg.status_code, error_body("injected failure", cfg.status_code))
            return
        await self.serve(body, chat, receive, send)

    async def hang(self, receive: Receive) -> None:
        self.counters.running += 1  # a hung engine still reports the request as running
        try:
            await wait_disconnect(receive)
        finally:
            self.counters.running -= 1

    def remember(self, scope: Scope, body: dict[str, Any]) -> None:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]
                   if k in (b"x-request-id", b"traceparent", b"x-priority", b"authorization")}
        self.last_request = {"path": scope["path"], "model": body.get("model"), "stream": body.get("stream", False),
                             "priority": body.get("priority"), "headers": headers}

    async def serve(self, body: dict[str, Any], chat: bool, receive: Receive, send: Send) -> None:
        cfg, c = self.config, self.counters
        text = prompt_text(body)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or cfg.num_tokens
        n = max(1, min(cfg.num_tokens, int(max_tokens)))
        answer = Completion(chat, str(body.get("model") or cfg.model), max(1, len(text) // 4), n, cfg.tokens)
        kv = answer.usage["total_tokens"]
        c.waiting += 1
        async with self._admission():
            c.waiting -= 1
            c.running += 1
            c.kv_tokens += kv
            try:
                await asyncio.sleep(cfg.ttft + self._prefill_seconds(text))
                if body.get("stream"):
                    options = body.get("stream_options") or {}
                    await self.stream(answer, bool(options.get("include_usage")), receive, send)
                else:
                    await asyncio.sleep(n / cfg.tokens_per_second if cfg.tokens_per_second > 0 else 0)
                    await respond(send, 200, answer.full(), self._headers(JSON_HEADERS))
                c.requests += 1
                c.generated += answer.n
            finally:
                c.running -= 1
                c.kv_tokens -= kv

    def _admission(self) -> asyncio.Semaphore | contextlib.nullcontext[None]:
        size = self.config.max_running
        if size <= 0:
            return contextlib.nullcontext()
        if self._slots is None or self._slots_size != size:
            self._slots, self._slots_size = asyncio.Semaphore(size), size
        return self._slots

    def _prefill_seconds(self, text: str) -> float:
        rate = self.config.prefill_chars_per_second
        if rate <= 0:
            return 0.0
        cached = self.prefix_cache.lookup_and_insert(text)
        self.counters.prefix_queries += len(text)
        self.counters.prefix_hits += cached
        return (len(text) - cached) / rate

    def _headers(self, base: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return base + [(b"x-upstream-name", self.config.name.encode())] if self.config.name else base

    async def stream(self, answer: Completion, include_usage: bool, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_set_on_disconnect(receive, gone))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers(SSE_HEADERS)})
            for i in range(answer.n):
                if gone.is_set():
                    return
                if i and self.config.tokens_per_second > 0:
                    await asyncio.sleep(1.0 / self.config.tokens_per_second)
                await send({"type": "http.response.body", "body": answer.token_chunk(i), "more_body": True})
            await send({"type": "http.response.body", "body": answer.final_chunks(include_usage)})
        finally:
            watcher.cancel()


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ValueError("client went away")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _set_on_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    await wait_disconnect(receive)
    gone.set()


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON_HEADERS) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FakeUpstreamServer(UvicornThread):
    """Runs a FakeUpstream with uvicorn on a loopback port in a background thread."""

    def __init__(self, config: FakeUpstreamConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(FakeUpstream(config), host, port, lifespan="off")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kvserve.bench.fake_upstream", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--name", default="", help="sent back in the x-upstream-name header")
    p.add_argument("--tokens-per-second", type=float, default=100.0, help="per request; 0 = no delay")
    p.add_argument("--num-tokens", type=int, default=16)
    p.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--status-code", type=int, default=503)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--max-running", type=int, default=0, help="concurrent requests; the rest wait (0 = unlimited)")
    p.add_argument("--prefill-chars-per-second", type=float, default=0.0)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--workers", type=int, default=1,
                   help="processes serving the port (SO_REUSEPORT); each keeps its own counters and config")
    return p


def serve(args: argparse.Namespace, sock: socket.socket | None = None) -> None:
    import uvicorn

    config = FakeUpstreamConfig(
        model=args.model, name=args.name, tokens_per_second=args.tokens_per_second, num_tokens=args.num_tokens,
        ttft=args.ttft, fail_rate=args.fail_rate, status_code=args.status_code, hang=args.hang,
        max_running=args.max_running, prefill_chars_per_second=args.prefill_chars_per_second,
    )
    server = uvicorn.Server(uvicorn.Config(FakeUpstream(config), host=args.host, port=args.port,
                                           log_level=args.log_level, lifespan="off", access_log=False,
                                           timeout_graceful_shutdown=1))
    server.run(sockets=None if sock is None else [sock])
    if not server.started:  # e.g. the port is taken: fail as uvicorn.run does
        raise SystemExit(3)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind to the same port too."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def serve_workers(args: argparse.Namespace) -> None:
    """Fork `args.workers` servers on one port; a SIGTERM or SIGINT here stops them all."""
    children: list[int] = []
    for _ in range(args.workers):
        sock = reuse_port_socket(args.host, args.port)  # bound before the fork: the port is taken at once
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                serve(args, sock)
            except BaseException:
                code = 1
            os._exit(code)
        sock.close()
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        os.waitpid(child, 0)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if args.workers == 1:
        serve(args)
    else:
        serve_workers(args)


if __name__ == "__main__":
    main()
