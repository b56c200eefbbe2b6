"""Resumable streams and Idempotency-Key, across two gateways sharing one Redis."""

from __future__ import annotations

import httpx
import redis

from tests.helpers import wait_until

from ..conftest import ADMIN_KEY, bearer, chat, fast_config, make_key, one_pool

N = 12


def shared_config(keys, urls, redis_url, prefix):
    return fast_config(one_pool(urls), auth={"enabled": True, "keys_file": str(keys)},
                       redis={"url": redis_url, "prefix": prefix}, streams={"resumable": True, "poll_s": 0.01})


def events(text: str) -> list[tuple[int, str]]:
    out, current = [], None
    for line in text.splitlines():
        if line.startswith("id: "):
            current = int(line[4:])
        elif line.startswith("data: "):
            out.append((current, line[6:]))
    return out


def content(data: list[str]) -> str:
    import json

    return "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data
                   if d != "[DONE]" and json.loads(d)["choices"])


def test_a_cut_stream_resumes_on_another_gateway_without_a_second_generation(
        upstream, gateway, tmp_path, redis_server, redis_prefix):
    up = upstream(num_tokens=N, tokens_per_second=40)
    keys = tmp_path / "keys.yaml"
    key = make_key(keys)
    config = shared_config(keys, [up.url], redis_server.url, redis_prefix)
    gw1, gw2 = gateway(config), gateway(config)
    whole = httpx.post(gw1.url + "/v1/chat/completions", json=chat(stream=True, content="uncut"),
                       headers=bearer(key))
    seen: list[str] = []
    with httpx.stream("POST", gw1.url + "/v1/chat/completions", json=chat(stream=True), headers=bearer(key)) as r:
        request_id = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("id: "):
                last_id = int(line[4:])
            elif line.startswith("data: "):
                seen.append(line[6:])
                if len(seen) == 3:
                    break  # the client goes away mid-stream
    resumed = httpx.post(gw2.url + "/v1/chat/completions", json=chat(stream=True),
                         headers={**bearer(key), "x-request-id": request_id, "last-event-id": str(last_id)})
    rest = events(resumed.text)
    assert rest[0][0] == last_id + 1 and rest[-1][1] == "[DONE]"
    assert content(seen + [d for _, d in rest]) == content([d for _, d in events(whole.text)])

    def billed_once() -> bool:
        rows = httpx.get(gw1.url + "/admin/usage", headers=bearer(ADMIN_KEY)).json()["data"]
        return rows and rows[0]["requests"] == 2 and rows[0]["completion_tokens"] == 2 * N

    wait_until(billed_once, 5, "the resumed stream was billed again (or not at all)")
    assert "tok" not in httpx.post(gw2.url + "/v1/chat/completions", json=chat(stream=True), headers={
        **bearer(make_key(keys, tenant="other")), "x-request-id": request_id, "last-event-id": "0"}).text


def test_an_unknown_stream_is_404(upstream, gateway, tmp_path, redis_server, redis_prefix):
    up = upstream()
    keys = tmp_path / "keys.yaml"
    key = make_key(keys)
    gw = gateway(shared_config(keys, [up.url], redis_server.url, redis_prefix))
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(stream=True),
                          headers={**bearer(key), "x-request-id": "nope", "last-event-id": "2"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "stream_not_found"


def test_idempotency_key_returns_the_stored_answer_once_billed(upstream, gateway, tmp_path, redis_server,
                                                               redis_prefix):
    up = upstream(num_tokens=5)
    keys = tmp_path / "keys.yaml"
    key = make_key(keys)
    config = shared_config(keys, [up.url], redis_server.url, redis_prefix)
    gw1, gw2 = gateway(config), gateway(config)
    headers = {**bearer(key), "idempotency-key": "order-42"}
    first = httpx.post(gw1.url + "/v1/chat/completions", json=chat(), headers=headers)
    stored = redis.Redis.from_url(redis_server.url).keys(f"{redis_prefix}:idem:*")
    wait_until(lambda: redis.Redis.from_url(redis_server.url).keys(f"{redis_prefix}:idem:*"), 5, "not stored")
    again = httpx.post(gw2.url + "/v1/chat/completions", json=chat(), headers=headers)
    assert again.headers.get("idempotent-replayed") == "true" and again.json()["id"] == first.json()["id"]
    assert stored == [] or b"order-42" in stored[0]
    rows = httpx.get(gw1.url + "/admin/usage", headers=bearer(ADMIN_KEY)).json()["data"]
    assert rows[0]["requests"] == 1 and rows[0]["completion_tokens"] == 5


def test_a_second_request_with_a_running_idempotency_key_gets_409_and_a_failed_one_frees_it(
        upstream, gateway, tmp_path, redis_server, redis_prefix):
    import threading

    up = upstream(num_tokens=20, tokens_per_second=20.0)  # one answer takes about a second
    keys = tmp_path / "keys.yaml"
    key = make_key(keys)
    config = shared_config(keys, [up.url], redis_server.url, redis_prefix)
    gw1, gw2 = gateway(config), gateway(config)
    headers = {**bearer(key), "idempotency-key": "order-7"}
    first: list[httpx.Response] = []
    runner = threading.Thread(target=lambda: first.append(
        httpx.post(gw1.url + "/v1/chat/completions", json=chat(), headers=headers, timeout=30)))
    runner.start()
    wait_until(lambda: redis.Redis.from_url(redis_server.url).keys(f"{redis_prefix}:idem:*"), 5, "not claimed")
    during = httpx.post(gw2.url + "/v1/chat/completions", json=chat(), headers=headers)  # the other gateway
    runner.join()
    assert during.status_code == 409 and during.json()["error"]["code"] == "idempotency_key_in_use"
    assert first[0].status_code == 200
    wait_until(lambda: httpx.post(gw2.url + "/v1/chat/completions", json=chat(), headers=headers)
               .headers.get("idempotent-replayed") == "true", 5, "answer not replayed")
    rows = httpx.get(gw1.url + "/admin/usage", headers=bearer(ADMIN_KEY)).json()["data"]
    assert rows[0]["requests"] == 1  # generated once

    retry = {**bearer(key), "idempotency-key": "order-8"}
    failed = httpx.post(gw1.url + "/v1/chat/completions", json=chat(model="no-such-model"), headers=retry)
    assert failed.status_code == 404 and failed.json()["error"]["code"] == "model_not_found"  # was a 500 with keys on
    wait_until(lambda: httpx.post(gw2.url + "/v1/chat/completions", json=chat(), headers=retry).status_code == 200,
               5, "the failed request kept its key")


def test_claims_are_atomic_and_expire_in_both_stores(redis_server, redis_prefix):
    import asyncio

    from kvserve.gateway.access_config import RedisConfig
    from kvserve.gateway.store.kvstore import MemoryStore, RedisStore
    from kvserve.gateway.store.redis_link import RedisLink

    async def exercise(store) -> None:
        results = await asyncio.gather(*(store.claim("k", b"held", 0.3) for _ in range(5)))
        assert sorted(results) == [False] * 4 + [True] and await store.get("k") == b"held"
        await store.delete("k")
        assert await store.claim("k", b"again", 0.2) and await store.get("k") == b"again"
        await asyncio.sleep(0.3)
        assert await store.get("k") is None and await store.claim("k", b"after expiry", 5)

    asyncio.run(exercise(MemoryStore(100)))

    async def with_redis() -> None:
        link = RedisLink(RedisConfig(url=redis_server.url, prefix=redis_prefix), on_error=lambda op: None)
        try:
            await exercise(RedisStore(link))
        finally:
            await link.close()

    asyncio.run(with_redis())
