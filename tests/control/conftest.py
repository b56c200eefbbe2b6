"""Registries for the tests: a local directory, and a real S3-protocol server (moto) on loopback."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from kvserve.cli.main import main
from tests.helpers import ServerProcess, free_port


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Each test gets its own ~/.cache/kvserve (registry, pulled copies) and no ~/.config."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "cache" / "kvserve"


@pytest.fixture
def model_dir(tiny_llama, tmp_path) -> Path:
    """A private copy of the tiny Llama (tests change files in it)."""
    return Path(shutil.copytree(tiny_llama, tmp_path / "model"))


class Cli:
    """`kvserve models ...` run in process, with its output."""

    def __init__(self, capsys, registry_args: list[str]) -> None:
        self.capsys, self.registry_args = capsys, registry_args

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = main(["models", *args, *self.registry_args, "--no-progress"])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def ok(self, *args: str) -> str:
        rc, out, err = self(*args)
        assert rc == 0, err
        return out


@pytest.fixture
def models(capsys, tmp_path) -> Cli:
    return Cli(capsys, ["--registry", f"file://{tmp_path / 'registry'}"])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's standalone S3 server on a free loopback port, for the whole session."""
    port = free_port()
    moto = ServerProcess([shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)], port,
                         tmp_path_factory.mktemp("moto") / "moto.log", stop_timeout=10)
    yield moto.start("/", ready=lambda _: True).url
    moto.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch, request) -> str:
    """A fresh bucket; returns its registry URL (s3://bucket/prefix)."""
    import boto3

    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    bucket = f"models-{free_port()}-{time.monotonic_ns() % 100000}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/registry"
