"""Tensor parallelism on the CPU (gloo, float32): TP=2 gives TP=1's greedy tokens, through
prefix-cache hits, chunked prefill and preemption; start-up refuses a model that does not
split; `kvserve serve --tensor-parallel-size 2` answers the openai client, and a rank
killed mid-request takes the server down with a non-zero exit."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from kvserve import LLM, SamplingParams
from kvserve.config import ConfigError
from kvserve.parallel.shard import check_shardable
from kvserve.structured import grammars
from kvserve.structured.spec import StructuredOutputs
from tests.conftest import build_model
from tests.helpers import ServeProcess, wait_until

# a pool of 12 blocks of 16 tokens and steps of at most 32 tokens: six 40-token prompts that
# share their first 32 tokens preempt each other, split their prefills and hit the prefix cache
TIGHT = dict(dtype="float32", device="cpu", block_size=16, num_gpu_blocks_override=12, max_model_len=192,
             max_num_batched_tokens=32, max_num_seqs=4, enable_prefix_caching=True)
PREFIX = [(7 * i) % 300 + 10 for i in range(32)]
PROMPTS = [{"prompt_token_ids": PREFIX + [100 + j] * 8} for j in range(6)]
GREEDY = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
# then a batch of constrained requests: each rank's grammar state follows the same ids
CONSTRAINED = [SamplingParams(temperature=0, max_tokens=16, structured=StructuredOutputs(grammar))
               for grammar in (grammars.choice(["Paris", "Rome", "Roma"]), grammars.regex(r"[a-z]{3,12}"))]
WITH_GRAMMARS = [PROMPTS, [{"prompt_token_ids": [5, 9, 14, 3]}, {"prompt_token_ids": [20, 21]}]]


def generate(model: Path, tp: int, prompts=PROMPTS, params=GREEDY, **settings) -> tuple[list[list[int]], object]:
    """Token ids of each prompt's output (one batch after the other, for a list of batches)
    and the engine's stats after the last."""
    batches = prompts if isinstance(prompts[0], list) else [prompts]
    all_params = params if isinstance(params, list) else [params] * len(batches)
    with LLM(str(model), tensor_parallel_size=tp, **{**TIGHT, **settings}) as llm:
        outputs = [o for batch, ps in zip(batches, all_params) for o in llm.generate(batch, ps, use_tqdm=False)]
        return [list(o.outputs[0].token_ids) for o in outputs], llm.engine.core.stats()


def test_tp2_matches_tp1_through_prefix_hits_chunked_prefill_preemption_and_grammars(tiny_qwen2):
    # first an engine that every rank refuses after they all started: the error reaches the
    # caller, and the ranks and their group are gone (the next engine starts a new one)
    with pytest.raises(ConfigError, match="the KV cache holds 64 tokens"):
        LLM(str(tiny_qwen2), tensor_parallel_size=2, **{**TIGHT, "num_gpu_blocks_override": 4})
    assert not _rank_workers_of(os.getpid())
    expected, _ = generate(tiny_qwen2, 1, WITH_GRAMMARS, [GREEDY, CONSTRAINED])
    got, stats = generate(tiny_qwen2, 2, WITH_GRAMMARS, [GREEDY, CONSTRAINED])
    assert stats.num_preemptions > 0 and stats.prefix_cache_hits > 0  # the paths under test were taken
    assert got == expected


@pytest.fixture(scope="module")
def one_kv_head_model(tmp_path_factory) -> Path:
    """One KV head (copied to both ranks), tied embeddings, and an odd vocabulary (padded)."""
    from transformers import AutoTokenizer

    out = build_model("llama", tmp_path_factory.mktemp("tp-one-kv"), num_key_value_heads=1,
                      tie_word_embeddings=True)
    vocab = len(AutoTokenizer.from_pretrained(out))
    return build_model("llama", out, num_key_value_heads=1, tie_word_embeddings=True, vocab_size=vocab + 1)


def test_tp2_copies_a_lone_kv_head_and_pads_an_odd_vocabulary_with_ngram_speculation(one_kv_head_model):
    prompts, ngram = PROMPTS[:2], {"method": "ngram", "num_speculative_tokens": 3}
    expected, _ = generate(one_kv_head_model, 1, prompts, speculative_config=ngram)
    got, stats = generate(one_kv_head_model, 2, prompts, speculative_config=ngram)
    assert stats.spec_decode.num_accepted_tokens > 0  # verification steps ran on both ranks
    assert got == expected


def test_a_model_that_does_not_split_is_refused_with_the_sizes_that_would(tiny_llama):
    with pytest.raises(ConfigError, match=r"tensor_parallel_size=3 does not divide the model's 4 attention "
                                          r"heads: use one of \[1, 2, 4\]"):
        LLM(str(tiny_llama), tensor_parallel_size=3, device="cpu")


def _rank_workers_of(root: int) -> list[int]:
    """Pids of the rank_worker processes descending from `root` (read from /proc)."""
    parents, commands = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            commands[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    return [pid for pid, cmd in commands.items() if b"kvserve.parallel.rank_worker" in cmd and descends(pid)]


@pytest.fixture(scope="module")
def tp_server(tiny_llama, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tp-serve")
    proc = ServeProcess(["--model", str(tiny_llama), "--data-dir", str(log_dir / "batches"), "--device", "cpu",
                         "--dtype", "float32", "--tensor-parallel-size", "2", "--max-model-len", "512",
                         "--kv-cache-gib", "0.05"],
                        log_dir / "server.log").start()
    yield proc
    proc.stop()


def test_serve_with_two_ranks_answers_the_openai_client(tp_server, tiny_llama):
    client = openai.OpenAI(base_url=tp_server.url + "/v1", api_key="unused")
    done = client.completions.create(model=str(tiny_llama), prompt="The capital of France is", max_tokens=8,
                                     temperature=0)
    assert done.usage.completion_tokens > 0 and done.choices[0].text
    assert len(_rank_workers_of(tp_server.proc.pid)) == 1


def test_killing_rank_1_mid_request_stops_the_server_with_an_error(tp_server, tiny_llama):
    client = openai.OpenAI(base_url=tp_server.url + "/v1", api_key="unused", max_retries=0)
    errors: list[BaseException] = []

    def long_request() -> None:
        try:
            client.completions.create(model=str(tiny_llama), prompt="Hello", max_tokens=400, temperature=0,
                                      extra_body={"ignore_eos": True})
        except BaseException as exc:  # noqa: BLE001 - the request is expected to fail
            errors.append(exc)

    thread = threading.Thread(target=long_request, daemon=True)
    thread.start()
    wait_until(lambda: tp_server.metrics()["vllm:num_requests_running"] == 1, 20, "the request never ran")
    [rank1] = _rank_workers_of(tp_server.proc.pid)
    os.kill(rank1, signal.SIGKILL)
    started = time.monotonic()
    try:
        code = tp_server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server still runs 20 s after rank 1 died:\n{tp_server.logs()[-2000:]}")
    assert code != 0 and time.monotonic() - started < 20
    assert "rank 1 exited" in tp_server.logs()
    thread.join(10)
    assert errors  # the request in flight failed, it did not hang


def test_kv_heads_that_neither_split_nor_repeat_are_refused():
    shape = SimpleNamespace(num_attention_heads=12, num_key_value_heads=3, intermediate_size=96)
    with pytest.raises(ConfigError, match=r"neither divides the model's 3 KV heads.*use one of \[1, 3, 6, 12\]"):
        check_shardable(shape, 2)
    check_shardable(shape, 6)  # two ranks read each KV head: it is copied to both


def test_quantization_is_refused_with_several_ranks(tiny_llama):
    with pytest.raises(ConfigError, match="quantization=int8 does not run with tensor_parallel_size=2"):
        LLM(str(tiny_llama), tensor_parallel_size=2, device="cpu", dtype="bfloat16", quantization="int8")
