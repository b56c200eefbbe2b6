"""A real gateway (subprocess) with API keys and an admin key in front of two fake replicas
(subprocesses), and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from tests.gateway.conftest import ADMIN_KEY, fast_config, make_key
from tests.helpers import ServerProcess, answers, free_port, kvserve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Stack:
    def __init__(self, gateway: ServerProcess, replicas: list[ServerProcess], tenant_key: str) -> None:
        self.gateway, self.replicas, self.tenant_key = gateway, replicas, tenant_key

    @property
    def url(self) -> str:
        return self.gateway.url

    def answer_with(self, text: str, **config: Any) -> None:
        """Every replica answers `text`, streamed in pieces of 4 characters."""
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
        self.configure_replicas(tokens=pieces, num_tokens=len(pieces), **config)

    def configure_replicas(self, **config: Any) -> None:
        """Change every live fake replica's behaviour (FakeUpstreamConfig fields)."""
        for replica in self.replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                httpx.post(replica.url + "/admin/config", json=config, timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("console")
    replicas = []
    for i in range(4):  # 0 and 1 serve `fake`; 2 and 3 are versions v1 and v2 of `canary`
        port = free_port()
        command = [sys.executable, "-m", "kvserve.bench.fake_upstream", "--port", str(port), "--name", f"r{i}",
                   "--tokens-per-second", "0", "--num-tokens", "8"]
        replicas.append(ServerProcess(command, port, tmp / f"replica-{i}.log", stop_timeout=10).start("/v1/models", ready=answers))
    keys_file = tmp / "keys.yaml"
    tenant_key = make_key(keys_file, tenant="acme")
    models = {"fake": {"pool": {"policy": "round_robin", "endpoints": [r.url for r in replicas[:2]]}},
              "canary": {"sticky": False, "versions": {"v1": {"weight": 100, "pool": {"endpoints": [replicas[2].url]}},
                                                       "v2": {"weight": 0, "pool": {"endpoints": [replicas[3].url]}}}}}
    config = fast_config(models, auth={"enabled": True, "keys_file": str(keys_file), "cache_s": 60},
                         rollouts={"tick_s": 0.2})
    config_path = tmp / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    gateway = ServerProcess(kvserve("gateway", "--config", str(config_path), "--port", str(port), "--log-level", "warning"),
                            port, tmp / "gateway.log", stop_timeout=10).start("/health", ready=answers)
    yield Stack(gateway, replicas, tenant_key)
    gateway.stop()
    for replica in replicas:
        replica.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is needed (bash scripts/install.sh --test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage); collects console errors and CSP violations."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.errors = []
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    yield tab
    context.close()


def login_admin(page: Any) -> None:
    """Answer the admin-key dialog."""
    page.wait_for_selector("#admin-dialog[open]", timeout=5000)
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#admin-form button[type=submit]")


SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images" / "console"
