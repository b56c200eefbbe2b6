"""`kvserve bench serve` against a real `kvserve serve` process with a tiny model.

The benchmark's counts must add up (requests sent = succeeded + failed), its token
totals must equal what the server itself counted (`vllm:prompt_tokens_total` and
`vllm:generation_tokens_total` on /metrics, read before and after), and its
percentiles must be ordered.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import kvserve.cli
from kvserve.cli.main import main
from tests.helpers import ServeProcess, scrape

pytestmark = pytest.mark.slow

SERVE_CLI = Path(kvserve.cli.__file__).with_name("serve.py")


@pytest.fixture(scope="module")
def real_server(tiny_llama, tmp_path_factory):
    """(base URL, served model id) of `kvserve serve --model <tiny llama>` on a free loopback port."""
    if not SERVE_CLI.exists():
        pytest.skip("kvserve serve is not part of this tree yet")
    server = ServeProcess(["--model", str(tiny_llama)], tmp_path_factory.mktemp("serve") / "server.log").start()
    try:
        yield server.url, httpx.get(server.url + "/v1/models", timeout=2.0).json()["data"][0]["id"]
    finally:
        server.stop()


def server_token_counters(url: str) -> tuple[float, float]:
    """(prompt tokens, generated tokens) the server has counted since it started (KeyError if it exports none)."""
    metrics = scrape(url)
    return metrics["vllm:prompt_tokens_total"], metrics["vllm:generation_tokens_total"]


def bench(url: str, model: str, result_file: Path, *flags: str) -> dict:
    before = server_token_counters(url)
    code = main(["bench", "serve", "--base-url", url, "--model", model, "--no-progress", "--ignore-eos",
                 "--result-file", str(result_file), *flags])
    after = server_token_counters(url)
    doc = json.loads(result_file.read_text())
    doc["server_counted"] = (after[0] - before[0], after[1] - before[1])
    assert code == 0, doc["summary"]["errors"]
    return doc


def assert_ordered_percentiles(summary: dict) -> None:
    for name in ("ttft", "tpot", "itl", "e2e"):
        d = summary[name]
        assert d["count"] > 0, name
        assert 0 < d["median"] <= d["p90"] <= d["p99"], (name, d)
    assert summary["ttft"]["median"] < summary["e2e"]["median"]


def test_random_completions_add_up_to_the_servers_own_counts(real_server, tmp_path):
    url, model = real_server
    doc = bench(url, model, tmp_path / "random.json", "--num-prompts", "8", "--input-len", "24",
                "--output-len", "6", "--request-rate", "20", "--max-concurrency", "4")
    s = doc["summary"]
    assert s["sent"] == s["succeeded"] + s["failed"] == 8 and s["failed"] == 0
    assert s["usage_missing"] == 0 and s["completion_tokens"] == 8 * 6  # ignore_eos: exactly max_tokens
    assert (s["prompt_tokens"], s["completion_tokens"]) == doc["server_counted"]
    # prompts were sized with the server's own /tokenize, so usage matches the sizes
    assert doc["settings"]["token_counter"].startswith("server:")
    assert [r["prompt_tokens"] for r in doc["requests"]] == [r["sized_prompt_len"] for r in doc["requests"]]
    assert all(23 <= r["prompt_tokens"] <= 24 for r in doc["requests"])
    assert_ordered_percentiles(s)


def test_prefix_workload_over_chat_adds_up(real_server, tiny_llama, tmp_path):
    url, model = real_server
    doc = bench(url, model, tmp_path / "prefix.json", "--endpoint", "/v1/chat/completions", "--dataset", "prefix",
                "--num-prompts", "6", "--num-tenants", "2", "--prefix-len", "40", "--question-len", "8",
                "--output-len", "4", "--tokenizer", str(tiny_llama))
    s = doc["summary"]
    assert s["sent"] == s["succeeded"] == 6 and s["completion_tokens"] == 24
    assert (s["prompt_tokens"], s["completion_tokens"]) == doc["server_counted"]
    assert sorted({r["tenant"] for r in doc["requests"]}) == ["tenant-0", "tenant-1"]
    assert_ordered_percentiles(s)


def test_token_ids_workload_sends_the_offline_requests_to_an_arch_server(arch_server, tmp_path):
    """`--dataset token-ids` against `kvserve serve --arch`: the server counts exactly the
    offline workload's prompt tokens and, with --ignore-eos, its output lengths."""
    from kvserve.bench.offline import WORKLOADS, make_requests

    expected = make_requests(WORKLOADS["smoke"], 1000, 0)
    doc = bench(arch_server.url, arch_server.arch, tmp_path / "ids.json", "--dataset", "token-ids",
                "--offline-workload", "smoke", "--vocab-size", "1000")
    s = doc["summary"]
    assert s["sent"] == s["succeeded"] == len(expected) == 8
    assert s["prompt_tokens"] == sum(len(ids) for ids, _ in expected)
    assert s["completion_tokens"] == sum(n for _, n in expected)
    assert (s["prompt_tokens"], s["completion_tokens"]) == doc["server_counted"]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in doc["requests"]] == [(len(i), n) for i, n in expected]
