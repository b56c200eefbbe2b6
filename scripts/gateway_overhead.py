"""Gateway overhead on time to first token: direct to a fake upstream vs through the gateway.

One command measures the gateway as deployed: API keys, per-key limits in Redis (a
redis-server it starts on a free loopback port) and the response cache on, for 32-,
64- and 256-token answers:

    python scripts/gateway_overhead.py

(`--no-access` for a gateway without keys, limits or cache; `--num-tokens 64` for one size.)

It starts a fake upstream (`python -m kvserve.bench.fake_upstream`) and a gateway
(`kvserve gateway`, request log on, as by default) as subprocesses, pinned with
`taskset`: the gateway alone on core 0, the `--client-procs` load generators on the
next cores, the upstream's `--upstream-workers` processes on the cores after those (on
a 2-core machine the upstream shares core 1 with the client). The client processes send
the same open-loop Poisson load of streaming chat requests (each rate/N, in step)
alternately direct and through the gateway (phases A B A B ..., so drift hits both),
with a lean client (asyncio protocol + httptools parser) that costs far less CPU per
request than the servers under test. It prints TTFT p50/p90/p99 per target and the
difference, the gateway's CPU per request (user and system), and the busiest client
process's share of its core, with a warning when that nears a full core (then the
client, not the gateway, sets the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httptools
import uvloop

from kvserve.gateway.access.keys import FileKeyStore, KeyLimits, new_key


CLIENT_BUSY = 0.8  # a client process's share of its core above which its figures are suspect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.first: float | None = None
        self.done: asyncio.Future[None] | None = None
        self.status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))

    def on_body(self, body: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def on_message_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def request(self, raw: bytes) -> tuple[float, float]:
        self.first = None
        self.done = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        assert self.transport is not None
        self.transport.write(raw)
        await self.done
        if self.status != 200 or self.first is None:
            raise RuntimeError(f"status {self.status}")
        return self.first - start, time.perf_counter() - start


class Client:
    """A pool of keep-alive connections to one host:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[Conn] = []

    async def send(self, raw: bytes) -> tuple[float, float]:
        conn = self.idle.pop() if self.idle else None
        if conn is None or conn.closed:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(Conn, "127.0.0.1", self.port)
            conn.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        result = await conn.request(raw)
        self.idle.append(conn)
        return result


def raw_request(port: int, model: str, num_tokens: int, key: str | None = None, nonce: int = 0) -> bytes:
    """With `key` (--access): an API key and a deterministic (cacheable) body made unique by
    `nonce`, so every request pays auth, limits, the PII scan and a cache lookup that misses."""
    payload = {"model": model, "stream": True, "max_tokens": num_tokens,
               "messages": [{"role": "system", "content": "You are a helpful assistant. " * 20},
                            {"role": "user", "content": f"Say something. {nonce}" if key else "Say something."}]}
    if key:
        payload["temperature"] = 0
    body = json.dumps(payload).encode()
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{auth}"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


def request_maker(port: int, num_tokens: int, key: str | None, worker: int = 0,
                  workers: int = 1) -> Callable[[], bytes]:
    if key is None:
        raw = raw_request(port, "fake", num_tokens)
        return lambda: raw
    counter = itertools.count(worker, workers)  # nonces unique over the client processes
    return lambda: raw_request(port, "fake", num_tokens, key, next(counter))


async def phase(client: Client, make: Callable[[], bytes], rate: float, seconds: float, rng: random.Random) -> list[float]:
    ttfts: list[float] = []
    errors: dict[str, int] = {}

    async def one() -> None:
        try:
            ttft, _ = await client.send(make())
            ttfts.append(ttft)
        except (RuntimeError, ConnectionError, OSError) as exc:
            errors[str(exc)] = errors.get(str(exc), 0) + 1

    tasks = []
    start = time.perf_counter()
    next_at = start
    while next_at - start < seconds:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one()))
        next_at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    if errors:
        print(f"  errors: {errors}", file=sys.stderr)
    return ttfts


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def wait_ready(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                if b" 200 " in s.recv(100):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not get ready")


def pinned(core: str | None, cmd: list[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", str(core), *cmd]


def core_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def cores(client_procs: int, upstream_workers: int) -> tuple[str | None, str | None, list[int]]:
    """(gateway, upstream) cores as taskset lists and the client processes' cores: the gateway
    alone on the first core, the clients on the next ones, the upstream's workers after those
    (on a machine too small for that, they share the clients' cores)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if len(allowed) < 2:
        return None, None, []
    clients = allowed[1:1 + client_procs]
    upstream = allowed[1 + client_procs:1 + client_procs + upstream_workers] or clients
    return str(allowed[0]), ",".join(map(str, upstream)), clients


def default_client_procs() -> int:
    """Two client processes on a host with 8 cores or more (one drives 256-token answers at
    500 req/s near the limit of its core), else one."""
    return 2 if core_count() >= 8 else 1


def default_upstream_workers(client_procs: int) -> int:
    """One per core left after the gateway's and the clients', up to 8 (enough for 256-token
    answers at 500 req/s on a 16-core host)."""
    return max(1, min(8, core_count() - 1 - client_procs))


def access_yaml(args: argparse.Namespace, workdir: Path) -> str:
    """API keys (file store), per-key limits (in-memory, or Redis with --redis-url) and the cache."""
    if not args.access:
        return ""
    key, record = new_key("bench", limits=KeyLimits(requests_per_minute=10**9, tokens_per_minute=10**12))
    FileKeyStore(workdir / "keys.yaml").put(record)
    args.key = key
    redis = f"redis: {{url: '{args.redis_url}'}}\n" if args.redis_url else ""
    return f"auth: {{enabled: true, keys_file: {workdir / 'keys.yaml'}}}\ncache: {{enabled: true}}\n{redis}"


def start_servers(args: argparse.Namespace, workdir: Path) -> tuple[list[subprocess.Popen], int, int]:
    up_port, gw_port = free_port(), free_port()
    while gw_port == up_port:
        gw_port = free_port()
    gw_core, up_core, _ = args.cores
    upstream = subprocess.Popen(pinned(up_core, [sys.executable, "-m", "kvserve.bench.fake_upstream",
                                                 "--port", str(up_port), "--num-tokens", str(args.num_tokens_now),
                                                 "--tokens-per-second", str(args.tokens_per_second),
                                                 "--workers", str(args.upstream_workers)]))
    config = workdir / "gateway.yaml"
    config.write_text(
        f"server: {{port: {gw_port}, log_requests: {str(not args.no_log_requests).lower()}}}\n"
        f"models:\n  fake:\n    pool:\n      policy: {args.policy}\n      endpoints: [http://127.0.0.1:{up_port}]\n"
        + access_yaml(args, workdir)
    )
    env = dict(os.environ)
    if args.gateway_src:  # another tree's gateway (e.g. the code before a change) behind the same client
        env["PYTHONPATH"] = os.pathsep.join([args.gateway_src, env.get("PYTHONPATH", "")])
    gateway = subprocess.Popen(pinned(gw_core, [sys.executable, "-m", "kvserve.cli.main", "gateway",
                                               "--config", str(config)]), stderr=subprocess.DEVNULL, env=env)
    wait_ready(up_port)
    wait_ready(gw_port)
    return [upstream, gateway], up_port, gw_port


def schedule(args: argparse.Namespace) -> list[tuple[str, float, bool]]:
    """The phases every client process runs in step: (target, seconds, measured)."""
    warm_up = [("direct", 2.0, False), ("gateway", 2.0, False)]  # connections, caches
    per_phase = args.seconds / args.rounds
    return warm_up + [(name, per_phase, True) for _ in range(args.rounds) for name in ("direct", "gateway")]


async def drive(args: argparse.Namespace, up_port: int, gw_port: int, worker: int,
                sync: Callable[[], object]) -> tuple[dict[str, list[float]], dict[str, float]]:
    """One client process's share of the load: rate / client_procs, its own request nonces;
    `sync` (a barrier) before and after each phase keeps the processes in step."""
    rng = random.Random(worker)
    procs = args.client_procs
    targets = {"direct": (Client(up_port), request_maker(up_port, args.num_tokens_now, None, worker, procs)),
               "gateway": (Client(gw_port), request_maker(gw_port, args.num_tokens_now, args.key, worker, procs))}
    results: dict[str, list[float]] = {name: [] for name in targets}
    client_cpu = {name: 0.0 for name in targets}
    for name, seconds, measured in schedule(args):
        client, make = targets[name]
        sync()
        own = time.process_time()
        ttfts = await phase(client, make, args.rate / procs, seconds, rng)
        if measured:
            results[name] += ttfts
            client_cpu[name] += time.process_time() - own
        sync()
    return results, client_cpu


def client_process(args: argparse.Namespace, up_port: int, gw_port: int, worker: int,
                   barrier: Any, out: Any) -> None:
    if args.client_cores:
        os.sched_setaffinity(0, {args.client_cores[worker % len(args.client_cores)]})
    out.put(uvloop.run(drive(args, up_port, gw_port, worker, barrier.wait)))


def measure(args: argparse.Namespace, up_port: int, gw_port: int, gateway_pid: int) -> None:
    """Run the client processes and time the gateway's CPU over its measured phases."""
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(args.client_procs + 1), ctx.Queue()
    workers = [ctx.Process(target=client_process, args=(args, up_port, gw_port, i, barrier, out), daemon=True)
               for i in range(args.client_procs)]
    for worker in workers:
        worker.start()
    gw_user = gw_sys = 0.0
    for name, _, measured in schedule(args):
        barrier.wait(timeout=120)
        before = cpu_seconds(gateway_pid)
        barrier.wait(timeout=600)
        if measured and name == "gateway":
            after = cpu_seconds(gateway_pid)
            gw_user, gw_sys = gw_user + after[0] - before[0], gw_sys + after[1] - before[1]
    parts = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    results = {name: [v for values, _ in parts for v in values[name]] for name in ("direct", "gateway")}
    shares = {name: max(cpu[name] for _, cpu in parts) / args.seconds for name in results}
    report(args, results, gw_user, gw_sys, shares)


def report(args: argparse.Namespace, results: dict[str, list[float]], gw_user: float, gw_sys: float,
           shares: dict[str, float]) -> None:
    for name, values in results.items():
        print(f"{name:8s} n={len(values):6d} ttft ms p50 {pct(values, .5):7.3f}  p90 {pct(values, .9):7.3f}  "
              f"p99 {pct(values, .99):7.3f}  mean {statistics.mean(values) * 1000:7.3f}")
    d, g = results["direct"], results["gateway"]
    print(f"added    ttft ms p50 {pct(g, .5) - pct(d, .5):7.3f}  p90 {pct(g, .9) - pct(d, .9):7.3f}  "
          f"p99 {pct(g, .99) - pct(d, .99):7.3f}")
    gw_cpu, n = gw_user + gw_sys, max(1, len(g))
    print(f"gateway CPU: {gw_cpu / args.seconds * 100:.0f}% of one core at {args.rate:.0f} req/s "
          f"({gw_cpu / n * 1e6:.0f} us per request: user {gw_user / n * 1e6:.0f}, system {gw_sys / n * 1e6:.0f})")
    print(f"client CPU ({args.client_procs} process{'es' if args.client_procs > 1 else ''}, the busiest): "
          + ", ".join(f"{share * 100:.0f}% of one core ({name})" for name, share in shares.items()))
    if max(shares.values()) > CLIENT_BUSY:
        print("  warning: a client process nears a full core: its own queueing is in these figures "
              "(more --client-procs)", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=500.0, help="requests/s (Poisson)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per target")
    p.add_argument("--rounds", type=int, default=4, help="alternations of direct and gateway phases")
    p.add_argument("--num-tokens", default="32,64,256", help="answer lengths, comma-separated: one run each")
    p.add_argument("--tokens-per-second", type=float, default=200.0)
    p.add_argument("--policy", default="least_request")
    p.add_argument("--no-log-requests", action="store_true", help="turn the gateway's request log off")
    p.add_argument("--no-access", dest="access", action="store_false",
                   help="gateway without API keys, limits and the response cache")
    p.add_argument("--gateway-src", default=None,
                   help="run the gateway from this source tree (a src/ directory), e.g. the code before a change")
    p.add_argument("--redis-url", default=None, help="limits and cache in this Redis (default: start a redis-server)")
    p.add_argument("--no-redis", action="store_true", help="limits and cache in the gateway's memory")
    p.add_argument("--client-procs", type=int, default=default_client_procs(),
                   help="load-generating processes, each sending rate/N (default: 2 with 8 cores or more, else 1)")
    p.add_argument("--upstream-workers", type=int, default=None,
                   help="fake upstream processes (default: one per core left, up to 8)")
    args = p.parse_args()
    if args.upstream_workers is None:
        args.upstream_workers = default_upstream_workers(args.client_procs)
    if args.upstream_workers < 1 or args.client_procs < 1:
        p.error("--upstream-workers and --client-procs must be at least 1")
    args.cores = cores(args.client_procs, args.upstream_workers)  # before this process is pinned
    args.client_cores = args.cores[2]
    if args.client_cores:  # this process only coordinates the clients
        os.sched_setaffinity(0, {args.client_cores[0]})
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(args, Path(tmp))
        try:
            for size in [int(n) for n in str(args.num_tokens).split(",")]:
                print(f"--- {size}-token answers at {args.rate:.0f} req/s, access {'on' if args.access else 'off'}"
                      f"{', redis ' + args.redis_url if args.access and args.redis_url else ''}", flush=True)
                run_one(args, size, Path(tmp))
        finally:
            if redis is not None:
                redis.terminate()
                redis.wait(timeout=10)


def start_redis(args: argparse.Namespace, workdir: Path) -> subprocess.Popen | None:
    if not args.access or args.no_redis or args.redis_url:
        return None
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    args.redis_url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(10).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def run_one(args: argparse.Namespace, num_tokens: int, workdir: Path) -> None:
    args.num_tokens_now = num_tokens
    args.key = None
    procs, up_port, gw_port = start_servers(args, workdir)
    try:
        measure(args, up_port, gw_port, procs[1].pid)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
