"""Cost of output redaction on a stream: CPU per chunk, and how far the text sent lags the text received.

    python scripts/gateway_redaction_bench.py [--end-to-end]

Feeds the SSE chunks of a chat answer (English text with an email, a phone number and a
card number in it, one word per chunk, as a tokenizer splits it) through the gateway's
`RedactingSend` with every kind on, and through a plain `send`, many times; prints the
added microseconds per chunk, then the lag: after each chunk, how many chunks' worth of
text are still held (the added time to first token is the first chunk's lag times the
inter-token latency; per-chunk latency grows by the lag the same way).

With `--end-to-end` it also starts a fake upstream streaming that answer at
`--tokens-per-second`, and two gateways in front of it (`kvserve gateway`), one with
`redaction: {models: {fake: [all]}}` and one without, and times `--requests` streamed
requests through each, alternately: time to the first text, and for each word the time
at which the client has received it; it prints the medians and the differences.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kvserve.gateway.access.pii import DETECTORS
from kvserve.gateway.access.redacting_send import RedactingSend
from kvserve.gateway.access.redaction import redact_text

TEXT = ("Thanks for asking. The team can be reached at support.desk@example.org or on +1 415 555 0100 "
        "during office hours, and refunds go back to the card ending 4242 4242 4242 4242 within five days. "
        "Is there anything else I can help you with today?")
WORDS = [w + " " for w in TEXT.split(" ")]


def chunk(word: str, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": word} if word else {}, "logprobs": None,
                         "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


CHUNKS = [chunk(w) for w in WORDS] + [chunk("", "stop"), b"data: [DONE]\n\n"]
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}


async def run(redact: bool, rounds: int) -> tuple[float, list[str]]:
    sent: list[bytes] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    start = time.perf_counter()
    for _ in range(rounds):
        sent.clear()
        target = RedactingSend(send, frozenset(DETECTORS), 256, lambda kind: None) if redact else send
        await target(START)
        for i, c in enumerate(CHUNKS):
            await target({"type": "http.response.body", "body": c, "more_body": i < len(CHUNKS) - 1})
    per_chunk = (time.perf_counter() - start) / (rounds * len(CHUNKS))
    return per_chunk, [content(b) for b in sent]


def content(body: bytes) -> str:
    line = body.split(b"\n")[0]
    if not line.startswith(b"data: {"):
        return ""
    return "".join(c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"])


def lags(out: list[str], ends: list[int | None]) -> list[int]:
    """After each word chunk: how many of the words received so far the client does not have
    whole yet (a word inside a redacted item counts as delivered with the item)."""
    delivered_at: list[int] = []
    for j, end in enumerate(ends):  # a redacted word: delivered when the text before the next word is
        nxt = next(k for k in range(j, len(ends)) if ends[k] is not None) if end is None else j
        delivered_at.append(end if end is not None else ends[nxt] - len(WORDS[nxt]))  # type: ignore[operator]
    sent, result = 0, []
    for i in range(len(WORDS)):
        sent += len(out[i])
        result.append(sum(1 for j in range(i + 1) if delivered_at[j] > sent))
    return result


def word_ends(expected: str) -> list[int | None]:
    """Where each word's text ends in the answer the client should get (None: a word inside
    a redacted item, which never arrives as such)."""
    ends: list[int | None] = []
    at = 0
    for word in WORDS:
        found = expected.find(word, at)
        if found < 0 or found - at > 2 * len("[REDACTED:email] "):
            ends.append(None)
            continue
        at = found + len(word)
        ends.append(at)
    return ends


def word_arrivals(url: str, ends: list[int | None]) -> list[float | None]:
    """Seconds from sending one streamed request to the arrival of each word's text."""
    start, text = time.perf_counter(), ""
    arrivals: list[float | None] = [None] * len(WORDS)
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                text += "".join(c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"])
                now = time.perf_counter() - start
                for i, end in enumerate(ends):
                    if end is not None and arrivals[i] is None and len(text) >= end:
                        arrivals[i] = now
    return arrivals


def wait_ready(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def end_to_end(args: argparse.Namespace) -> None:
    ports = [free_port() for _ in range(3)]
    up = f"http://127.0.0.1:{ports[0]}"
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen([sys.executable, "-m", "kvserve.bench.fake_upstream", "--port", str(ports[0]),
                                   "--tokens-per-second", str(args.tokens_per_second),
                                   "--num-tokens", str(len(WORDS))])]
        for port, rules in ((ports[1], ""), (ports[2], "redaction: {models: {fake: [all]}}\n")):
            config = Path(tmp) / f"{port}.yaml"
            config.write_text(f"server: {{port: {port}, log_requests: false}}\n{rules}"
                              f"models:\n  fake:\n    pool: {{endpoints: [{up}]}}\n")
            procs.append(subprocess.Popen([sys.executable, "-m", "kvserve.cli.main", "gateway", "--config",
                                           str(config), "--log-level", "warning"]))
        try:
            for url in (up, *(f"http://127.0.0.1:{p}" for p in ports[1:])):
                wait_ready(url)
            httpx.post(up + "/admin/config", json={"tokens": WORDS}).raise_for_status()
            plain_ends = word_ends("".join(WORDS))
            redacted_ends = word_ends(redact_text("".join(WORDS), frozenset(DETECTORS), lambda kind: None))
            runs: dict[str, list[list[float | None]]] = {"plain": [], "redacting": []}
            for _ in range(args.requests):
                runs["plain"].append(word_arrivals(f"http://127.0.0.1:{ports[1]}", plain_ends))
                runs["redacting"].append(word_arrivals(f"http://127.0.0.1:{ports[2]}", redacted_ends))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    first = {k: statistics.median(r[0] for r in v) * 1000 for k, v in runs.items()}  # type: ignore[misc]
    common = [i for i in range(len(WORDS)) if plain_ends[i] is not None and redacted_ends[i] is not None]
    lags = [statistics.median(b[i] - a[i] for a, b in zip(runs["plain"], runs["redacting"]))  # type: ignore[operator]
            for i in common]
    lag = statistics.median(lags) * 1000
    print(f"through a gateway, {args.requests} requests each, {args.tokens_per_second:g} tokens/s: "
          f"first text {first['plain']:.1f} ms plain, {first['redacting']:.1f} ms redacting "
          f"(+{first['redacting'] - first['plain']:.1f}); each word reaches the client +{lag:.1f} ms later "
          f"(median over {len(common)} words outside the redacted items; max {max(lags) * 1000:.1f} ms)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--end-to-end", action="store_true", help="also time streams through two real gateways")
    parser.add_argument("--tokens-per-second", type=float, default=50.0, help="the fake upstream's pace")
    parser.add_argument("--requests", type=int, default=20, help="streamed requests per gateway")
    args = parser.parse_args()
    rounds = 2000
    plain = statistics.median(asyncio.run(run(False, rounds))[0] for _ in range(3))
    redacted, out = 0.0, []
    times = []
    for _ in range(3):
        t, out = asyncio.run(run(True, rounds))
        times.append(t)
    redacted = statistics.median(times)
    print(f"{len(CHUNKS)} chunks x {rounds}: plain send {plain * 1e6:.2f} us/chunk, "
          f"redacting {redacted * 1e6:.2f} us/chunk: +{(redacted - plain) * 1e6:.2f} us/chunk")
    ends = word_ends(redact_text("".join(WORDS), frozenset(DETECTORS), lambda kind: None))
    held = lags(out, ends)
    outside = [h for h, end in zip(held, ends) if end is not None]
    print(f"chunks held after each word: first chunk {held[0]}, mean {statistics.mean(held):.2f}, max {max(held)}; "
          f"after the {len(outside)} words outside the redacted items: mean {statistics.mean(outside):.2f}, "
          f"max {max(outside)}")
    print("sent:", "".join(out))
    if args.end_to_end:
        end_to_end(args)


if __name__ == "__main__":
    main()
