"""Hot swap (blue/green) in a real `kvserve serve --model NAME:VERSION`: three swaps under a
bounded load of streaming and non-streaming requests lose none, and every response (every
chunk of a stream) names the one version that produced it; a version whose file is
damaged in the registry is refused and the old one keeps serving."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until
from tests.server.conftest import RegistryHome

ADMIN_KEY = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
VERSIONS = ["tiny:v1", "tiny:v2", "tiny:v3", "tiny:v4"]


@pytest.fixture(scope="module")
def home(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> RegistryHome:
    home = RegistryHome(tmp_path_factory.mktemp("swap"))
    for ref in VERSIONS:
        home.push(tiny_llama, ref)
    bad = Path(shutil.copytree(tiny_llama, home.root / "bad-model"))
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "kvserve_test_variant": "bad"}))
    home.push(bad, "tiny:bad")
    return home


@pytest.fixture(scope="module")
def server(home: RegistryHome):
    proc = home.serve("--model", "tiny:v1", "--admin-key", ADMIN_KEY, "--kv-cache-gib", "0.02",
                      "--max-model-len", "256")
    yield proc
    proc.stop()


def swap(server, version: str, **extra) -> httpx.Response:
    return httpx.post(f"{server.url}/admin/models/tiny:v1/versions", headers=AUTH, timeout=180.0,
                      json={"version": version, **extra})


def status(server) -> dict:
    return httpx.get(f"{server.url}/admin/models/tiny:v1", headers=AUTH, timeout=10.0).json()


class Load:
    """Workers sending alternately streaming and whole chat requests until stopped; each
    answer checked: a 200, and one version named by the header and every body or chunk."""

    def __init__(self, url: str, workers: int = 2) -> None:
        self.url = url
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.versions: list[str] = []
        self.threads = [threading.Thread(target=self._work, args=(i,)) for i in range(workers)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)

    def _work(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=120.0) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    self._one(client, stream=(n + worker) % 2 == 0)
                except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def _one(self, client: httpx.Client, stream: bool) -> None:
        body = {"model": "tiny:v1", "messages": [{"role": "user", "content": "tell me"}], "max_tokens": 16,
                "ignore_eos": True, "stream": stream}
        if not stream:
            reply = client.post("/v1/chat/completions", json=body)
            if reply.status_code != 200:
                self.failures.append(f"{reply.status_code}: {reply.text}")
                return
            header, fingerprints = reply.headers["x-kvserve-model-version"], {reply.json()["system_fingerprint"]}
        else:
            with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    self.failures.append(f"{reply.status_code}: {reply.read()!r}")
                    return
                header = reply.headers["x-kvserve-model-version"]
                lines = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
            if lines[-1] != "[DONE]" or any('"error"' in line for line in lines):
                self.failures.append(f"stream did not end cleanly: {lines[-2:]}")
            fingerprints = {json.loads(line)["system_fingerprint"] for line in lines[:-1]}
        if fingerprints != {header}:
            self.failures.append(f"mixed versions: header {header}, bodies {fingerprints}")
        self.versions.append(header)


def test_three_swaps_under_load_fail_no_request_and_each_answer_has_one_version(server):
    before = httpx.post(server.url + "/v1/completions", json={"model": "tiny:v1", "prompt": "a", "max_tokens": 1})
    assert before.headers["x-kvserve-model-version"] == "tiny:v1"
    with Load(server.url) as load:
        for version in VERSIONS[1:]:
            reply = swap(server, version)
            assert reply.status_code == 200, reply.text
            assert reply.json()["version"] == version
            # new requests go to the new version from the moment the swap answers
            after = httpx.post(server.url + "/v1/completions",
                               json={"model": "tiny:v1", "prompt": "a", "max_tokens": 1})
            assert after.headers["x-kvserve-model-version"] == version == after.json()["system_fingerprint"]
    assert load.failures == []
    assert len(load.versions) >= 6 and set(load.versions) <= set(VERSIONS)
    assert len(set(load.versions)) >= 2  # the load really spanned swaps
    final = status(server)
    assert final["swap"]["state"] in ("draining", "done") and final["swap"]["switch_s"] > 0
    wait_until(lambda: status(server)["swap"]["state"] == "done", 60, "the old version was not freed", step=0.1)


def test_a_damaged_file_in_the_registry_is_refused_and_the_old_version_keeps_serving(server, home):
    manifest = json.loads((home.registry_dir / "manifests" / "tiny" / "bad.json").read_text())
    config_entry = next(f for f in manifest["files"] if f["path"] == "config.json")
    blob = home.registry_dir / "blobs" / "sha256" / config_entry["sha256"]
    blob.write_bytes(blob.read_bytes().replace(b"bad", b"BAD"))
    serving = status(server)["version"]
    reply = swap(server, "tiny:bad")
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "model_load_failed" and "config.json" in error["message"]
    after = status(server)
    assert after["version"] == serving and after["swap"]["state"] == "failed"
    assert "config.json" in after["swap"]["error"]
    answer = httpx.post(server.url + "/v1/completions", json={"model": "tiny:v1", "prompt": "a", "max_tokens": 2})
    assert answer.status_code == 200 and answer.headers["x-kvserve-model-version"] == serving


def test_the_admin_api_needs_the_admin_key_and_validates_the_version(server):
    no_key = httpx.post(f"{server.url}/admin/models/tiny:v1/versions", json={"version": "tiny:v2"})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.get(f"{server.url}/admin/models/tiny:v1", headers={"Authorization": "Bearer admin-secreT"})
    assert wrong.status_code == 401
    missing = swap(server, "tiny:v9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "version_not_found"
    not_a_ref = swap(server, "/etc")
    assert not_a_ref.status_code == 400 and not_a_ref.json()["error"]["param"] == "version"
    unknown_model = httpx.post(f"{server.url}/admin/models/other/versions", headers=AUTH, json={"version": "tiny:v2"})
    assert unknown_model.status_code == 404 and unknown_model.json()["error"]["code"] == "model_not_found"
