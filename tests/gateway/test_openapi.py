"""The gateway's OpenAPI document, and schemathesis fuzzing a real gateway with it: valid and
invalid bodies, a bounded number of examples per route; no 5xx, every error OpenAI-shaped.
The file and batch routes are fuzzed through a gateway in front of a real `kvserve serve`."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from tests.helpers import wait_until
from tests.server.conftest import start_server

from .conftest import bearer, chat, fast_config, make_key

EXAMPLES = 100  # per route: the whole module runs in well under a minute on 2 cores
BATCH_EXAMPLES = 12  # per file and batch route (9 of them, valid and invalid): a real replica answers them


@pytest.fixture
def keyed_gateway(upstream, gateway, tmp_path):
    up = upstream(num_tokens=3)
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, requests_per_minute=10**6, tokens_per_minute=10**9)
    gw = gateway(fast_config({"fake": {"pool": {"endpoints": [up.url]}}}, auth={"enabled": True, "keys_file": str(keys)},
                             cache={"enabled": True}, feedback={"enabled": True}))
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
    feedback = doc["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert feedback["required"] == ["id"] and feedback["properties"]["thumbs"]["enum"] == ["up", "down"]
    assert "/v1/batches" not in doc["paths"]  # batches are off in this gateway: not documented, 404


def test_a_documented_feedback_body_is_taken(keyed_gateway):
    gw, key = keyed_gateway
    answer = httpx.post(gw.url + "/v1/chat/completions", json=chat("fake"), headers=bearer(key), timeout=10)
    request_id = answer.headers["x-request-id"]
    wait_until(lambda: httpx.post(gw.url + "/v1/feedback", json={"id": request_id, "score": 0.5},
                                  headers=bearer(key), timeout=10).status_code == 200, 10, "the answer was not scored")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_5xx_and_openai_shaped_errors(case, keyed_gateway):
    _, key = keyed_gateway
    response = case.call(headers=bearer(key), timeout=10)
    assert response.status_code < 500, (response.status_code, response.text[:500], case.body)
    if response.status_code >= 400 and case.path.startswith("/v1/"):
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= set(error), response.text[:500]


UPSTREAM_KEY = "upstream-secret"


@pytest.fixture(scope="module")
def replica(tiny_llama, tmp_path_factory):
    """A real `kvserve serve` that keeps files and runs batch jobs behind the gateway."""
    proc = start_server(tmp_path_factory, tiny_llama, "--served-model-name", "tiny", "--max-model-len", "256",
                        "--api-key", UPSTREAM_KEY)
    yield proc
    proc.stop()


@pytest.fixture
def batch_routes_schema(replica, gateway, tmp_path):
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, requests_per_minute=10**6, tokens_per_minute=10**9)
    models = {"tiny": {"pool": {"endpoints": [{"url": replica.url, "api_key": UPSTREAM_KEY}]}}}
    gw = gateway(fast_config(models, auth={"enabled": True, "keys_file": str(keys)},
                             batches={"enabled": True, "url": replica.url, "api_key": UPSTREAM_KEY,
                                      "max_file_bytes": 100_000}))
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=BATCH_EXAMPLES)
    schema.config.headers = bearer(key)
    return schema


batch_routes = schemathesis.pytest.from_fixture("batch_routes_schema").include(path_regex="^/v1/(files|batches)")


@batch_routes.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_file_and_batch_calls_get_no_5xx_and_openai_shaped_errors(case):
    response = case.call(timeout=10)
    assert response.status_code < 500, (response.status_code, response.text[:500], case.path)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= set(error), response.text[:500]
