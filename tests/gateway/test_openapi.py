"""The gateway's OpenAPI document, and schemathesis fuzzing a real gateway with it: valid and
invalid bodies, a bounded number of examples per route; no 5xx, every error OpenAI-shaped."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from .conftest import bearer, fast_config, make_key

EXAMPLES = 100  # per route: the whole module runs in well under a minute on 2 cores


@pytest.fixture
def keyed_gateway(upstream, gateway, tmp_path):
    up = upstream(num_tokens=3)
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, requests_per_minute=10**6, tokens_per_minute=10**9)
    gw = gateway(fast_config({"fake": {"pool": {"endpoints": [up.url]}}}, auth={"enabled": True, "keys_file": str(keys)},
                             cache={"enabled": True}))
    return gw, key


@pytest.fixture
def gateway_schema(keyed_gateway):
    gw, key = keyed_gateway
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=EXAMPLES)
    schema.config.headers = bearer(key)
    return schema


schema = schemathesis.pytest.from_fixture("gateway_schema")


def test_the_document_describes_the_completion_bodies(keyed_gateway):
    gw, _ = keyed_gateway
    doc = httpx.get(gw.url + "/openapi.json").json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat["required"] == ["model", "messages"] and "stream_options" in chat["properties"]
    assert "prompt" in doc["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_5xx_and_openai_shaped_errors(case, keyed_gateway):
    _, key = keyed_gateway
    response = case.call(headers=bearer(key), timeout=10)
    assert response.status_code < 500, (response.status_code, response.text[:500], case.body)
    if response.status_code >= 400 and case.path.startswith("/v1/"):
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= set(error), response.text[:500]
