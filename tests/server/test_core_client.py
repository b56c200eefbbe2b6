"""The engine core in its own process, driven through AsyncLLM (no HTTP)."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import time
from pathlib import Path

from kvserve.config import EngineConfig
from kvserve.engine.async_llm import AsyncLLM
from kvserve.engine.core_messages import StepOutputs
from kvserve.engine.outputs import EngineOutput, EngineStats
from kvserve.engine.request import FinishReason, RequestMetrics
from kvserve.engine.scheduler_output import TokenLogprobs
from kvserve.sampling_params import SamplingParams


def test_fan_out_abort_frees_blocks_and_shutdown(slower_llama):
    async def run() -> None:
        llm = await AsyncLLM.start(EngineConfig.from_flat(model=str(slower_llama), max_model_len=1024))
        try:
            assert await llm.check_alive()
            prompt = llm.tokenizer.encode("Paged attention stores keys")
            stream = await llm.submit([prompt], SamplingParams(n=3, max_tokens=900, ignore_eos=True, seed=1), "req")
            seen = set()
            async for choice in stream:
                seen.add(choice.index)
                if seen == {0, 1, 2}:
                    break
            assert llm.stats.num_running == 3 and llm.stats.kv_cache_usage > 0
            stream.close()
            deadline = time.monotonic() + 5
            while (llm.stats.num_running or llm.stats.kv_cache_usage) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert llm.stats.num_running == 0 and llm.stats.kv_cache_usage == 0
            assert llm.num_unfinished == 0
        finally:
            await llm.shutdown()
        assert not await llm.check_alive()
        assert not llm.client.process.is_alive()

    asyncio.run(run())


ORPHAN_SCRIPT = """
import os, signal, sys
from kvserve.config import EngineConfig
from kvserve.engine.core_client import CoreClient
if __name__ == "__main__":
    client = CoreClient.start(EngineConfig.from_flat(model=sys.argv[1]))
    print(client.process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind
"""


def test_core_process_exits_when_its_parent_is_killed(tiny_llama, tmp_path):
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.run([sys.executable, str(script), str(tiny_llama)], capture_output=True, text=True,
                            timeout=180)
    core_pid = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _running(core_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(core_pid)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers where nothing reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_reader_that_falls_behind_gets_one_merged_delta(tiny_llama):
    async def run() -> None:
        llm = await AsyncLLM.start(EngineConfig.from_flat(model=str(tiny_llama)))
        try:
            prompt = llm.tokenizer.encode("Paged attention stores keys")
            params = SamplingParams(n=2, temperature=0, max_tokens=24, ignore_eos=True, logprobs=1)
            behind = await llm.submit([prompt], params, "behind")
            deadline = time.monotonic() + 60
            while not behind.finished and time.monotonic() < deadline:  # every delta arrives unread
                await asyncio.sleep(0.01)
            merged = [choice async for choice in behind]
            streamed = await llm.submit([prompt], params, "streamed")
            per_step = [choice async for choice in streamed]
        finally:
            await llm.shutdown()
        assert len(merged) == 2 and len(per_step) > 2
        for index in (0, 1):
            whole = [c.delta for c in merged if c.index == index]
            steps = [c.delta for c in per_step if c.index == index]
            assert sum(len(d.token_ids) for d in whole) == 24 and whole[-1].finish_reason == "length"
            assert [t for d in whole for t in d.token_ids] == [t for d in steps for t in d.token_ids]
            assert "".join(d.text for d in whole) == "".join(d.text for d in steps)
            assert sum(len(d.logprobs) for d in whole) == 24

    asyncio.run(run())


def test_a_step_larger_than_the_pipe_buffer_arrives_whole_under_uvloop(tiny_llama):
    """300 requests in one step: their outputs (> 64 KiB pickled) exceed a pipe's buffer,
    and uvloop makes the watched fd non-blocking; the message must still be read whole."""
    import uvloop

    async def run() -> list[int]:
        llm = await AsyncLLM.start(EngineConfig.from_flat(model=str(tiny_llama), max_num_seqs=320))
        try:
            prompt = llm.tokenizer.encode("Paged attention stores keys")
            params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)

            async def one(i: int) -> int:
                stream = await llm.submit([prompt], params, _long_id(i))
                return sum([len(choice.delta.token_ids) async for choice in stream])

            return await asyncio.gather(*(one(i) for i in range(300)))
        finally:
            await llm.shutdown()

    assert len(pickle.dumps(StepOutputs([EngineOutput(_long_id(i), [1]) for i in range(300)], _STATS))) > 65536
    assert uvloop.run(run()) == [3] * 300


def _long_id(i: int) -> str:
    return f"wide-request-{i:04d}-" + "x" * 240


_STATS = EngineStats(1, 0, 0.5, 100, 0, 0, 0, num_steps=3, step_seconds=0.25)


def test_step_outputs_cross_the_pipe_compactly_and_whole():
    """Plain outputs travel as tuples without their metrics; outputs that end a request or
    carry logprobs travel whole."""
    metrics = RequestMetrics(arrival_time=1.0, first_scheduled_time=1.5, first_token_time=2.0, last_token_time=3.0)
    plain = EngineOutput("a", [7], num_prompt_tokens=12, num_cached_tokens=4, metrics=metrics)
    last = EngineOutput("b", [8], finish_reason=FinishReason.LENGTH, num_prompt_tokens=5, metrics=metrics)
    stopped = EngineOutput("c", [9], finish_reason=FinishReason.STOP, stop_reason=9, metrics=metrics)
    with_logprobs = EngineOutput("d", [3], new_logprobs=[TokenLogprobs(3, -0.5, 1, [(3, -0.5), (4, -1.5)])],
                                 num_prompt_tokens=2, metrics=metrics)
    received = pickle.loads(pickle.dumps(StepOutputs([plain, last, stopped, with_logprobs], _STATS)))
    assert received.stats == _STATS
    assert received.outputs[0] == EngineOutput("a", [7], num_prompt_tokens=12, num_cached_tokens=4)
    assert received.outputs[1:] == [last, stopped, with_logprobs]
    many = [EngineOutput(f"cmpl-{i:08x}-0", [i], num_prompt_tokens=500, metrics=metrics) for i in range(256)]
    assert len(pickle.dumps(StepOutputs(many, _STATS))) < 40 * 256  # ~30 bytes an output, not ~200
