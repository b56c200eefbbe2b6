"""The console of a single `kvserve serve` (tiny random Llama, with an API key): the
playground streams from the engine, the Server page reads the server's own /metrics."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import start_server

API_KEY = "server-console-key"


@pytest.fixture(scope="module")
def served(tiny_llama, tmp_path_factory):
    proc = start_server(tmp_path_factory, tiny_llama, "--served-model-name", "tiny", "--max-model-len", "256",
                        "--api-key", API_KEY)
    yield proc
    proc.stop()


def test_the_console_is_open_but_the_api_behind_it_needs_the_key(served):
    page = httpx.get(served.url + "/console/", timeout=5)
    assert page.status_code == 200 and "content-security-policy" in page.headers
    assert httpx.get(served.url + "/console/meta.json", timeout=5).json() == {"kind": "server"}
    assert httpx.get(served.url + "/v1/models", timeout=5).status_code == 401


def test_playground_streams_from_the_engine_and_the_server_page_shows_its_metrics(served, page):
    page.goto(served.url + "/console/")
    assert page.is_hidden("#nav a[data-page=fleet]") and page.is_visible("#nav a[data-page=server]")
    page.fill("#tenant-key", API_KEY)
    page.dispatch_event("#tenant-key", "change")
    page.wait_for_selector("#model option[value=tiny]", state="attached")
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "12")
    page.fill("#prompt", "Hello there")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant .stats:has-text('TTFT')", timeout=30000)
    assert "12 completion tokens" in page.inner_text(".msg.assistant .stats")
    page.goto(served.url + "/console/#server")
    page.wait_for_selector("#server table")
    page.wait_for_timeout(2200)  # a second scrape: the tokens/s series has a point
    text = page.inner_text("#server")
    assert "running requests" in text and "KV cache" in text and "requests finished" in text
    # the model list asked before the key was typed in is the only refused request
    assert all("status of 401" in e for e in page.errors), page.errors
