"""The admin API's rollout calls (under /admin/rollouts, with the admin key):

    POST /admin/rollouts                   {"model", "from", "to", "steps", "bake_s", "thresholds", "tag"}
    GET  /admin/rollouts                   every model's latest rollout
    GET  /admin/rollouts/{model}           one
    POST /admin/rollouts/{model}/pause     {"reason"}
    POST /admin/rollouts/{model}/resume
    POST /admin/rollouts/{model}/abort     {"reason"}

Bodies are checked field by field; a bad one is a 400 naming the field.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Awaitable, Callable

from kvserve.control.ref import ModelRef, RefError, check_part
from kvserve.control.rollout import RolloutError, RolloutPlan, Thresholds
from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.errors import bad_request, not_found
from kvserve.gateway.rollouts.controller import RolloutConflict, RolloutController
from kvserve.gateway.rollouts.record import Rollout, TagMove
from kvserve.gateway.routing.table import RoutingTable
from kvserve.openai_error import OpenAIError

PREFIX = "/admin/rollouts"
START_FIELDS = {"model", "from", "to", "steps", "bake_s", "thresholds", "tag", "tag_ref"}
THRESHOLDS = {f.name: f.type for f in fields(Thresholds)}
MAX_STEPS = 20
MAX_REASON = 500
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class RolloutAdmin:
    def __init__(self, controller: RolloutController, table: Callable[[], RoutingTable],
                 config: Callable[[], GatewayConfig]) -> None:
        self.controller = controller
        self.table = table
        self.config = config  # the current gateway config: what feeds the quality thresholds

    def route(self, method: str, path: str) -> Handler | None:
        """The handler of a rollout call, or None when the path is not one."""
        if path == PREFIX:
            return {"POST": self.start, "GET": self.list}.get(method)
        if not path.startswith(PREFIX + "/"):
            return None
        rest = path[len(PREFIX) + 1:]
        model, _, action = rest.rpartition("/")
        actions = {"pause": self.pause, "resume": self.resume, "abort": self.abort}
        if method == "POST" and model and action in actions:
            return lambda body: actions[action](model, body)
        if method == "GET" and rest:
            return lambda _: self.show(rest)
        return None

    async def start(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - START_FIELDS)
        if unknown:
            raise bad_request(f"unknown field(s): {', '.join(unknown)}", unknown[0])
        model, baseline, candidate = (_text(body, "model"), _text(body, "from"), _text(body, "to"))
        self._check_versions(model, baseline, candidate)
        plan = _plan(body)
        self._check_quality(plan.thresholds, model, candidate)
        tag = self._tag(body, model, candidate)
        try:
            rollout = await self.controller.begin(model, baseline, candidate, plan, tag)
        except RolloutConflict as exc:
            raise conflict(str(exc)) from None
        return rollout.describe(self.controller.clock())

    async def list(self, _: dict[str, Any]) -> dict[str, Any]:
        now = self.controller.clock()
        rollouts = sorted(self.controller.rollouts.values(), key=lambda r: r.model)
        return {"object": "list", "data": [r.describe(now) for r in rollouts]}

    async def show(self, model: str) -> dict[str, Any]:
        return self._rollout(model).describe(self.controller.clock())

    async def pause(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        self._rollout(model)
        return await self._act(self.controller.pause(model, _reason(body, "paused by operator")))

    async def resume(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        self._rollout(model)
        return await self._act(self.controller.resume(model))

    async def abort(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        self._rollout(model)
        return await self._act(self.controller.abort(model, _reason(body, "aborted by operator")))

    async def _act(self, action: Awaitable[Rollout]) -> dict[str, Any]:
        try:
            rollout = await action
        except RolloutError as exc:
            raise conflict(str(exc)) from None
        return rollout.describe(self.controller.clock())

    def _rollout(self, model: str) -> Rollout:
        try:
            return self.controller.get(model)
        except KeyError:
            raise OpenAIError(404, f"model '{model}' has no rollout", "invalid_request_error",
                              code="rollout_not_found") from None

    def _check_versions(self, model: str, baseline: str, candidate: str) -> None:
        route = self.table().model(model)  # 404 for an unknown model
        for param, name in (("from", baseline), ("to", candidate)):
            if name not in route.versions:
                raise not_found(f"model '{model}' has no version '{name}'", param)
        if baseline == candidate:
            raise bad_request("'from' and 'to' must be different versions", "to")

    def _check_quality(self, t: Thresholds, model: str, candidate: str) -> None:
        """A quality threshold nothing measures would hold the rollout for ever: refuse it now."""
        config = self.config()
        shadow = config.shadow.models.get(model)
        if t.judges_shadow and (shadow is None or shadow.candidate != candidate):
            raise bad_request(f"shadow thresholds need shadow.models.{model}.candidate: {candidate} in the gateway "
                              "config (B's answers are compared with A's on shadow copies)", "thresholds")
        if t.min_shadow_similarity is not None and not config.shadow.similarity:
            raise bad_request("min_shadow_similarity needs shadow.similarity: true in the gateway config", "thresholds")
        if t.min_feedback_score is not None and not config.feedback.enabled:
            raise bad_request("min_feedback_score needs feedback.enabled in the gateway config", "thresholds")

    def _tag(self, body: dict[str, Any], model: str, candidate: str) -> TagMove | None:
        if body.get("tag") is None:
            if body.get("tag_ref") is not None:
                raise bad_request("'tag_ref' needs 'tag'", "tag_ref")
            return None
        if self.controller.registry is None:
            raise bad_request("'tag' needs a registry: set rollouts.registry in the gateway config", "tag")
        try:
            tag = check_part("tag", _text(body, "tag"))
            ref = ModelRef.parse(_text(body, "tag_ref") if body.get("tag_ref") is not None else f"{model}:{candidate}")
        except RefError as exc:
            raise bad_request(str(exc), "tag_ref" if "tag_ref" in body else "tag") from None
        if ref.version is None:
            raise bad_request("'tag_ref' must name a version (NAME:VERSION)", "tag_ref")
        return TagMove(tag, str(ref))


def conflict(message: str) -> OpenAIError:
    return OpenAIError(409, message, "invalid_request_error", code="rollout_conflict")


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise bad_request(f"'{name}' must be a non-empty string", name)
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plan(body: dict[str, Any]) -> RolloutPlan:
    default = RolloutPlan()
    steps = body.get("steps", list(default.steps))
    if not isinstance(steps, list) or not steps or len(steps) > MAX_STEPS or not all(_number(s) for s in steps):
        raise bad_request(f"'steps' must be a list of 1 to {MAX_STEPS} percentages", "steps")
    bake_s = body.get("bake_s", default.bake_s)
    if not _number(bake_s) or bake_s <= 0:
        raise bad_request("'bake_s' must be a positive number of seconds", "bake_s")
    thresholds = _thresholds(body.get("thresholds", {}))
    try:
        return RolloutPlan(tuple(float(s) for s in steps), float(bake_s), thresholds)
    except RolloutError as exc:
        raise bad_request(str(exc), "steps") from None


def _thresholds(given: Any) -> Thresholds:
    if not isinstance(given, dict):
        raise bad_request("'thresholds' must be an object", "thresholds")
    for name, value in given.items():
        if name not in THRESHOLDS:
            raise bad_request(f"unknown threshold '{name}' (known: {', '.join(THRESHOLDS)})", "thresholds")
        whole, optional = THRESHOLDS[name] == "int", "None" in str(THRESHOLDS[name])
        if value is None and optional:
            continue  # not judged
        if not _number(value) or (whole and not isinstance(value, int)):
            kind = "an integer" if whole else "a number" + (" or null" if optional else "")
            raise bad_request(f"threshold '{name}' must be {kind}", "thresholds")
    try:
        return Thresholds(**given)
    except RolloutError as exc:
        raise bad_request(str(exc), "thresholds") from None


def _reason(body: dict[str, Any], default: str) -> str:
    unknown = sorted(set(body) - {"reason"})
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}", unknown[0])
    reason = body.get("reason", default)
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise bad_request(f"'reason' must be a string of at most {MAX_REASON} characters", "reason")
    return reason or default
