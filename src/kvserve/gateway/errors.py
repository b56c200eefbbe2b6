"""The gateway's common OpenAI-shaped errors (the error type is kvserve.openai_error's, shared with the server)."""

from __future__ import annotations

from kvserve.openai_error import OpenAIError


def bad_request(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", param=param, code="invalid_request")


def not_found(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(404, message, "invalid_request_error", param=param, code="model_not_found")


def no_endpoint(model: str, version: str) -> OpenAIError:
    message = f"no healthy endpoint for model '{model}' version '{version}'"
    return OpenAIError(503, message, "service_unavailable", code="no_healthy_endpoint")


def overloaded(retry_after_s: float) -> OpenAIError:
    seconds = str(max(1, round(retry_after_s)))
    return OpenAIError(429, "the model's endpoints are saturated; retry later or raise the request's priority",
                       "rate_limit_error", code="overloaded", headers={"retry-after": seconds})


def upstream_failed(reason: str) -> OpenAIError:
    return OpenAIError(502, f"upstream failed: {reason}", "server_error", code="upstream_error")


def upstream_timeout() -> OpenAIError:
    return OpenAIError(504, "upstream did not answer in time", "server_error", code="upstream_timeout")
