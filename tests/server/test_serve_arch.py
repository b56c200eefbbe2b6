"""`kvserve serve --arch`: random weights of a named shape, served with the synthetic tokenizer."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.slow  # starts a server process (arch_server, shared by the session)


def complete(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/completions", json={"model": server.arch, **body}, timeout=60.0)


def test_the_model_is_served_under_the_arch_name(arch_server):
    models = httpx.get(arch_server.url + "/v1/models", timeout=10.0).json()["data"]
    assert [m["id"] for m in models] == [arch_server.arch]


def test_token_id_prompts_get_exactly_max_tokens_of_synthetic_text(arch_server):
    reply = complete(arch_server, prompt=[[3, 999, 0, 17], [5] * 40], max_tokens=6, ignore_eos=True)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["usage"]["prompt_tokens"] == 44 and body["usage"]["completion_tokens"] == 12
    for choice in body["choices"]:  # every sampled id detokenizes: " t<hex>" per token
        assert re.fullmatch(r"( t[0-9a-f]{1,3}){6}", choice["text"]), choice["text"]
        assert choice["finish_reason"] == "length"


def test_streamed_token_id_prompt_reports_usage(arch_server):
    body = {"model": arch_server.arch, "prompt": list(range(100)), "max_tokens": 4, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", arch_server.url + "/v1/completions", json=body, timeout=60.0) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    assert '"prompt_tokens":100' in lines[-2].replace(" ", "") and '"completion_tokens":4' in lines[-2].replace(" ", "")


def test_ids_outside_the_shapes_vocabulary_are_refused(arch_server):
    reply = complete(arch_server, prompt=[1, 1000], max_tokens=2)
    assert reply.status_code == 400 and "outside the vocabulary" in reply.json()["error"]["message"]
