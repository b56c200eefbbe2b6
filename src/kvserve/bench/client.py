"""One streaming request to an OpenAI-compatible endpoint, timed chunk by chunk.

The client records raw timestamps (time.perf_counter seconds) and the server's usage
figures; every latency figure is derived later by kvserve.bench.metrics. A failure
never raises: it is recorded as an error type (`http_429:rate_limit_error`,
`timeout`, `connect_error`, ...), so that the counts of a run always add up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from kvserve.bench.datasets import SampleRequest
from kvserve.bench.record import RequestRecord

ENDPOINTS = ("/v1/completions", "/v1/chat/completions")


@dataclass
class Target:
    """The endpoint under test and how every request to it is shaped."""

    base_url: str  # server root, e.g. http://127.0.0.1:8000 (a trailing /v1 is dropped)
    model: str  # the `model` field of each request
    endpoint: str = "/v1/completions"  # /v1/completions | /v1/chat/completions
    api_key: str | None = None  # sent as `Authorization: Bearer <key>`
    allowed_hosts: tuple[str, ...] = ()  # non-loopback hosts the user explicitly allowed
    ignore_eos: bool = False  # ask the server to generate exactly max_tokens (vLLM/kvserve extension)
    temperature: float = 0.0  # sampling temperature of every request
    timeout_s: float = 300.0  # one request's limit, connection to last byte

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/").removesuffix("/v1")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {self.endpoint!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"request timeout must be positive, got {self.timeout_s}")
        check_host(self.base_url, self.allowed_hosts)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def check_host(base_url: str, allowed_hosts: tuple[str, ...] = ()) -> None:
    """Refuse any host that is not loopback unless it was allowed by name.

    The benchmark is a load generator: pointing it at someone else's server by mistake
    must take an explicit `--allow-host`. Names are not resolved (no DNS lookups).
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base URL must be http(s)://host[:port], got {base_url!r}")
    host = parts.hostname
    if host == "localhost" or host in allowed_hosts:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"refusing to load {host}: not a loopback address (allow it with --allow-host {host})")


def request_body(target: Target, sample: SampleRequest) -> dict:
    """The JSON body of a streaming request for `sample`, asking for usage in the last chunk."""
    body: dict = {
        "model": target.model,
        "max_tokens": sample.output_len,
        "temperature": target.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if target.ignore_eos:
        body["ignore_eos"] = True
    if target.endpoint == "/v1/chat/completions":
        messages = [{"role": "system", "content": sample.system}] if sample.system else []
        body["messages"] = messages + [{"role": "user", "content": sample.prompt}]
    else:
        body["prompt"] = completion_prompt(sample)
    return body


def completion_prompt(sample: SampleRequest) -> str | list[int]:
    """The `prompt` of a /v1/completions body: the token ids if the sample has them, else the text."""
    if sample.prompt_token_ids is not None:
        return list(sample.prompt_token_ids)
    return f"{sample.system}\n\n{sample.prompt}" if sample.system else sample.prompt


def _chunk_text(chunk: dict) -> str:
    """Output text a chunk carries, for either endpoint (role-only chunks carry none)."""
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        text += choice.get("text") or delta.get("content") or delta.get("reasoning_content") or ""
    return text


def _error_type(status: int | None, payload: str) -> tuple[str, str]:
    """(`http_<status>[:<type>]` or `stream:<type>`, message) from an OpenAI-shaped error body."""
    prefix = f"http_{status}" if status else "stream"
    try:
        error = json.loads(payload).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    kind = error.get("type") or error.get("code")
    name = f"{prefix}:{kind}" if kind else prefix
    return name, str(error.get("message") or payload[:200])


def _take_chunk(record: RequestRecord, payload: str, now: float) -> None:
    """Fold one `data:` payload into the record; sets `error` for an in-stream error."""
    chunk = json.loads(payload)
    if "error" in chunk:
        record.error, record.error_message = _error_type(None, payload)
        return
    if _chunk_text(chunk):
        record.chunk_times.append(now)
    usage = chunk.get("usage")
    if usage:
        record.prompt_tokens = usage.get("prompt_tokens")
        record.completion_tokens = usage.get("completion_tokens")


async def _read_stream(response: httpx.Response, record: RequestRecord) -> None:
    if response.status_code != 200:
        body = (await response.aread()).decode("utf-8", "replace")
        record.error, record.error_message = _error_type(response.status_code, body)
        return
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        _take_chunk(record, payload, time.perf_counter())
        if record.error:
            return
    record.error, record.error_message = "incomplete_stream", "the stream ended without [DONE]"


# exception class -> error type; the first match in order wins (subclasses first)
_EXCEPTION_TYPES: tuple[tuple[type[BaseException], str], ...] = (
    (asyncio.TimeoutError, "timeout"),  # TimeoutError itself from Python 3.11 on
    (httpx.TimeoutException, "timeout"),
    (httpx.ConnectError, "connect_error"),
    (httpx.RemoteProtocolError, "connection_lost"),
    (httpx.ReadError, "connection_lost"),
    (httpx.HTTPError, "http_error"),
    (json.JSONDecodeError, "bad_chunk"),
)


async def stream_request(client: httpx.AsyncClient, target: Target, sample: SampleRequest, record: RequestRecord) -> None:
    """Send `sample` and fill `record` in; returns normally whatever happens except cancellation.

    The caller owns `record` so that it can mark a request cancelled mid-stream.
    """
    try:
        await asyncio.wait_for(_exchange(client, target, sample, record), target.timeout_s)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a counted error type
        record.error = next((name for cls, name in _EXCEPTION_TYPES if isinstance(exc, cls)), type(exc).__name__)
        record.error_message = str(exc) or type(exc).__name__
    finally:
        record.end = time.perf_counter()


async def _exchange(client: httpx.AsyncClient, target: Target, sample: SampleRequest, record: RequestRecord) -> None:
    url = target.base_url + target.endpoint
    async with client.stream("POST", url, json=request_body(target, sample), headers=target.headers) as response:
        await _read_stream(response, record)


def new_client(max_connections: int | None) -> httpx.AsyncClient:
    """An HTTP client that never waits for a pooled connection below `max_connections`.

    Environment proxies are ignored: the targets are loopback or explicitly allowed hosts.
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None), trust_env=False)
