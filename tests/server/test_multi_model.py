"""Many models in one `kvserve serve`: a real server over a private registry, routing by
`model`, loading on demand, LRU eviction under the memory budget, idle unloading, and the
errors a client sees (404 unknown model, 503 + Retry-After when a model cannot fit)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.helpers import wait_until
from tests.server.conftest import RegistryHome

IDLE_UNLOAD_S = 6.0


@pytest.fixture(scope="module")
def multi(tiny_llama: Path, tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory):
    home = RegistryHome(tmp_path_factory.mktemp("multi"))
    home.push(tiny_llama, "llama:v1")
    home.push(tiny_qwen3, "qwen:v1")
    config = {
        # every model is said to take 0.04 GiB: the pinned one and one other fit in 0.1 GiB
        "models": [
            {"name": "main", "model": "llama:v1", "pinned": True, "memory_gib": 0.04},
            {"name": "qwen", "model": "qwen:v1", "memory_gib": 0.04},
            {"name": "local", "model": str(tiny_llama), "version": "2026-12-01", "memory_gib": 0.04},
            {"name": "huge", "model": str(tiny_llama), "memory_gib": 0.5},
            {"name": "impatient", "model": str(tiny_llama), "memory_gib": 0.001, "load_timeout_s": 0.1},
        ],
        "memory_budget_gib": 0.1,
        "idle_unload_s": IDLE_UNLOAD_S,
        "kv_cache_gib": 0.02,
        "max_model_len": 256,
    }
    path = home.root / "models.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = home.serve("--config", str(path))
    yield proc
    proc.stop()


def states(server) -> dict[str, tuple[str, str]]:
    data = httpx.get(server.url + "/v1/models").json()["data"]
    return {card["id"]: (card["state"], card["version"]) for card in data}


def chat(server, model: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=120.0, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})


def test_models_are_listed_with_version_and_state_and_only_the_pinned_one_is_loaded(multi):
    assert states(multi) == {"main": ("loaded", "llama:v1"), "qwen": ("available", "qwen:v1"),
                             "local": ("available", "2026-12-01"), "huge": ("available", "local"),
                             "impatient": ("available", "local")}


def test_requests_route_by_model_and_name_the_version_that_answered(multi):
    client = openai.OpenAI(base_url=multi.url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=4)  # loads qwen on demand
    reply = raw.parse()
    assert raw.headers["x-kvserve-model-version"] == "qwen:v1" == reply.system_fingerprint
    assert reply.model == "qwen"
    default = client.completions.with_raw_response.create(model="main", prompt="hello", max_tokens=2)
    assert default.headers["x-kvserve-model-version"] == "llama:v1" == default.parse().system_fingerprint
    assert states(multi)["qwen"] == ("loaded", "qwen:v1")


def test_loading_one_more_model_evicts_the_least_recently_used_unpinned_one(multi):
    assert chat(multi, "qwen").status_code == 200  # qwen (and the pinned main) are in memory
    reply = chat(multi, "local")
    assert reply.status_code == 200 and reply.headers["x-kvserve-model-version"] == "2026-12-01"
    now = states(multi)
    assert now["local"][0] == "loaded" and now["qwen"][0] == "available" and now["main"][0] == "loaded"


def test_a_model_that_cannot_fit_gets_503_with_retry_after(multi):
    reply = chat(multi, "huge")
    assert reply.status_code == 503 and int(reply.headers["retry-after"]) > 0
    error = reply.json()["error"]
    assert error["code"] == "model_does_not_fit" and error["type"] == "service_unavailable_error"
    assert "0.50 GiB" in error["message"]
    assert states(multi)["huge"][0] == "available"


def test_an_unknown_model_is_a_404_in_openai_shape(multi):
    client = openai.OpenAI(base_url=multi.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
    assert httpx.get(multi.url + "/v1/models/nope").status_code == 404


def test_idle_models_are_unloaded_and_the_pinned_one_stays(multi):
    assert chat(multi, "local").status_code == 200
    used = time.monotonic()
    wait_until(lambda: states(multi)["local"][0] == "available", IDLE_UNLOAD_S + 10, "local was not unloaded",
               step=0.2)
    assert time.monotonic() - used >= IDLE_UNLOAD_S - 0.5
    assert states(multi)["main"][0] == "loaded"


def test_a_request_that_waits_past_its_models_load_timeout_gets_503_and_the_load_goes_on(multi):
    reply = chat(multi, "impatient")  # an engine process cannot start in 0.1 s
    assert reply.status_code == 503 and int(reply.headers["retry-after"]) > 0
    assert reply.json()["error"]["code"] == "model_loading"
    wait_until(lambda: states(multi)["impatient"][0] == "loaded", 120, "the load did not go on", step=0.2)
    assert chat(multi, "impatient").status_code == 200
