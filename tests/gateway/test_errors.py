"""OpenAI-shaped errors."""

from __future__ import annotations

import json

from kvserve.gateway.errors import GatewayError, no_endpoint, overloaded


def test_error_body_has_the_openai_shape():
    body = json.loads(GatewayError(400, "bad", "invalid_request_error", "c", "model").body())
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "model", "code": "c"}}
    assert no_endpoint("m", "v1").status == 503 and "m" in no_endpoint("m", "v1").message
    assert overloaded(0.2).headers == ((b"retry-after", b"1"),)
