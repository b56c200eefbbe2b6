"""Hot-swap time and the TTFT requests see during a swap, on a real `kvserve serve`.

    python3 scripts/bench_hot_swap.py [--model-dir DIR] [--swaps 3] [--concurrency 2] [--json FILE]

The model (by default the embedded SmolLM2-135M-Instruct) is pushed as bench:v1 ..
bench:v<swaps+1> into a temporary registry, and `kvserve serve --model bench:v1` starts
on a free loopback port. A closed loop of `--concurrency` streaming chat requests
(`--max-tokens` tokens each) runs throughout. First `--before-s` seconds of load alone
("before"); then each swap: POST /admin/models/bench:v1/versions, timed from the
request to the switch (the server's `switch_s`: new version fetched, started, warmed,
routed to) and to the old version freed (`done_s`); requests that start while a swap
is in progress count as "during". Prints TTFT p50/p99 before and during, swap times,
and failed requests (there should be none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kvserve.control.ref import ModelRef
from kvserve.control.registry import Registry
from kvserve.control.storage import LocalStorage

ADMIN_KEY = "bench-admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(scratch: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    env = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache"), "HF_HUB_OFFLINE": "1"}
    log = open(scratch / "server.log", "wb")
    command = [sys.executable, "-m", "kvserve.cli.main", "serve", "--model", "bench:v1", "--port", str(port),
               "--admin-key", ADMIN_KEY, "--kv-cache-gib", str(args.kv_cache_gib), "--max-model-len", "1024"]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the server did not get ready")


class LoadLoop:
    """Closed-loop streaming requests; each records (start, ttft, ok)."""

    def __init__(self, url: str, concurrency: int, max_tokens: int) -> None:
        self.url, self.concurrency, self.max_tokens = url, concurrency, max_tokens
        self.samples: list[tuple[float, float | None, bool]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=120.0) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        body = {"model": "bench:v1", "messages": [{"role": "user", "content": "Tell me about the sea."}],
                "max_tokens": self.max_tokens, "ignore_eos": True, "stream": True}
        while not self.stop.is_set():
            start, ttft, last, error = time.monotonic(), None, "", False
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                    async for line in reply.aiter_lines():
                        if ttft is None and line.startswith("data: ") and '"content":"' in line:
                            ttft = time.monotonic() - start
                        error = error or line.startswith('data: {"error"')
                        last = line or last
                ok = reply.status_code == 200 and last == "data: [DONE]" and not error
            except httpx.HTTPError:
                ok = False
            self.samples.append((start, ttft, ok))


async def measure(url: str, args: argparse.Namespace) -> dict:
    load = LoadLoop(url, args.concurrency, args.max_tokens)
    runner = asyncio.create_task(load.run())
    began = time.monotonic()
    await asyncio.sleep(args.before_s)
    windows, swaps = [], []
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=600.0, headers=auth) as admin:
        for n in range(2, args.swaps + 2):
            start = time.monotonic()
            reply = await admin.post("/admin/models/bench:v1/versions", json={"version": f"bench:v{n}"})
            reply.raise_for_status()
            while (status := (await admin.get("/admin/models/bench:v1")).json())["swap"]["state"] != "done":
                await asyncio.sleep(0.1)
            windows.append((start, time.monotonic()))
            swap = status["swap"]
            swaps.append({"to": f"bench:v{n}", "switch_s": swap["switch_s"], "done_s": swap["done_s"]})
            await asyncio.sleep(args.gap_s)
    load.stop.set()
    await runner

    def ttfts(keep) -> list[float]:
        return sorted(t for s, t, ok in load.samples if ok and t is not None and keep(s))

    def during(s: float) -> bool:
        return any(a <= s <= b for a, b in windows)

    before = ttfts(lambda s: began + 1.0 <= s < windows[0][0])  # the first second warms the client
    inside = ttfts(during)
    return {"before": summary(before), "during": summary(inside), "swaps": swaps,
            "requests": len(load.samples), "failed": sum(1 for _, _, ok in load.samples if not ok)}


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return {"n": len(values), "p50_s": round(statistics.median(values), 4), "p99_s": round(p99, 4),
            "max_s": round(values[-1], 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="model directory (default: the embedded model)")
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--before-s", type=float, default=30.0, help="seconds of load before the first swap")
    parser.add_argument("--gap-s", type=float, default=5.0, help="seconds of load between swaps")
    parser.add_argument("--kv-cache-gib", type=float, default=0.25)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    if args.model_dir is None:
        from kvserve.default_model import default_model_dir

        args.model_dir = default_model_dir()
    with tempfile.TemporaryDirectory(prefix="kvserve-bench-swap-") as scratch_name:
        scratch = Path(scratch_name)
        registry = Registry(LocalStorage(scratch / "cache" / "kvserve" / "registry"))
        for n in range(1, args.swaps + 2):
            registry.push(args.model_dir, ModelRef("bench", version=f"v{n}"))
        port = free_port()
        proc = start_server(scratch, port, args)
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            result = asyncio.run(measure(f"http://127.0.0.1:{port}", args))
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    result["settings"] = {k: str(v) for k, v in vars(args).items()}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
