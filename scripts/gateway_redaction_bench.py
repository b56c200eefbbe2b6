"""Cost of output redaction on a stream: CPU per chunk, and how far the text sent lags the text received.

    python scripts/gateway_redaction_bench.py

Feeds the SSE chunks of a chat answer (English text with an email, a phone number and a
card number in it, one word per chunk, as a tokenizer splits it) through the gateway's
`RedactingSend` with every kind on, and through a plain `send`, many times; prints the
added microseconds per chunk, then the lag: after each chunk, how many chunks' worth of
text are still held (the added time to first token is the first chunk's lag times the
inter-token latency; per-chunk latency grows by the lag the same way).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

from kvserve.gateway.access.pii import DETECTORS
from kvserve.gateway.access.redacting_send import RedactingSend

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


def lags(out: list[str]) -> list[int]:
    """After each word chunk: words received minus words whose text has been sent."""
    received, sent, result = 0, 0, []
    for i, word in enumerate(WORDS):
        received += len(word)
        sent += len(out[i])
        held = received - sent
        result.append(count_words_held(held, i))
    return result


def count_words_held(chars: int, last: int) -> int:
    n, i = 0, last
    while chars > 0 and i >= 0:
        chars -= len(WORDS[i])
        n, i = n + 1, i - 1
    return n


def main() -> None:
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
    held = lags(out)
    print(f"chunks held after each word: first chunk {held[0]}, mean {statistics.mean(held):.2f}, max {max(held)}")
    print("sent:", "".join(out))


if __name__ == "__main__":
    main()
