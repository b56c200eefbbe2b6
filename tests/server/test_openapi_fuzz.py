"""/openapi.json describes the real request bodies, and schemathesis, generating valid and
invalid requests from it against a real server, finds no 5xx and no error that is not
OpenAI-shaped JSON."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.slow  # a few hundred requests to a real server

EXAMPLES_PER_OPERATION = 30  # bounded: about a minute for the module on 2 busy cores
GENERATION_CAP = 8  # tokens and choices per fuzzed request: the fuzz is about input, not load


def test_the_document_describes_the_request_bodies(server):
    doc = httpx.get(server.url + "/openapi.json", timeout=10.0).json()
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CompletionRequest"}
    completion = schemas["CompletionRequest"]
    assert completion["additionalProperties"] is False and completion["required"] == ["prompt"]
    assert completion["properties"]["n"]["maximum"] == 128
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "TokenizeRequest" in schemas and "DetokenizeRequest" in schemas


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.check
def openai_shaped_errors(ctx, response, case) -> None:
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_5xx_and_shaped_errors(case):
    _cap_generation(case.body)
    response = case.call(timeout=60)
    case.validate_response(response, checks=[not_a_server_error, openai_shaped_errors])


def _cap_generation(body: object) -> None:
    if not isinstance(body, dict):
        return
    for name in ("max_tokens", "max_completion_tokens", "n", "best_of", "min_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > GENERATION_CAP:
            body[name] = GENERATION_CAP
