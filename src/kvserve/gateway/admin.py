"""The admin API under /admin/: runtime weights, draining and endpoints, reload, API keys, rollouts.

Every call needs the admin key (`Authorization: Bearer KEY` or `X-Admin-Key: KEY`),
compared in constant time. Changes made here last until the next config reload.
"""

from __future__ import annotations

import hmac
import inspect
import json
from typing import Any, Awaitable, Callable

from pydantic import ValidationError

from kvserve.gateway.admin_keys import KeysAdmin
from kvserve.gateway.audit_admin import audit_admin
from kvserve.gateway.config import ConfigError, EndpointConfig
from kvserve.gateway.errors import bad_request, not_found
from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.rollouts.admin import RolloutAdmin
from kvserve.gateway.routing.pool import Pool
from kvserve.gateway.routing.versions import VersionRoute
from kvserve.gateway.state import GatewayState
from kvserve.gateway.store.redis_link import RedisUnavailable
from kvserve.openai_error import OpenAIError

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any]], Any]  # returns a dict, or an awaitable of one


class AdminAPI:
    """ASGI handler for /admin/* paths; each action is a method taking the JSON body."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        keys = KeysAdmin(state)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/admin/state"): self.describe,
            ("POST", "/admin/weights"): self.set_weights,
            ("POST", "/admin/endpoints/drain"): self.drain,
            ("POST", "/admin/endpoints/undrain"): self.undrain,
            ("POST", "/admin/endpoints/add"): self.add_endpoint,
            ("POST", "/admin/endpoints/remove"): self.remove_endpoint,
            ("POST", "/admin/reload"): self.reload,
            ("GET", "/admin/usage"): self.usage,
            ("GET", "/admin/keys"): keys.list,
            ("POST", "/admin/keys"): keys.create,
            ("POST", "/admin/keys/revoke"): keys.revoke,
            ("GET", "/admin/quality"): lambda _: self.state.backends.quality.report(),  # shadow traffic, feedback
        }
        self.rollouts = RolloutAdmin(state.rollouts, lambda: state.table, lambda: state.config)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        request: dict[str, Any] = {}
        try:
            self.authorize(scope["headers"])
            handler = self.routes.get((scope["method"], scope["path"])) or \
                self.rollouts.route(scope["method"], scope["path"])
            if handler is None:
                raise OpenAIError(404, f"no admin route {scope['method']} {scope['path']}", code="not_found")
            request = await read_json(receive)
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
        except OpenAIError as error:
            status, body = error.status, error.body_bytes()
        else:
            status, body = 200, json.dumps(result).encode()
        audit_admin(self.state.backends.audit, scope["method"], scope["path"], status, request)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def authorize(self, headers: list[tuple[bytes, bytes]]) -> None:
        key = self.state.admin_key
        if key is None:
            raise OpenAIError(404, "the admin API is disabled (no admin key configured)", code="not_found")
        given = b""
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
            elif name == b"x-admin-key":
                given = value.strip()
        if not hmac.compare_digest(given, key.encode()):
            raise OpenAIError(401, "a valid admin key is required", "authentication_error", code="invalid_admin_key")

    def describe(self, _: dict[str, Any]) -> dict[str, Any]:
        state, now = self.state, self.state.clock()
        stale = state.config.scrape.interval_s * state.config.scrape.stale_after
        models = {
            name: {"sticky": model.sticky, "versions": {v.name: describe_version(v) for v in model.versions.values()}}
            for name, model in state.table.models.items()
        }
        endpoints = [e.describe(now, stale) for e in state.table.endpoints()]
        return {"draining": state.draining, "models": models, "endpoints": endpoints}

    def set_weights(self, body: dict[str, Any]) -> dict[str, Any]:
        model = self.state.table.model(str(body.get("model")))
        rollout = self.state.rollouts.rollouts.get(model.name)
        if rollout is not None and rollout.active:
            raise OpenAIError(409, f"model '{model.name}' has a {rollout.state.phase.value} rollout that sets its "
                              "weights; abort it first", "invalid_request_error", code="rollout_conflict")
        weights = body.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise bad_request("'weights' must map version names to numbers", "weights")
        for name, weight in weights.items():
            if name not in model.versions:
                raise not_found(f"model '{model.name}' has no version '{name}'", "weights")
            if not isinstance(weight, (int, float)) or weight < 0:
                raise bad_request(f"weight of '{name}' must be a number >= 0", "weights")
        for name, weight in weights.items():
            model.versions[name].weight = float(weight)
        return {"model": model.name, "weights": {v.name: v.weight for v in model.versions.values()}}

    def drain(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint(body)
        endpoint.draining = True
        return {"url": endpoint.url, "draining": True, "in_flight": endpoint.in_flight}

    def undrain(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint(body)
        endpoint.draining = False
        return {"url": endpoint.url, "draining": False, "in_flight": endpoint.in_flight}

    def add_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(body)
        try:
            config = EndpointConfig(url=body.get("url"), api_key=body.get("api_key"))
        except ValidationError as exc:
            raise bad_request(f"url: {exc.errors()[0]['msg']}", "url") from None
        pool.add(self.state.registry.get_or_create(config))
        self.state.sync_monitors()
        return {"url": config.url, "pool": [e.url for e in pool.endpoints]}

    def remove_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        url = str(body.get("url", "")).rstrip("/")
        removed = sum(pool.remove(url) for pool in self.state.table.pools())
        if not removed:
            raise not_found(f"no pool lists endpoint '{url}'", "url")
        self.state.registry.retain(e.url for e in self.state.table.endpoints())
        self.state.sync_monitors()
        return {"url": url, "removed_from_pools": removed}

    def reload(self, _: dict[str, Any]) -> dict[str, Any]:
        try:
            self.state.reload()
        except (ConfigError, RuntimeError) as exc:
            raise bad_request(str(exc)) from None
        return {"reloaded": str(self.state.config_path)}

    async def usage(self, _: dict[str, Any]) -> dict[str, Any]:
        """Requests, tokens and cache hits per tenant, key id and model (all gateways on one Redis)."""
        try:
            rows = await self.state.backends.limiter.usage()
        except RedisUnavailable:
            raise OpenAIError(503, "usage is kept in Redis, which is unavailable", "service_unavailable", code="redis_unavailable") from None
        return {"object": "list", "data": sorted(rows, key=lambda r: (r["tenant"], r["key_id"], r["model"]))}

    def _endpoint(self, body: dict[str, Any]) -> Endpoint:
        url = str(body.get("url", "")).rstrip("/")
        endpoint = self.state.registry.endpoints.get(url)
        if endpoint is None:
            raise not_found(f"unknown endpoint '{url}'", "url")
        return endpoint

    def _pool(self, body: dict[str, Any]) -> Pool:
        model = self.state.table.model(str(body.get("model")))
        name = body.get("version")
        if name is None and len(model.versions) == 1:
            name = next(iter(model.versions))
        version = model.versions.get(str(name))
        if version is None:
            raise not_found(f"model '{model.name}' has no version '{name}'", "version")
        if body.get("long_prompt"):
            if version.long_pool is None:
                raise bad_request(f"version '{version.name}' has no long_prompt pool", "long_prompt")
            return version.long_pool
        return version.pool


def describe_version(version: VersionRoute) -> dict[str, Any]:
    out: dict[str, Any] = {"weight": version.weight, "upstream_model": version.upstream_model,
                           "pool": describe_pool(version.pool)}
    if version.long_pool is not None:
        out["long_prompt"] = {"threshold_tokens": version.long_threshold, "pool": describe_pool(version.long_pool)}
    return out


def describe_pool(pool: Pool) -> dict[str, Any]:
    return {"policy": pool.policy_name, "endpoints": [e.url for e in pool.endpoints]}


async def read_json(receive: Receive, limit: int = 1 << 20) -> dict[str, Any]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OpenAIError(400, "client went away")
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise OpenAIError(413, "admin request body too large")
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body
