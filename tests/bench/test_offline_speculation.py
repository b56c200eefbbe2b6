"""`kvserve bench offline --speculative-config`: the workload without speculation, then
with it, on one engine; identical greedy outputs and the acceptance figures in the report."""

import json

import pytest

from kvserve.bench.copy_prompts import copy_prompts, novel_prompts
from kvserve.bench.offline import WORKLOADS, make_requests
from kvserve.cli.main import main
from kvserve.tokenizer import load_tokenizer
from tests.conftest import build_model


@pytest.fixture(scope="module")
def long_llama(tmp_path_factory):
    """The tiny Llama with room for a copy prompt (its small tokenizer spends many tokens on one) and 400 more."""
    return build_model("llama", tmp_path_factory.mktemp("long-llama"), max_position_embeddings=2048)


def test_copy_prompts_are_chat_requests_that_quote_a_list_or_code(tiny_llama):
    prompts = copy_prompts(4, seed=0)
    assert prompts == copy_prompts(4, seed=0) and prompts != copy_prompts(4, seed=1)
    assert "Repeat the following list" in prompts[0] and "```python" in prompts[1]
    requests = make_requests(WORKLOADS["copy"], 0, 0, load_tokenizer(tiny_llama))
    assert len(requests) == 4 and all(n == 400 and len(ids) > 100 for ids, n in requests)
    assert all(p.startswith("Write a short original essay") for p in novel_prompts(4, 0))
    assert [n for _, n in make_requests(WORKLOADS["novel"], 0, 0, load_tokenizer(tiny_llama))] == [256] * 4


def test_copy_workload_with_and_without_speculation(long_llama, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["bench", "offline", "--model", str(long_llama), "--workload", "copy", "--max-model-len", "1536",
                 "--kv-cache-gib", "0.05", "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4}',
                 "--no-warmup", "--no-progress", "--output-json", str(out)]) == 0
    report = json.loads(out.read_text())
    spec = report["speculation"]
    assert spec["identical_outputs"] is True and spec["draft_tokens"] > 0
    assert report["engine"]["output_tokens"] == report["no_speculation"]["output_tokens"] > 0
    assert report["engine"]["steps"] < report["no_speculation"]["steps"]  # several tokens in some steps
    assert "outputs identical: True" in capsys.readouterr().out
