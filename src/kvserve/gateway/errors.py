"""OpenAI-shaped errors: every failure the gateway answers itself uses this body."""

from __future__ import annotations

import json


class GatewayError(Exception):
    """An error answered to the client as {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param
        self.headers = headers

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_request", param)


def not_found(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(404, message, "invalid_request_error", "model_not_found", param)


def no_endpoint(model: str, version: str) -> GatewayError:
    message = f"no healthy endpoint for model '{model}' version '{version}'"
    return GatewayError(503, message, "service_unavailable", "no_healthy_endpoint")


def overloaded(retry_after_s: float) -> GatewayError:
    seconds = str(max(1, round(retry_after_s))).encode()
    return GatewayError(
        429, "the model's endpoints are saturated; retry later or raise the request's priority",
        "rate_limit_error", "overloaded", headers=((b"retry-after", seconds),),
    )


def upstream_failed(reason: str) -> GatewayError:
    return GatewayError(502, f"upstream failed: {reason}", "server_error", "upstream_error")


def upstream_timeout() -> GatewayError:
    return GatewayError(504, "upstream did not answer in time", "server_error", "upstream_timeout")
