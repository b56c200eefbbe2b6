"""The ASGI handler of `/v1/files` and `/v1/batches` at the gateway.

Each request is authenticated with the client's API key (its tenant; without keys, every
request is the anonymous tenant's), checked against what the tenant owns, and forwarded
to `batches.url` with the gateway's own upstream key. What the replica creates (files,
jobs, output files) is recorded as the tenant's; lists are filtered to the tenant's ids.
Creating a job counts the tenant's unfinished jobs and their lines against its quota (429).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from typing import Any, Awaitable, Callable

import httpx

from kvserve.gateway.access.auth import KeySource, authenticate
from kvserve.gateway.batches.owners import ActiveJob, Owners
from kvserve.gateway.batches_config import BatchesConfig
from kvserve.gateway.context import Receive, Scope, Send
from kvserve.gateway.proxy import send_error
from kvserve.gateway.state import GatewayState
from kvserve.gateway.store.redis_link import RedisUnavailable
from kvserve.openai_error import OpenAIError

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and fields around an upload
MAX_JSON_BYTES = 64 * 1024  # a job's create body
FINAL = ("completed", "failed", "cancelled", "expired")
ID = r"(?P<id>[A-Za-z0-9_-]{1,100})"
Handler = Callable[["Call"], Awaitable[None]]


class Call:
    """One request: who asks, what they sent, and how to answer."""

    def __init__(self, scope: Scope, send: Send, tenant: str, body: bytes, object_id: str | None) -> None:
        self.scope, self.send, self.tenant, self.body, self.id = scope, send, tenant, body, object_id

    @property
    def query(self) -> str:
        return self.scope.get("query_string", b"").decode("latin-1")

    def header(self, name: bytes) -> str | None:
        return next((v.decode("latin-1") for k, v in self.scope["headers"] if k == name), None)


class BatchesAPI:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._client: httpx.AsyncClient | None = None
        self._keys: tuple[object, KeySource | None] = (None, None)  # (the config they were built for, keys)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # one job creation per tenant
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"/v1/files"), self.upload),
            ("GET", re.compile(r"/v1/files"), self.list_files),
            ("GET", re.compile(rf"/v1/files/{ID}"), self.owned),
            ("GET", re.compile(rf"/v1/files/{ID}/content"), self.content),
            ("DELETE", re.compile(rf"/v1/files/{ID}"), self.delete_file),
            ("POST", re.compile(r"/v1/batches"), self.create_batch),
            ("GET", re.compile(r"/v1/batches"), self.list_batches),
            ("GET", re.compile(rf"/v1/batches/{ID}"), self.batch),
            ("POST", re.compile(rf"/v1/batches/{ID}/cancel"), self.batch),
        ]

    @property
    def config(self) -> BatchesConfig:
        return self.state.config.batches

    @property
    def owners(self) -> Owners:
        return Owners(self.state.backends.store, self.config.record_ttl_s)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if not self.config.enabled:
                raise OpenAIError(404, f"no route {scope['method']} {scope['path']}", code="not_found")
            handler, object_id = self._route(scope["method"], scope["path"])
            tenant = await self._tenant(scope)
            limit = self.config.max_file_bytes + FORM_OVERHEAD if handler == self.upload else MAX_JSON_BYTES
            await handler(Call(scope, send, tenant, await read_body(scope, receive, limit), object_id))
        except OpenAIError as error:
            await send_error(send, error)
        except RedisUnavailable:
            await send_error(send, OpenAIError(503, "cannot check ownership right now", "service_unavailable_error",
                                               code="store_unavailable"))
        except httpx.HTTPError:
            await send_error(send, OpenAIError(502, "the batch replica did not answer", "server_error",
                                               code="upstream_unavailable"))

    def _route(self, method: str, path: str) -> tuple[Handler, str | None]:
        known = False
        for verb, pattern, handler in self.routes:
            found = pattern.fullmatch(path)
            if found is not None:
                known = True
                if verb == method:
                    return handler, found.groupdict().get("id")
        if known:
            raise OpenAIError(405, f"{path} does not answer {method}", code="method_not_allowed")
        raise OpenAIError(404, f"no route {method} {path}", code="not_found")

    async def _tenant(self, scope: Scope) -> str:
        config = self.state.config
        if self._keys[0] is not config:  # built once per config (a reload may change the key store)
            self._keys = (config, self.state.backends.keys(config))
        keys = self._keys[1]
        if keys is None:
            return "anonymous"
        return (await authenticate(keys, scope["headers"])).tenant

    # ---- files ----

    async def upload(self, call: Call) -> None:
        if len(call.body) > self.config.max_file_bytes + FORM_OVERHEAD:
            raise too_large(self.config.max_file_bytes)
        response = await self._forward(call, "POST", "/v1/files", call.body, call.header(b"content-type"))
        if response.status_code == 200:
            file_id = response.json()["id"]
            await self.owners.claim(file_id, call.tenant)
            await self.owners.set_lines(file_id, count_lines(call.body))
        await relay(call.send, response)

    async def list_files(self, call: Call) -> None:
        await self._filtered(call, "/v1/files")

    async def owned(self, call: Call) -> None:
        await self._check_owner(call, "file")
        await relay(call.send, await self._forward(call, "GET", call.scope["path"]))

    async def content(self, call: Call) -> None:
        await self._check_owner(call, "file")
        await self._stream(call, call.scope["path"])

    async def delete_file(self, call: Call) -> None:
        await self._check_owner(call, "file")
        response = await self._forward(call, "DELETE", call.scope["path"])
        if response.status_code == 200:
            await self.owners.forget(call.id or "")
        await relay(call.send, response)

    # ---- batches ----

    async def create_batch(self, call: Call) -> None:
        try:
            input_file_id = json.loads(call.body)["input_file_id"]
        except (ValueError, KeyError, TypeError):
            input_file_id = None
        if not isinstance(input_file_id, str) or not await self.owners.owns(input_file_id, call.tenant):
            raise OpenAIError(400, "No file with purpose 'batch' has this input_file_id.", param="input_file_id",
                              code="invalid_value")
        async with self._locks[call.tenant]:
            lines = await self.owners.lines(input_file_id)
            active = await self._check_quota(call, lines)
            response = await self._forward(call, "POST", "/v1/batches", call.body, "application/json")
            if response.status_code == 200:
                batch = response.json()
                await self.owners.claim(batch["id"], call.tenant)
                await self.owners.set_active(call.tenant, [*active, ActiveJob(batch["id"], lines)])
        await relay(call.send, response)

    async def list_batches(self, call: Call) -> None:
        await self._filtered(call, "/v1/batches")

    async def batch(self, call: Call) -> None:
        await self._check_owner(call, "batch")
        response = await self._forward(call, call.scope["method"], call.scope["path"], b"" if call.body else None)
        if response.status_code == 200:
            await self._claim_outputs(response.json(), call.tenant)
        await relay(call.send, response)

    async def _check_quota(self, call: Call, lines: int) -> list[ActiveJob]:
        """The tenant's unfinished jobs (asked of the replica); 429 if one more would pass its quota."""
        quota = self.config.quota_of(call.tenant)
        active = []
        for job in await self.owners.active(call.tenant):
            response = await self._forward(call, "GET", f"/v1/batches/{job.id}")
            if response.status_code == 200 and response.json()["status"] not in FINAL:
                active.append(job)
        if quota.max_active_batches and len(active) >= quota.max_active_batches:
            raise quota_exceeded(f"at most {quota.max_active_batches} unfinished batches per tenant")
        if quota.max_lines and sum(j.lines for j in active) + lines > quota.max_lines:
            raise quota_exceeded(f"at most {quota.max_lines} lines in a tenant's unfinished batches")
        return active

    async def _claim_outputs(self, batch: dict[str, Any], tenant: str) -> None:
        for field in ("output_file_id", "error_file_id"):
            if batch.get(field):
                await self.owners.claim(batch[field], tenant)

    async def _check_owner(self, call: Call, kind: str) -> None:
        if call.id is None or not await self.owners.owns(call.id, call.tenant):
            raise OpenAIError(404, f"No {kind} found with id '{call.id}'.", param="id", code="not_found")

    async def _filtered(self, call: Call, path: str) -> None:
        """A list page of the replica, keeping only the tenant's ids."""
        response = await self._forward(call, "GET", path)
        if response.status_code != 200:
            await relay(call.send, response)
            return
        page = response.json()
        mine = []
        for item in page["data"]:
            if await self.owners.owns(item["id"], call.tenant):
                mine.append(item)
                if item.get("object") == "batch":
                    await self._claim_outputs(item, call.tenant)
        page.update(data=mine, first_id=mine[0]["id"] if mine else None, last_id=mine[-1]["id"] if mine else None)
        await respond(call.send, 200, json.dumps(page).encode())

    # ---- the replica ----

    def _upstream(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=self.state.config.timeouts.connect_s))
        return self._client

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"content-type": content_type} if content_type else {}
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key}"
        return headers

    async def _forward(self, call: Call, method: str, path: str, body: bytes | None = None,
                       content_type: str | None = None) -> httpx.Response:
        url = f"{self.config.url}{path}" + (f"?{call.query}" if call.query and method == "GET" else "")
        return await self._upstream().request(method, url, content=body, headers=self._headers(content_type))

    async def _stream(self, call: Call, path: str) -> None:
        request = self._upstream().build_request("GET", f"{self.config.url}{path}", headers=self._headers())
        response = await self._upstream().send(request, stream=True)
        try:
            content_type = response.headers.get("content-type", "application/octet-stream").encode()
            await call.send({"type": "http.response.start", "status": response.status_code,
                             "headers": [(b"content-type", content_type)]})
            async for chunk in response.aiter_bytes():
                await call.send({"type": "http.response.body", "body": chunk, "more_body": True})
            await call.send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OpenAIError(499, "the client closed the connection", code="client_closed_request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def count_lines(form: bytes) -> int:
    """Requests in an uploaded JSONL file, for the quota: the lines that name a custom_id (the
    multipart frame's own lines name none; a line without one is an error row, not a request)."""
    return sum(1 for line in form.split(b"\n") if b'"custom_id"' in line)


async def relay(send: Send, response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "application/json").encode()
    await respond(send, response.status_code, response.content, content_type)


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def too_large(limit: int) -> OpenAIError:
    return OpenAIError(413, f"The file is larger than this gateway accepts ({limit} bytes).", param="file",
                       code="file_too_large")


def quota_exceeded(what: str) -> OpenAIError:
    return OpenAIError(429, f"Batch quota exceeded: {what}. Wait for a batch to finish.", "rate_limit_error",
                       code="batch_quota_exceeded")
