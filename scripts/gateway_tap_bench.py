"""Cost of the gateway's response tap per relayed SSE chunk (access features on, no
resumable stream, no cache capture): the per-chunk part of the gateway's overhead that
is its own code, apart from uvicorn and the upstream connection.

    python scripts/gateway_tap_bench.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kvserve.gateway.tap import ResponseTap

CHUNK = (b'data: {"id":"chatcmpl-0123456789abcdef01234567","object":"chat.completion.chunk","created":1764590000,'
         b'"model":"fake","choices":[{"index":0,"delta":{"content":"tok1 "},"logprobs":null,"finish_reason":null}]}'
         b"\n\n")


async def sink(message: dict[str, Any]) -> None:
    return None


async def main(n: int = 200_000) -> None:
    tap = ResponseTap(sink, stream=True, chat=True, wants_usage=False, headers=[])
    await tap({"type": "http.response.start", "status": 200, "headers": []})
    message = {"type": "http.response.body", "body": CHUNK, "more_body": True}
    start = time.perf_counter()
    for _ in range(n):
        await tap(message)
    print(f"tap: {(time.perf_counter() - start) / n * 1e6:.2f} us per {len(CHUNK)}-byte chunk ({n} chunks)")


if __name__ == "__main__":
    asyncio.run(main())
