"""Cost of the gateway's end-of-stream cache work per request: building the response-cache
entry from the relayed SSE bytes and serialising it (`StreamAssembler.entry` +
`Entry.dumps`), over streams shaped as `kvserve serve` and the fake upstream send them.
The per-chunk `add` happens on the answer's path and is not counted.

    python scripts/gateway_cache_entry_bench.py [--tokens 32 64 256] [--repeat 5]

Prints the best of `--repeat` means, in µs per request.
"""

from __future__ import annotations

import argparse
import time

from kvserve.bench.fake_answers import Completion
from kvserve.gateway.store.cache import StreamAssembler
from kvserve.server import sse

WORDS = ["The", " cache", " keeps", " each", " answer", "'s", " text", ",", " \"quoted\"", " and", " café",
         "\n", " 42", "."]


def kvserve_stream(n: int) -> list[bytes]:
    """The events of a chat stream as `kvserve serve` writes them (usage asked for)."""
    head = {"id": "chatcmpl-0123456789abcdef", "object": "chat.completion.chunk", "created": 1764590000,
            "model": "smollm2"}
    fast = sse.ChunkEncoder("chat.completion.chunk", head["id"], head["created"], head["model"],
                            ',"usage":null,"system_fingerprint":"fp_kvserve"')
    role = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}], "usage": None, "system_fingerprint": "fp_kvserve"}
    events = [sse.event(sse.dumps(role))]
    for i in range(n):
        finish = "length" if i == n - 1 else None
        events.append(fast.event({"index": 0, "delta": {"content": WORDS[i % len(WORDS)]}, "logprobs": None,
                                  "finish_reason": finish, "stop_reason": None}))
    usage = {**head, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": n, "total_tokens": 20 + n}}
    return events + [sse.event(sse.dumps(usage)), sse.DONE]


def fake_stream(n: int) -> list[bytes]:
    """The events of a chat stream from the fake upstream (the gateway benchmarks' upstream)."""
    answer = Completion(chat=True, model="fake", prompt_tokens=20, n_tokens=n, tokens=WORDS)
    return [answer.token_chunk(i) for i in range(n)] + [answer.final_chunks(include_usage=True)]


def per_request_us(events: list[bytes], repeat: int, loops: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        spent = 0.0
        for _ in range(loops):
            assembler = StreamAssembler(chat=True)
            for event in events:
                assembler.add(event)
            start = time.perf_counter()
            entry = assembler.entry()
            assert entry is not None
            entry.dumps()
            spent += time.perf_counter() - start
        best = min(best, spent / loops)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 64, 256])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--loops", type=int, default=200)
    args = parser.parse_args()
    for name, stream in (("kvserve", kvserve_stream), ("fake", fake_stream)):
        for n in args.tokens:
            us = per_request_us(stream(n), args.repeat, args.loops)
            print(f"{name:8s} {n:4d} tokens: {us:7.1f} us per request")


if __name__ == "__main__":
    main()
