"""A request that leaves sampling out gets the model's recommended values
(generation_config.json, as vLLM's --generation-config auto); one that gives them wins."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from kvserve.config import ConfigError
from kvserve.sampling_defaults import load_sampling_defaults
from kvserve.server.errors import parse_body
from kvserve.server.protocol import ChatCompletionRequest
from kvserve.server.sampling import to_sampling_params
from tests.server.conftest import start_server

QWEN3_STYLE = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": [1, 2],
               "transformers_version": "4.51.0"}


def _params(body: str, defaults: dict):
    parsed = parse_body(ChatCompletionRequest, body.encode())
    return to_sampling_params(parsed, parsed.output_limit(), parsed.num_logprobs(), defaults)


def test_the_sampling_keys_of_generation_config_are_the_defaults(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(QWEN3_STYLE))
    defaults = load_sampling_defaults(tmp_path)
    assert defaults.values == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    assert "temperature=0.6 top_p=0.95 top_k=20" in defaults.describe()
    assert load_sampling_defaults(tmp_path, "none").values == {}
    assert load_sampling_defaults(tmp_path / "nothing-here").values == {}


def test_the_embedded_model_answers_greedily_by_default():
    assert load_sampling_defaults(None).values == {"temperature": 0.0}


def test_a_bad_generation_config_is_refused_naming_the_file(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"temperature": -1}')
    with pytest.raises(ConfigError, match="generation_config.json: temperature"):
        load_sampling_defaults(tmp_path)


def test_a_request_value_wins_over_the_default():
    defaults = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    messages = '"messages": [{"role": "user", "content": "x"}]'
    bare = _params("{" + messages + "}", defaults)
    assert (bare.temperature, bare.top_p, bare.top_k) == (0.6, 0.95, 20)
    given = _params("{" + messages + ', "temperature": 1.0, "top_k": 5, "top_p": null}', defaults)
    assert (given.temperature, given.top_p, given.top_k) == (1.0, 0.95, 5)  # null means "not given"
    assert _params("{" + messages + "}", {}).temperature == 1.0  # no defaults: OpenAI's 1.0


def test_a_served_model_samples_with_its_generation_config(tiny_llama, tmp_path, tmp_path_factory):
    model = tmp_path / "greedy-by-default"
    shutil.copytree(tiny_llama, model)
    (model / "generation_config.json").write_text(json.dumps({"temperature": 0.0, "eos_token_id": 2}))
    server = start_server(tmp_path_factory, model, "--served-model-name", "tiny")
    try:
        def text(**fields) -> str:
            body = {"model": "tiny", "prompt": "The capital of France is", "max_tokens": 24, **fields}
            return httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]

        greedy = text(temperature=0)
        assert [text() for _ in range(3)] == [greedy] * 3  # no temperature: the file's 0
        sampled = {text(temperature=1.0, seed=seed) for seed in range(3)}
        assert sampled != {greedy}  # a request's own temperature still samples
        assert "sampling defaults: temperature=0" in server.logs()
    finally:
        server.stop()
