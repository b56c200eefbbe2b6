"""Reading a stream by its chunks' frame gives the entry that parsing every chunk gives."""

from __future__ import annotations

import json
import random
from dataclasses import asdict

import pytest

from kvserve.bench.fake_answers import Completion
from kvserve.gateway.store.cache import Entry, StreamAssembler
from kvserve.gateway.store.chunk_frame import scan
from kvserve.server import sse

WORDS = ["Hi", " there", " \"quoted\"", " back\\slash", " café", " 🙂", "\n", ' "content":"x"', "\\\"", "", " \t"]
HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def kvserve_events(words: list[str], ascii_only: bool = False) -> list[bytes]:
    """A chat stream shaped as `kvserve serve` writes it: role chunk, text chunks, usage."""
    dumps = (lambda v: json.dumps(v, separators=(",", ":"))) if ascii_only else sse.dumps
    trailer = ',"usage":null,"system_fingerprint":"fp"'
    role = {**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    events = [b"data: " + dumps(role).encode() + b"\n\n"]
    for i, word in enumerate(words):
        choice = {"index": 0, "delta": {"content": word}, "logprobs": None,
                  "finish_reason": "stop" if i == len(words) - 1 else None, "stop_reason": None}
        events.append(b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
                      b'"choices":[' + dumps(choice).encode() + b"]" + trailer.encode() + b"}\n\n")
    usage = {**HEAD, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(words)}}
    return events + [b"data: " + dumps(usage).encode() + b"\n\n", b"data: [DONE]\n\n"]


def fast_and_slow(stream: bytes, chat: bool = True) -> tuple[Entry | None, Entry | None]:
    fast = StreamAssembler(chat)
    fast.add(stream)
    slow = StreamAssembler(chat)
    slow.read_slowly(stream)
    return fast.entry(), slow.entry()


@pytest.mark.parametrize("ascii_only", [False, True])
def test_a_kvserve_stream_reads_by_its_frame_to_the_same_entry(ascii_only):
    stream = b"".join(kvserve_events(WORDS * 3, ascii_only))
    scanned = scan(stream, chat=True)
    assert scanned is not None and len(scanned.texts) == len(WORDS) * 3 - 2  # all but the first text, last chunk
    fast, slow = fast_and_slow(stream)
    assert fast == slow and fast is not None
    assert fast.content == "".join(WORDS * 3) and fast.usage == {"prompt_tokens": 3, "completion_tokens": 33}
    assert fast.finish_reason == "stop" and fast.id == "chatcmpl-1"


@pytest.mark.parametrize("chat", [True, False])
def test_a_fake_upstream_stream_reads_to_the_same_entry(chat):
    answer = Completion(chat=chat, model="fake", prompt_tokens=4, n_tokens=40, tokens=WORDS)
    stream = b"".join([answer.token_chunk(i) for i in range(40)] + [answer.final_chunks(include_usage=True)])
    assert len(scan(stream, chat).texts) == (38 if chat else 39)  # a chat stream's first chunk names the role
    fast, slow = fast_and_slow(stream, chat)
    assert fast == slow and fast is not None and fast.content == "".join(answer.token(i) for i in range(40))


def edited(events: list[bytes], at: int, event: bytes) -> bytes:
    return b"".join(events[:at] + [event] + events[at:])


TEXT = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,' \
       b'"delta":{"content":%s},"logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":null,' \
       b'"system_fingerprint":"fp"}\n\n'


@pytest.mark.parametrize("event,replayable", [
    (TEXT.replace(b'"index":0', b'"index":1') % b'"x"', False),  # a second choice
    (TEXT.replace(b'"content":%s', b'"content":null,"tool_calls":[{}]'), False),
    (TEXT % b'"bad \\q escape"', False),  # not JSON: the slow path refuses the whole stream too
    (TEXT % b'"raw \x01 control"', False),
    (TEXT % b'"two","content":"strings"', True),  # duplicate key: the last one counts
    (TEXT.replace(b'"content":%s', b'"con\\u0074ent":"escaped key"'), True),
    (TEXT.replace(b'"usage":null', b'"usage":{"completion_tokens":9}') % b'"usage early"', True),
    (b'data:{"choices":[{"index":0,"delta":{"content":"no space"}}]}\n\n', True),
    (b': keep-alive\n\nid: 7\nevent: message\ndata: {"choices":[]}\n\n', True),
    (b"data: 1,2\n\n", True),  # two values in one payload (left to the slow path): not objects, skipped
    (b"data: {}\ndata: []\n\n", True),
    (b"data:   \n\n", False),
    (TEXT.replace(b"\n\n", b"\r\n\r\n") % b'"crlf"', True),
])
def test_odd_chunks_read_as_the_full_parse_reads_them(event, replayable):
    events = kvserve_events(WORDS * 2)
    for at in (1, 2, 5, len(events) - 2):
        fast, slow = fast_and_slow(edited(events, at, event))
        assert fast == slow and (fast is not None) == replayable


def test_random_streams_read_as_the_full_parse_reads_them():
    rng = random.Random(13)
    pieces = [TEXT % json.dumps(w).encode() for w in WORDS] + [TEXT % json.dumps(w, ensure_ascii=False).encode()
                                                                for w in WORDS]
    pieces += [TEXT.replace(b'"finish_reason":null', b'"finish_reason":"stop"') % b'"end"',
               TEXT.replace(b'"usage":null', b'"usage":{"total_tokens":1}') % b'"u"',
               TEXT.replace(b'"model":"m"', b'"model":"other"') % b'"o"', b"data: [DONE]\n\n", b"\n"]
    for _ in range(300):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
        fast, slow = fast_and_slow(stream)
        assert fast == slow


@pytest.mark.parametrize("shape", [
    b'data: {"choices":[{"index":0,"delta":{"content":"w%d","content":"real "}}]}\n\n',  # the last key counts
    b'data: {"meta":{"content":"w%d"},"choices":[{"index":0,"delta":{"content":"real "}}]}\n\n',
])
def test_a_string_that_varies_but_is_not_the_text_is_not_taken_for_it(shape):
    stream = b"".join(shape % i for i in range(5)) + b'data: {"choices":[{"index":0,"finish_reason":"stop"}]}\n\n'
    fast, slow = fast_and_slow(stream)
    assert fast == slow and fast.content == "real " * 5


def test_chunks_that_differ_beyond_their_text_are_left_to_the_slow_path():
    events = [TEXT.replace(b'"logprobs":null', b'"logprobs":{"content":[{"token":"t%d"}]}' % i) % (b'"w%d"' % i)
              for i in range(20)]
    stream = b"".join(events + [TEXT.replace(b'"finish_reason":null', b'"finish_reason":"stop"') % b'"."'])
    assert scan(stream, chat=True) is None  # after a few chunks, not one parse per chunk to the end
    fast, slow = fast_and_slow(stream)
    assert fast == slow and fast.content == "".join(f"w{i}" for i in range(20)) + "."


def test_entries_are_written_as_before():
    """Entries already in Redis were written by `asdict`; the bytes stay the same."""
    entry = Entry(True, "c1", "m", "hi \"there\" café", "stop", {"prompt_tokens": 2}, 0.25)
    assert entry.dumps() == json.dumps(asdict(entry)).encode() and Entry.loads(entry.dumps()) == entry
