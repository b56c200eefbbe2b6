"""`kvserve chat`: a real terminal (pseudo-terminal) and piped input, on a tiny model in
process and against a real server."""

from __future__ import annotations

import os
import sys
import time

import openai
import pexpect
import pytest

from kvserve.cli.chat import Conversation, chat_loop
from kvserve.cli.chat_backends import AnswerOptions, LocalChat
from kvserve.cli.generate import print_answers
from kvserve.config import EngineConfig
from tests.conftest import build_model
from tests.server.conftest import start_server

CHAT = [sys.executable, "-m", "kvserve.cli.main", "chat"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class RecordingChat(LocalChat):
    """The real in-process backend, keeping the conversations it was asked to answer."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.asked: list[list[dict]] = []

    def stream(self, messages, options):
        self.asked.append([dict(m) for m in messages])
        return super().stream(messages, options)


def test_history_system_prompt_and_reset(tiny_llama, capsys):
    backend = RecordingChat(EngineConfig.from_flat(model=str(tiny_llama), kv_cache_gib=0.01))
    lines = iter(["hello", "and then?", "/system be brief", "hi", "/reset", "again", "/exit", "never read"])
    code = chat_loop(backend, Conversation(), AnswerOptions(max_tokens=6, temperature=0), lambda _: next(lines))
    assert code == 0
    first, second, third, fourth = backend.asked
    assert [m["role"] for m in first] == ["user"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]  # the history goes with the question
    assert second[1]["content"]  # the answer that was streamed
    assert third == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert fourth == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "again"}]
    out = capsys.readouterr().out
    assert "(system prompt set; conversation forgotten)" in out and "(conversation forgotten)" in out


def test_piped_input_on_the_command_line(tiny_llama):
    child = pexpect.spawn(CHAT[0], [*CHAT[1:], "--model", str(tiny_llama), "--kv-cache-gib", "0.01",
                                    "--max-tokens", "4"], env=ENV, encoding="utf-8", timeout=120)
    child.expect("chatting with")
    child.expect(">>> ")
    child.sendline("/nonsense")
    child.expect("unknown command /nonsense")
    child.sendline("hello")
    child.expect(">>> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.fixture(scope="module")
def talkative_llama(tmp_path_factory):
    """Big enough that a long answer takes seconds on the CPU (its greedy answer below does
    not stop before --max-tokens)."""
    return build_model("llama", tmp_path_factory.mktemp("talkative"), hidden_size=256, intermediate_size=1024,
                       num_hidden_layers=4, max_position_embeddings=4096)


def test_ctrl_c_stops_the_answer_not_the_program(talkative_llama):
    child = pexpect.spawn(CHAT[0], [*CHAT[1:], "--model", str(talkative_llama), "--kv-cache-gib", "0.05",
                                    "--max-tokens", "3000", "--temperature", "0"],
                          env=ENV, encoding="utf-8", timeout=180)
    child.expect(">>> ")
    child.sendline("tell me a long story")
    child.expect(r"\S")  # the answer has started streaming
    time.sleep(0.3)
    child.sendintr()  # Ctrl-C
    child.expect_exact("[stopped]", timeout=60)
    child.expect(">>> ")
    assert child.isalive()  # still chatting
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_against_a_running_server(tiny_llama, tmp_path_factory):
    server = start_server(tmp_path_factory, tiny_llama, "--served-model-name", "tiny")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        expected = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8,
            temperature=0).choices[0].message.content
        child = pexpect.spawn(CHAT[0], [*CHAT[1:], "--url", server.url, "--temperature", "0", "--max-tokens", "8"],
                              env=ENV, encoding="utf-8", timeout=120)
        child.expect(f"chatting with tiny at {server.url}/v1")
        child.expect(">>> ")
        child.sendline("hello")
        child.expect(">>> ")
        answer = child.before.replace("\r", "")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
        child.close()
    finally:
        server.stop()
    assert child.exitstatus == 0
    assert expected.strip() and expected.strip() in answer


def test_several_answers_of_generate_are_numbered(capsys):
    print_answers(["Paris.", "Rome."])
    assert capsys.readouterr().out == "--- answer 1 of 2 ---\nParis.\n\n--- answer 2 of 2 ---\nRome.\n"
    print_answers(["Paris."])
    assert capsys.readouterr().out == "Paris.\n"
