"""Fixtures for gateway tests: real fake upstreams and a real gateway on loopback ports.

In-process servers run uvicorn in background threads (fast to start); tests that kill
or signal a process use subprocesses (`python -m kvserve.bench.fake_upstream`,
`kvserve gateway`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
from kvserve.bench.uvicorn_thread import UvicornThread
from kvserve.gateway.app import GatewayApp
from kvserve.gateway.config import parse_config
from kvserve.gateway.state import GatewayState
from tests.helpers import ServerProcess, answers, free_port, kvserve, wait_until

ADMIN_KEY = "test-admin-key"


def fast_config(models: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A gateway config dict with test-friendly intervals; `sections` override whole sections."""
    config: dict[str, Any] = {
        "server": {"log_requests": False},
        "admin": {"key": ADMIN_KEY},
        "scrape": {"interval_s": 0.05, "stale_after": 4},
        "health": {"interval_s": 0.1, "unhealthy_after": 2, "healthy_after": 1},
        "breaker": {"consecutive_failures": 3, "cooldown_s": 0.5},
        "retry": {"backoff_base_s": 0.005, "backoff_max_s": 0.02, "deadline_s": 10},
        "timeouts": {"connect_s": 1, "first_byte_s": 5, "idle_s": 5},
        "models": models,
    }
    config.update(sections)
    return config


def one_pool(urls: list[str], policy: str = "round_robin", **pool: Any) -> dict[str, Any]:
    """models: {fake: {pool: ...}}"""
    return {"fake": {"pool": {"policy": policy, "endpoints": urls, **pool}}}


class GatewayThread(UvicornThread):
    """A real gateway (uvicorn) on a free loopback port, in a background thread."""

    def __init__(self, config: dict[str, Any], config_path: Path | None = None) -> None:
        self.state = GatewayState(parse_config(config), config_path)
        super().__init__(GatewayApp(self.state), lifespan="on", proxy_headers=False, timeout_graceful_shutdown=2)


@pytest.fixture
def upstream() -> Any:
    """Factory: upstream(num_tokens=4, name="a", ...) -> a started FakeUpstreamServer."""
    servers: list[FakeUpstreamServer] = []

    def start(**config: Any) -> FakeUpstreamServer:
        config.setdefault("tokens_per_second", 0.0)
        config.setdefault("num_tokens", 4)
        server = FakeUpstreamServer(FakeUpstreamConfig(**config)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gateway() -> Any:
    """Factory: gateway(config_dict) -> a started GatewayThread."""
    gateways: list[GatewayThread] = []

    def start(config: dict[str, Any], config_path: Path | None = None) -> GatewayThread:
        gw = GatewayThread(config, config_path).start()
        gateways.append(gw)
        return gw

    yield start
    for gw in gateways:
        gw.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Any:
    """Factories for subprocess servers: processes.upstream(*flags, port=None), processes.gateway(config)."""

    class Factory:
        started: list[ServerProcess] = []

        def log(self) -> Path:
            return tmp_path / f"process-{len(self.started)}.log"

        def upstream(self, *flags: str, port: int | None = None) -> ServerProcess:
            port = port or free_port()
            args = [sys.executable, "-m", "kvserve.bench.fake_upstream", "--port", str(port), *flags]
            proc = ServerProcess(args, port, self.log(), stop_timeout=10)
            self.started.append(proc)
            return proc.start("/v1/models", ready=answers)

        def gateway(self, config_path: Path, config: dict[str, Any]) -> ServerProcess:
            port = free_port()
            config_path.write_text(yaml.safe_dump(config))
            proc = ServerProcess(kvserve("gateway", "--config", str(config_path), "--port", str(port),
                                         "--log-level", "warning"), port, self.log(), stop_timeout=10)
            self.started.append(proc)
            return proc.start("/health", ready=answers)

    factory = Factory()
    factory.started = []
    yield factory
    for proc in factory.started:
        proc.stop()


def chat(model: str = "fake", stream: bool = False, content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}], **extra}


class RedisServer(ServerProcess):
    """A real redis-server on a free loopback port (no persistence); `kill` and `start`
    again on the same port simulate an outage."""

    def __init__(self, tmp: Path) -> None:
        port = free_port()
        super().__init__(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(tmp)], port, tmp / "redis.log", stop_timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:  # type: ignore[override]  # redis answers PING, not HTTP
        import redis

        self.launch()
        client = redis.Redis(port=self.port, socket_timeout=1)

        def pongs() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.logs()[-2000:]}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(pongs, 10, "redis-server did not start", step=0.02)
        return self


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def redis_prefix() -> str:
    """A fresh key prefix per test: tests share one Redis without seeing each other's state."""
    import uuid

    return f"t{uuid.uuid4().hex[:12]}"


def make_key(path: Path, tenant: str = "acme", models: tuple[str, ...] = (), priority: int = 0,
             **limits: Any) -> str:
    """Add a key to the YAML key file at `path`; returns the key."""
    from kvserve.gateway.access.keys import FileKeyStore, KeyLimits, new_key

    key, record = new_key(tenant, models, priority, KeyLimits(**limits))
    FileKeyStore(path).put(record)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
