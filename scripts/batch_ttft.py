"""Interactive TTFT with and without a batch job running on the same `kvserve serve`.

    python scripts/batch_ttft.py                     # the embedded SmolLM2-135M-Instruct
    python scripts/batch_ttft.py --model DIR --rate 4 --seconds 20 --rounds 2

It starts `kvserve serve` (batches on, a temporary data directory), uploads one large
batch file, then runs the same open-loop Poisson load of streaming chat requests in
phases A B A B ...: A alone, B while a batch job made from that file runs (created before
the phase, cancelled after it), so that drift hits both. It prints TTFT p50/p95 of the
interactive requests per kind of phase, their ratio, how many batch lines finished during
the B phases (in all and per second: the idle capacity the job used) and the 1-minute load
average at the end of each phase (the box's other work, which hits both kinds of phase).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

PROMPTS = ["Tell me about the sea.", "What is a good name for a cat?", "Explain rain to a child.",
           "Write a short poem about trains.", "Why is the sky blue?", "Give me three colours."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "kvserve.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir),
               "--batch-concurrency", str(args.batch_concurrency), "--max-model-len", "512"]
    command += ["--model", args.model] if args.model else []
    proc = subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not get ready")


async def one_request(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> float | None:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True}
    sent = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return None
        first = None
        async for line in response.aiter_lines():  # read to the end: the request then leaves the engine
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - sent
    return first


async def load(url: str, model: str, args: argparse.Namespace, seed: int) -> list[float]:
    """An open-loop Poisson load for `args.seconds`; the TTFT of every request that succeeded."""
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        tasks, start = [], time.perf_counter()
        next_at = 0.0
        while next_at < args.seconds:
            await asyncio.sleep(max(0.0, start + next_at - time.perf_counter()))
            tasks.append(asyncio.create_task(one_request(client, model, rng.choice(PROMPTS), args.max_tokens)))
            next_at += rng.expovariate(args.rate)
        results = await asyncio.gather(*tasks)
    return [r for r in results if r is not None]


def batch_file(model: str, lines: int, max_tokens: int) -> bytes:
    rows = [{"custom_id": f"bg-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                      "max_tokens": max_tokens, "ignore_eos": True}} for i in range(lines)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def wait_for(sdk: openai.OpenAI, batch_id: str, done) -> openai.types.Batch:
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--rate", type=float, default=4.0, help="interactive requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens of each interactive answer")
    parser.add_argument("--batch-lines", type=int, default=20_000, help="lines of the batch file")
    parser.add_argument("--batch-max-tokens", type=int, default=32, help="tokens of each batch answer")
    parser.add_argument("--batch-concurrency", type=int, default=8, help="the server's --batch-concurrency")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server too (the finally below)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(args, Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            run(url, args)
        finally:
            proc.terminate()
            proc.wait(60)


def run(url: str, args: argparse.Namespace) -> None:
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    model = sdk.models.list().data[0].id
    asyncio.run(load(url, model, argparse.Namespace(**{**vars(args), "seconds": 3.0}), seed=0))  # warm-up
    source = sdk.files.create(file=("bg.jsonl", io.BytesIO(batch_file(model, args.batch_lines,
                                                                      args.batch_max_tokens))), purpose="batch")
    alone, beside, lines, seconds, loads = [], [], [], [], {"without": [], "with": []}
    for round_ in range(args.rounds):
        alone += asyncio.run(load(url, model, args, seed=round_))
        loads["without"].append(os.getloadavg()[0])
        batch = sdk.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
        before = wait_for(sdk, batch.id, lambda b: b.request_counts.completed > 0)
        began = time.monotonic()
        beside += asyncio.run(load(url, model, args, seed=round_))
        after = sdk.batches.retrieve(batch.id)
        loads["with"].append(os.getloadavg()[0])
        lines.append(after.request_counts.completed - before.request_counts.completed)
        seconds.append(time.monotonic() - began)
        if after.status != "in_progress":
            raise SystemExit(f"the batch job ended during the phase ({after.status}): use more --batch-lines")
        sdk.batches.cancel(batch.id)
        wait_for(sdk, batch.id, lambda b: b.status == "cancelled")
    report(alone, beside, (sum(lines), sum(seconds)), loads, args)


def report(alone: list[float], beside: list[float], job: tuple[int, float], loads: dict[str, list[float]],
           args: argparse.Namespace) -> None:
    print(f"load: {args.rate} req/s for {args.seconds:.0f} s x {args.rounds} rounds, {args.max_tokens}-token "
          f"answers; batch lines of {args.batch_max_tokens} tokens, {args.batch_concurrency} at once")
    for name, values in (("without", alone), ("with", beside)):
        averages = ", ".join(f"{a:.2f}" for a in loads[name])
        print(f"{name + ' batch':>14}: {len(values)} requests, TTFT p50 {percentile(values, 50) * 1000:.1f} ms, "
              f"p95 {percentile(values, 95) * 1000:.1f} ms; load averages {averages}")
    ratio = percentile(beside, 95) / percentile(alone, 95)
    print(f"TTFT p95 ratio (with / without): {ratio:.3f}; batch lines done during the phases with it: "
          f"{job[0]} in {job[1]:.0f} s ({job[0] / job[1]:.2f} per s)")


if __name__ == "__main__":
    main()
