"""Output tokens/s of `kvserve serve` against the offline in-process engine (`LLM.generate`)
on the same workload, streamed and whole: what the HTTP frontend (tokenizing,
detokenizing, JSON, SSE) costs beside the engine core's process.

Runs interleave offline and served measurements and keep the best of each, so that a
burst of load from elsewhere on a shared machine hits both sides alike. Prints one JSON
line (tokens/s and ratios to offline):

    python scripts/served_throughput.py MODEL_DIR [--requests 64] [--max-tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Workload:
    model: str
    requests: int = 64
    max_tokens: int = 128

    def prompts(self) -> list[str]:
        return [f"Request {i}: the capital of France is Paris, and the capital of Italy is" for i in range(self.requests)]


def offline_tokens_per_s(work: Workload) -> float:
    """LLM.generate on the workload, in a process of its own as the server has (so that no
    torch threads of ours idle-spin beside the HTTP client)."""
    command = [sys.executable, __file__, work.model, "--requests", str(work.requests), "--max-tokens",
               str(work.max_tokens), "--offline-only"]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return float(result.stdout.split()[-1])


def _offline_run(work: Workload) -> float:
    from kvserve import LLM, SamplingParams

    llm = LLM(model=work.model, max_num_seqs=work.requests)
    llm.generate(work.prompts()[:2], SamplingParams(max_tokens=4))  # warm-up
    params = SamplingParams(max_tokens=work.max_tokens, ignore_eos=True, temperature=0)
    start = time.perf_counter()
    outputs = llm.generate(work.prompts(), params)
    return sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - start)


async def served_tokens_per_s(url: str, work: Workload, stream: bool = True) -> float:
    """All requests at once; tokens/s counted from the usage each answer reports."""
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    counts = await asyncio.gather(*(_completion_tokens(host, int(port), p, work, stream) for p in work.prompts()))
    return sum(counts) / (time.perf_counter() - start)


async def _completion_tokens(host: str, port: int, prompt: str, work: Workload, stream: bool) -> int:
    """One request over a bare connection. The load generator shares the machine with the
    server, so it does as little as it can: no HTTP library, no parsing but the usage."""
    body = {"prompt": prompt, "max_tokens": work.max_tokens, "ignore_eos": True, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (host.encode(), len(payload), payload))
    head = await reader.read(1 << 16)
    tail = head
    while chunk := await reader.read(1 << 16):
        tail = (tail + chunk)[-8192:]  # the usage is in the last event (or at the end of the body)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return int(re.findall(rb'"completion_tokens":(\d+)', tail)[-1])


@contextmanager
def serving(work: Workload, timeout: float = 180.0) -> Iterator[str]:
    """`kvserve serve` for the workload on a free loopback port, once /ready answers; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "kvserve.cli.main", "serve", "--model", work.model, "--port", str(port),
               "--max-num-seqs", str(work.requests), "--log-level", "warning"]
    log_path = Path(tempfile.mkdtemp()) / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kvserve serve did not get ready:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(60)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ready", timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def compare(work: Workload, rounds: int) -> dict[str, float]:
    """Best tokens/s of `rounds` interleaved runs: offline, served streaming, served whole."""
    best = {"offline": 0.0, "served_stream": 0.0, "served_whole": 0.0}
    with serving(work) as url:
        asyncio.run(served_tokens_per_s(url, Workload(work.model, 2, 4)))  # warm-up
        for _ in range(rounds):
            best["offline"] = max(best["offline"], offline_tokens_per_s(work))
            best["served_stream"] = max(best["served_stream"], asyncio.run(served_tokens_per_s(url, work)))
            best["served_whole"] = max(best["served_whole"], asyncio.run(served_tokens_per_s(url, work, False)))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--offline-only", action="store_true", help="print offline tokens/s of one run")
    args = parser.parse_args()
    work = Workload(args.model, args.requests, args.max_tokens)
    if args.offline_only:
        print(_offline_run(work))
        return
    best = compare(work, args.rounds)
    ratios = {k: round(v / best["offline"], 3) for k, v in best.items()}
    print(json.dumps({"tokens_per_s": {k: round(v, 1) for k, v in best.items()}, "ratio_to_offline": ratios}))


if __name__ == "__main__":
    main()
