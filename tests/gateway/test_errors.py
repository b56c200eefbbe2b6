"""OpenAI-shaped errors."""

from __future__ import annotations

import json

from kvserve.gateway.errors import no_endpoint, overloaded
from kvserve.openai_error import OpenAIError


def test_error_body_has_the_openai_shape():
    body = json.loads(OpenAIError(400, "bad", "invalid_request_error", param="model", code="c").body_bytes())
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "model", "code": "c"}}
    assert no_endpoint("m", "v1").status == 503 and "m" in no_endpoint("m", "v1").message
    assert overloaded(0.2).headers == {"retry-after": "1"}
