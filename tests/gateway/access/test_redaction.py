"""Output redaction: whole answers and streams, PII split across chunks, through a real gateway."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from kvserve.gateway.access.pii import DETECTORS
from kvserve.gateway.access.redaction import TextRedactor, redact_text
from tests.helpers import scrape

from ..conftest import bearer, chat, fast_config, make_key, one_pool

ALL = frozenset(DETECTORS)
SECRETS = ["jane.doe@example.com", "+1 415 555 0100", "4111 1111 1111 1111", "sk-abcdefghijklmnop0123456789"]
TEXT = ("Sure. Write to jane.doe@example.com or call +1 415 555 0100 today. Pay with 4111 1111 1111 1111; "
        "the key is sk-abcdefghijklmnop0123456789 and that is all.")


def fed(pieces: list[str], kinds: frozenset[str] = ALL, max_hold: int = 256) -> tuple[list[str], Counter[str]]:
    found: Counter[str] = Counter()
    redactor = TextRedactor(kinds, max_hold, lambda kind: found.update([kind]))
    out = [redactor.feed(p) for p in pieces]
    return out + [redactor.flush()], found


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_pii_split_across_pieces_never_leaves_and_the_result_equals_the_whole_redaction(size):
    pieces = [TEXT[i:i + size] for i in range(0, len(TEXT), size)]
    out, found = fed(pieces)
    whole = redact_text(TEXT, ALL, lambda kind: None)
    assert "".join(out) == whole
    assert found == Counter({"email": 1, "phone": 1, "card": 1, "secret": 1})
    sent = ""
    for piece in out:  # no prefix of the stream, at any moment, carries a secret or its tail
        sent += piece
        for secret in SECRETS:
            assert secret[-6:] not in sent


def test_only_the_tail_that_could_still_match_is_held():
    out, _ = fed(["Hello there, ", "how are ", "you? I am fi", "ne."])
    # "fi" could begin an email, and so could "fine." (a local part may hold dots): held to the end
    assert out == ["Hello there, ", "how are ", "you? I am ", "", "fine."]
    out, _ = fed(["Call 415 555", " 0100 now"])
    assert out[0] == "Call " and "".join(out) == "Call [REDACTED:phone] now"


def test_a_hold_never_passes_its_bound_and_only_the_chosen_kinds_are_redacted():
    long_word = "a" * 400  # could be an email's local part all along
    out, _ = fed([long_word[i:i + 10] for i in range(0, 400, 10)], max_hold=64)
    assert max(len(p) for p in out[:-1]) <= 64 and "".join(out) == long_word
    out, found = fed([TEXT], kinds=frozenset({"email"}))
    assert "[REDACTED:email]" in "".join(out) and "4111 1111 1111 1111" in "".join(out) and set(found) == {"email"}


TOKENS = ["Mail ", "jane", ".doe", "@exam", "ple.c", "om", " or ", "4111 ", "1111 ", "1111 ", "1111", ". "]


@pytest.fixture(scope="module")
def redacting(tmp_path_factory):
    from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
    from tests.gateway.conftest import GatewayThread

    tmp = tmp_path_factory.mktemp("redaction")
    keys = tmp / "keys.yaml"
    plain, strict = make_key(keys, tenant="plain"), make_key(keys, tenant="strict")
    up = FakeUpstreamServer(FakeUpstreamConfig(num_tokens=len(TOKENS), tokens=TOKENS, tokens_per_second=0)).start()
    models = {"open": {"pool": {"endpoints": [up.url]}}, **one_pool([up.url])}
    gw = GatewayThread(fast_config(models, auth={"enabled": True, "keys_file": str(keys)}, cache={"enabled": True},
                                   streams={"resumable": True},
                                   redaction={"models": {"fake": ["email"]}, "tenants": {"strict": ["all"]}})).start()
    yield gw, plain, strict
    gw.stop()
    up.stop()


def streamed_text(response: httpx.Response) -> str:
    out = ""
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                out += choice["delta"].get("content") or ""
    return out


def test_streams_and_whole_answers_are_redacted_per_model_and_tenant(redacting):
    gw, plain, strict = redacting
    url = gw.url + "/v1/chat/completions"
    whole = httpx.post(url, json=chat(), headers=bearer(plain)).json()["choices"][0]["message"]["content"]
    assert whole == "Mail [REDACTED:email] or 4111 1111 1111 1111. "  # model "fake": emails only
    streamed = httpx.post(url, json=chat(stream=True), headers=bearer(strict))
    assert streamed_text(streamed) == "Mail [REDACTED:email] or [REDACTED:card]. "  # tenant "strict": everything
    assert "jane" not in streamed.text and "4111" not in streamed.text
    ids = [line for line in streamed.text.splitlines() if line.startswith("id: ")]
    assert len(ids) == len(TOKENS) + 2  # every event kept (tokens, finish, [DONE]): ids as without redaction
    untouched = httpx.post(url, json=chat(model="open"), headers=bearer(plain)).json()
    assert "jane.doe@example.com" in untouched["choices"][0]["message"]["content"]  # no rule for "open"/"plain"
    metrics = scrape(gw.url)
    assert metrics.value("kvserve:gateway_redactions_total", model="fake", kind="email") == 2
    assert metrics.value("kvserve:gateway_redactions_total", model="fake", kind="card") == 1


def test_answers_replayed_from_the_cache_and_a_resumed_stream_are_redacted_too(redacting):
    gw, plain, strict = redacting
    url = gw.url + "/v1/chat/completions"
    body = chat(stream=True, content="cache me", temperature=0)
    first = httpx.post(url, json=body, headers=bearer(strict))
    request_id = first.headers["x-request-id"]
    hit = httpx.post(url, json=body, headers=bearer(strict))
    assert hit.headers.get("x-cache") == "hit" and streamed_text(hit) == streamed_text(first)
    assert "4111" not in hit.text and "jane" not in hit.text
    resumed = httpx.post(url, json=chat(stream=True), headers={**bearer(strict), "x-request-id": request_id,
                                                                "last-event-id": "0"})
    assert resumed.status_code == 200 and "4111" not in resumed.text and "[REDACTED:card]" in resumed.text
