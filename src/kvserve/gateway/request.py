"""An incoming completion request, parsed once into what routing and the proxy need."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.errors import bad_request
from kvserve.gateway.routing.policies import RouteRequest
from kvserve.gateway.routing.versions import VersionRoute, split_model_name

VERSION_HEADER = b"x-model-version"
REQUEST_ID_HEADER = b"x-request-id"
TRACE_HEADERS = (b"traceparent", b"tracestate")  # W3C trace context, forwarded as is


@dataclass
class ClientRequest:
    """A parsed /v1/chat/completions or /v1/completions request."""

    path: str
    body: bytes  # as received
    payload: dict[str, Any]  # the parsed body
    model: str  # client-facing model name, without any @version
    pinned_version: str | None  # from model@version or the X-Model-Version header
    stream: bool
    priority: int  # lower runs first (vLLM's convention)
    request_id: str  # kept from X-Request-ID or generated
    trace: list[tuple[str, str]] = field(default_factory=list)  # W3C trace headers to forward
    route: RouteRequest = field(default_factory=RouteRequest)
    priority_set: bool = False  # the client sent the priority header
    overrides: dict[str, Any] = field(default_factory=dict)  # body fields the gateway changes upstream

    def upstream_body(self, version: VersionRoute, forward_priority: bool) -> bytes:
        """The body to send upstream: the original bytes unless the model name or the
        priority must change."""
        changes: dict[str, Any] = dict(self.overrides)
        if self.payload.get("model") != version.upstream_model:
            changes["model"] = version.upstream_model
        if forward_priority and self.payload.get("priority", 0) != self.priority:
            changes["priority"] = self.priority
        if not changes:
            return self.body
        return json.dumps({**self.payload, **changes}).encode()


def prompt_text(payload: dict[str, Any]) -> str:
    """The prompt as one string (roles included for chat), for hashing and length estimates."""
    messages = payload.get("messages")
    if isinstance(messages, list):
        return "".join(f"{m.get('role', '')}:{_content_text(m.get('content'))}\n" for m in messages
                       if isinstance(m, dict))
    prompt = payload.get("prompt", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


MAX_DEPTH = 64  # JSON nesting the gateway accepts; OpenAI bodies nest a few levels
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def parse_payload(body: bytes) -> dict[str, Any]:
    """The body as a JSON object whose fields the gateway reads have the right types."""
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nesting(body) > MAX_DEPTH:
        raise bad_request(f"the request body nests JSON deeper than {MAX_DEPTH} levels")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise bad_request("the request body must be a JSON object")
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise bad_request("'model' is required and must be a string", "model")
    return payload


def nesting(body: bytes) -> int:
    """The deepest bracket nesting outside JSON strings (only run when it could be deep)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", body)):
        depth += 1 if match.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def check_types(payload: dict[str, Any], chat: bool) -> None:
    """400 for a field the gateway itself reads when its type is wrong (the upstream checks the rest)."""
    if chat:
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise bad_request("'messages' must be a non-empty array of message objects", "messages")
    elif not isinstance(payload.get("prompt"), (str, list)):
        raise bad_request("'prompt' must be a string or an array", "prompt")
    if payload.get("stream") is not None and not isinstance(payload["stream"], bool):
        raise bad_request("'stream' must be a boolean", "stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    if options and options.get("include_usage") is not None and not isinstance(options["include_usage"], bool):
        raise bad_request("'stream_options.include_usage' must be a boolean", "stream_options")
    for name in ("max_tokens", "max_completion_tokens"):
        value = payload.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise bad_request(f"'{name}' must be a positive integer", name)


def pinned(model_field: str, header: bytes | None) -> tuple[str, str | None]:
    model, version = split_model_name(model_field)
    from_header = header.decode("latin-1").strip() if header is not None else ""
    if from_header:  # an empty header pins nothing
        if version is not None and version != from_header:
            raise bad_request(f"'{model_field}' conflicts with X-Model-Version: {from_header}", "model")
        version = from_header
    return model, version


class RequestParser:
    """Parses requests under one config (header names are encoded once, not per request)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.priority_header = config.priority.header.lower().encode()
        self.session_header = config.server.session_header.lower().encode()
        self.levels = config.priority.levels
        self.default_priority = config.priority.default
        self.chars_per_token = config.server.chars_per_token
        self.ids = random.Random()  # request ids need to be unique, not secret: no syscall per id
        self.wanted = {REQUEST_ID_HEADER, VERSION_HEADER, self.priority_header, self.session_header, *TRACE_HEADERS}

    def parse(self, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> ClientRequest:
        """Parse and validate; raises OpenAIError (400) on a malformed request."""
        payload = parse_payload(body)
        check_types(payload, path.endswith("chat/completions"))
        found = {k: v for k, v in headers if k in self.wanted}
        model, version = pinned(payload["model"], found.get(VERSION_HEADER))
        text = prompt_text(payload)
        request_id = found.get(REQUEST_ID_HEADER)
        return ClientRequest(
            path=path, body=body, payload=payload, model=model, pinned_version=version,
            stream=bool(payload.get("stream")),
            priority=self.priority(found.get(self.priority_header)),
            priority_set=self.priority_header in found,
            request_id=request_id.decode("latin-1") if request_id else f"{self.ids.getrandbits(128):032x}",
            trace=[(k.decode(), found[k].decode("latin-1")) for k in TRACE_HEADERS if k in found],
            route=RouteRequest(text, self.session_key(found.get(self.session_header), payload),
                               int(len(text) / self.chars_per_token)),
        )

    def priority(self, raw: bytes | None) -> int:
        if raw is None:
            return self.default_priority
        text = raw.decode("latin-1").strip()
        level = self.levels.get(text.lower())
        if level is not None:
            return level
        try:
            return int(text)
        except ValueError:
            names = ", ".join(self.levels)
            raise bad_request(f"header {self.priority_header.decode()}: expected an integer or one of {names}") from None

    @staticmethod
    def session_key(header: bytes | None, payload: dict[str, Any]) -> str | None:
        if header is not None:
            return header.decode("latin-1")
        user = payload.get("user")
        return user if isinstance(user, str) and user else None
