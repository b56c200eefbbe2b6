"""Gateway memory soak: does the gateway's RSS level off under a steady load, whatever the rate?

    python scripts/gateway_soak.py --pin    # the issue's row: 30 min at 500 req/s, 256 MiB, 300 s warm-up

It starts a fake upstream (`python -m kvserve.bench.fake_upstream`) and a gateway
(`kvserve gateway`) with the in-memory store, resumable streams, the exact cache and
`memory.max_bytes` set to `--budget-mb`, as subprocesses (with `--pin`, the gateway alone
on core 0). Finished streams are kept 300 s, as long as running ones, so that the budget
rather than the TTL is what bounds the store. It then sends an open-loop Poisson load:
streaming chat requests of `--num-tokens` tokens, each one unique and deterministic (so
its answer is cached too), and every tenth one a plain request with an Idempotency-Key
(its answer is kept). At most `--max-in-flight` requests are open; an arrival waits for a
slot, so the achieved rate is printed. Every `--sample-s` it records the gateway's RSS
(/proc) and the store's charged bytes (its /metrics), prints a line and, with `--json`,
writes every sample and the summary: the rate achieved (and whether it held 98% of
`--rate`), RSS after warm-up (`--warmup-s`), its min and max, the spread (max - min) / min,
the half-range about the midpoint in percent (the issue's "flat within ±5%"), the RSS's
least-squares slope in MiB/min, and the gateway's CPU time per request after warm-up
(user + system, /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import Client, cores, free_port, pinned, wait_ready  # noqa: E402  (a sibling script)

MB = 1 << 20


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used (/proc/PID/stat utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_bytes(port: int) -> float:
    """The sum of kvserve:gateway_memory_bytes over kinds (what the store charges itself)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kvserve:gateway_memory_bytes{"))


def gateway_yaml(up_port: int, gw_port: int, budget_mb: float) -> str:
    return (f"server: {{port: {gw_port}, log_requests: false}}\n"
            f"memory: {{max_bytes: {int(budget_mb * MB)}}}\n"
            "cache: {enabled: true, max_entries: 10000000}\n"
            "streams: {resumable: true, ttl_s: 300, finished_ttl_s: 300}\n"
            f"models:\n  fake:\n    pool:\n      endpoints: [http://127.0.0.1:{up_port}]\n")


def start(args: argparse.Namespace, workdir: Path) -> tuple[list[subprocess.Popen], int]:
    up_port, gw_port = free_port(), free_port()
    gw_core, up_core, _ = cores(1, 1) if args.pin else (None, None, None)  # one client, one upstream worker
    upstream = subprocess.Popen(pinned(up_core, [sys.executable, "-m", "kvserve.bench.fake_upstream",
                                                 "--port", str(up_port), "--num-tokens", str(args.num_tokens),
                                                 "--tokens-per-second", str(args.tokens_per_second)]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = workdir / "gateway.yaml"
    config.write_text(gateway_yaml(up_port, gw_port, args.budget_mb))
    gateway = subprocess.Popen(pinned(gw_core, [sys.executable, "-m", "kvserve.cli.main", "gateway",
                                               "--config", str(config), "--log-level", "warning"]),
                               stdout=subprocess.DEVNULL, stderr=(workdir / "gateway.log").open("wb"))
    wait_ready(up_port)
    wait_ready(gw_port)
    return [upstream, gateway], gw_port


def raw_request(port: int, n: int, num_tokens: int) -> bytes:
    """The n-th request: unique (nonce), deterministic; every tenth a plain one with an Idempotency-Key."""
    plain = n % 10 == 9
    payload = {"model": "fake", "stream": not plain, "max_tokens": num_tokens, "temperature": 0,
               "messages": [{"role": "user", "content": f"Say something. {n}"}]}
    body = json.dumps(payload).encode()
    extra = f"idempotency-key: soak-{n}\r\n" if plain else ""
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{extra}"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


class Load:
    """Open-loop Poisson arrivals with at most `max_in_flight` open requests."""

    def __init__(self, port: int, args: argparse.Namespace) -> None:
        self.port, self.args = port, args
        self.client = Client(port)
        self.slots = asyncio.Semaphore(args.max_in_flight)
        self.sent = self.done = 0
        self.errors: dict[str, int] = {}

    async def one(self, n: int) -> None:
        try:
            await self.client.send(raw_request(self.port, n, self.args.num_tokens))
            self.done += 1
        except (RuntimeError, ConnectionError, OSError) as exc:
            self.errors[str(exc)] = self.errors.get(str(exc), 0) + 1
        finally:
            self.slots.release()

    async def run(self, seconds: float) -> None:
        rng, tasks = random.Random(0), set()
        start = next_at = time.perf_counter()
        for n in itertools.count():
            if next_at - start >= seconds:
                break
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.slots.acquire()
            task = asyncio.ensure_future(self.one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.sent += 1
            next_at = max(next_at + rng.expovariate(self.args.rate), time.perf_counter() - 1.0)
        await asyncio.gather(*tasks)


async def sample(load: Load, gw_pid: int, args: argparse.Namespace, started: float, out: list[dict]) -> None:
    while True:
        await asyncio.sleep(args.sample_s)
        row = {"t": round(time.perf_counter() - started, 1), "rss": rss_bytes(gw_pid), "cpu": cpu_seconds(gw_pid),
               "store": await asyncio.to_thread(store_bytes, load.port), "done": load.done}
        out.append(row)
        print(f"t={row['t']:7.1f}s rss {row['rss'] / MB:7.1f} MB  store {row['store'] / MB:7.1f} MB  "
              f"done {row['done']:8d}  errors {sum(load.errors.values())}", flush=True)


def slope(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of (x, y) points (0 with fewer than two)."""
    if len(points) < 2:
        return 0.0
    mx, my = sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def summary(samples: list[dict], baseline: int, load: Load, args: argparse.Namespace, seconds: float) -> dict:
    settled = [s for s in samples if s["t"] >= args.warmup_s] or samples[-1:]
    low, high = min(s["rss"] for s in settled), max(s["rss"] for s in settled)
    served = settled[-1]["done"] - settled[0]["done"]
    cpu = (settled[-1]["cpu"] - settled[0]["cpu"]) / served * 1e6 if served else None
    achieved = load.done / seconds
    return {"rate": args.rate, "achieved_rate": round(achieved, 1), "rate_held": achieved >= 0.98 * args.rate,
            "requests": load.done, "errors": load.errors, "budget_bytes": int(args.budget_mb * MB),
            "baseline_rss": baseline, "rss_min_after_warmup": low, "rss_max_after_warmup": high,
            "spread_after_warmup": round((high - low) / low, 4),
            "within_pct_of_midpoint": round(100 * (high - low) / (high + low), 2),  # the "flat within ±5%"
            "rss_slope_mib_per_min": round(slope([(s["t"] / 60, s["rss"] / MB) for s in settled]), 3),
            "cpu_us_per_request_after_warmup": None if cpu is None else round(cpu, 1),
            "store_max": max(s["store"] for s in samples), "samples": samples}


def verdict(r: dict) -> str:
    """The issue's figures in one line: the rate held, and RSS after warm-up."""
    return (f"rate {'held' if r['rate_held'] else 'NOT held'}: {r['achieved_rate']} of {r['rate']:g} req/s; "
            f"RSS after warm-up {r['rss_min_after_warmup'] / MB:.1f}-{r['rss_max_after_warmup'] / MB:.1f} MiB, "
            f"within ±{r['within_pct_of_midpoint']}% of its midpoint (spread {100 * r['spread_after_warmup']:.1f}%), "
            f"slope {r['rss_slope_mib_per_min']} MiB/min; gateway CPU {r['cpu_us_per_request_after_warmup']} us/request")


async def soak(args: argparse.Namespace, gw_port: int, gw_pid: int) -> dict:
    baseline = rss_bytes(gw_pid)
    load, samples = Load(gw_port, args), []
    started = time.perf_counter()
    sampler = asyncio.ensure_future(sample(load, gw_pid, args, started, samples))
    await load.run(args.seconds)
    seconds = time.perf_counter() - started
    sampler.cancel()
    samples.append({"t": round(seconds, 1), "rss": rss_bytes(gw_pid), "cpu": cpu_seconds(gw_pid),
                    "store": store_bytes(gw_port), "done": load.done})
    return summary(samples, baseline, load, args, seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=1800.0, help="length of the load")
    p.add_argument("--rate", type=float, default=500.0, help="arrivals per second (Poisson)")
    p.add_argument("--num-tokens", type=int, default=32, help="tokens per answer")
    p.add_argument("--tokens-per-second", type=float, default=0.0, help="the fake upstream's pace (0: at once)")
    p.add_argument("--budget-mb", type=float, default=256.0, help="the gateway's memory.max_bytes, in MiB")
    p.add_argument("--max-in-flight", type=int, default=64, help="open requests at most")
    p.add_argument("--sample-s", type=float, default=30.0, help="seconds between RSS samples")
    p.add_argument("--warmup-s", type=float, default=300.0,
                   help="samples before this are left out of the summary (the store fills, then turns over once)")
    p.add_argument("--pin", action="store_true", help="the gateway alone on core 0 (taskset)")
    p.add_argument("--json", type=Path, help="write the samples and the summary here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        procs, gw_port = start(args, Path(tmp))
        try:
            result = asyncio.run(soak(args, gw_port, procs[1].pid))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    print(verdict(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
