"""`kvserve serve --speculative-config`: the same answers as without it, through the
OpenAI client (plain and streamed), and the acceptance counters in /metrics."""

from __future__ import annotations

import json

import openai
import pytest

from tests.server.conftest import MODEL_NAME, start_server

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}
PROMPTS = ["Hello world! Hello world! Hello world!", "def add(a, b):\n    return a + b\ndef add(a, b):\n"]


@pytest.fixture(scope="module")
def spec_server(tiny_llama, tmp_path_factory):
    proc = start_server(tmp_path_factory, tiny_llama, "--served-model-name", MODEL_NAME, "--max-model-len", "256",
                        "--speculative-config", json.dumps(NGRAM))
    yield proc
    proc.stop()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def complete(server, prompt: str) -> tuple[str, int]:
    """(text, completion tokens) of a greedy completion."""
    answer = client(server).completions.create(model=MODEL_NAME, prompt=prompt, temperature=0, max_tokens=40)
    return answer.choices[0].text, answer.usage.completion_tokens


def test_answers_match_the_server_without_speculation_and_drafts_are_counted(server, spec_server):
    before, generated = spec_server.metrics(), 0
    for prompt in PROMPTS:
        expected = complete(server, prompt)
        assert complete(spec_server, prompt) == expected
        stream = client(spec_server).completions.create(model=MODEL_NAME, prompt=prompt, temperature=0,
                                                        max_tokens=40, stream=True)
        assert "".join(chunk.choices[0].text for chunk in stream) == expected[0]
        generated += 2 * expected[1]
    after = spec_server.wait_idle()
    drafts = after["vllm:spec_decode_num_draft_tokens_total"] - before.get("vllm:spec_decode_num_draft_tokens_total")
    accepted = after["vllm:spec_decode_num_accepted_tokens_total"] - before.get(
        "vllm:spec_decode_num_accepted_tokens_total")
    assert after["vllm:spec_decode_num_drafts_total"] > 0 and 0 < accepted <= drafts
    assert after.value("vllm:spec_decode_num_accepted_tokens_per_pos_total", position="0") > 0
    assert after["kvserve:spec_decode_num_accepted_tokens_total"] == after["vllm:spec_decode_num_accepted_tokens_total"]
    logged = [json.loads(line[line.index("{"):]) for line in spec_server.log_path.read_text().splitlines()
              if '"event": "request"' in line and "spec_draft_tokens" in line]
    assert logged and all(0 <= r["spec_accepted_tokens"] <= r["spec_draft_tokens"] for r in logged)
    # several tokens a step, each counted
    assert after["vllm:generation_tokens_total"] - before.get("vllm:generation_tokens_total") == generated


def test_a_bad_speculative_config_stops_the_server_with_the_setting_named(tiny_llama, tmp_path):
    import subprocess

    from tests.helpers import kvserve

    result = subprocess.run(kvserve("serve", "--model", str(tiny_llama), "--speculative-config",
                                    '{"method": "ngram", "num_speculative_tokens": 99}'),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "num_speculative_tokens must be in 1..16" in result.stderr


@pytest.fixture(scope="module")
def draft_server(tiny_llama, tmp_path_factory):
    draft = {"method": "draft_model", "model": str(tiny_llama), "num_speculative_tokens": 3}
    proc = start_server(tmp_path_factory, tiny_llama, "--served-model-name", MODEL_NAME, "--max-model-len", "256",
                        "--speculative-config", json.dumps(draft))
    yield proc
    proc.stop()


def test_a_draft_model_server_answers_as_the_plain_one_with_every_draft_accepted(server, draft_server):
    """The target as its own draft: its proposals are the target's argmax."""
    before = draft_server.metrics()
    for prompt in PROMPTS:
        assert complete(draft_server, prompt) == complete(server, prompt)
    after = draft_server.wait_idle()
    drafts = after["vllm:spec_decode_num_draft_tokens_total"] - before.get("vllm:spec_decode_num_draft_tokens_total")
    accepted = after["vllm:spec_decode_num_accepted_tokens_total"] - before.get(
        "vllm:spec_decode_num_accepted_tokens_total")
    assert drafts > 0 and accepted == drafts


def test_a_draft_of_another_vocabulary_stops_the_server_with_the_reason(tiny_llama, tmp_path):
    import subprocess

    from tests.conftest import build_model
    from tests.helpers import kvserve

    draft = build_model("llama", tmp_path / "draft", vocab_size=400)
    result = subprocess.run(kvserve("serve", "--model", str(tiny_llama), "--speculative-config",
                                    json.dumps({"model": str(draft)})),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "has a vocabulary of 400 ids, the target 384" in result.stderr
