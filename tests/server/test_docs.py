"""The quick start of docs/server.md (copied into the README) runs as written."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kvserve.cli.serve import register

DOCS = Path(__file__).resolve().parents[2] / "docs" / "server.md"
DOCS_URL = "http://127.0.0.1:8000"


def quickstart_blocks() -> list[tuple[str, str]]:
    text = DOCS.read_text()
    section = text.split("<!-- quickstart:begin -->", 1)[1].split("<!-- quickstart:end -->", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_quickstart_has_the_serve_command_curl_and_python():
    kinds = [(lang, code.split()[0]) for lang, code in quickstart_blocks()]
    assert kinds == [("bash", "kvserve"), ("bash", "curl"), ("python", "from")]


def test_quickstart_serve_command_parses():
    command = shlex.split(quickstart_blocks()[0][1])
    parser = argparse.ArgumentParser(prog="kvserve")
    register(parser.add_subparsers())
    args = parser.parse_args(command[1:])
    assert args.port == 8000 and not hasattr(args, "model")  # the embedded default model


def test_every_serve_command_of_the_page_parses():
    from kvserve.cli.serve import configs_from_args

    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    commands = [shlex.split(b.replace("\\\n", " ")) for b in blocks if b.startswith("kvserve serve")]
    assert any("--arch" in c for c in commands)
    for command in commands:
        parser = argparse.ArgumentParser(prog="kvserve")
        register(parser.add_subparsers())
        configs_from_args(parser.parse_args(command[1:]))


def _against(server, code: str) -> str:
    assert DOCS_URL in code
    return code.replace(DOCS_URL, server.url)


def test_quickstart_curl_snippet(server):
    curl = _against(server, quickstart_blocks()[1][1])
    result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["object"] == "chat.completion"
    assert reply["usage"]["completion_tokens"] >= 1


def test_quickstart_python_snippet(server):
    code = _against(server, quickstart_blocks()[2][1])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")


@pytest.mark.slow
def test_quickstart_on_the_embedded_default_model(tmp_path):
    """The real thing: `kvserve serve` with no --model, then the curl snippet."""
    from tests.helpers import ServeProcess

    server = ServeProcess([], tmp_path / "server.log").launch()
    try:
        server.wait_ready(timeout=600)
        test_quickstart_curl_snippet(server)
        test_quickstart_python_snippet(server)
    finally:
        exit_code = server.stop()
    assert exit_code == 0


def structured_blocks() -> list[str]:
    text = DOCS.read_text()
    section = text.split("<!-- structured:begin -->", 1)[1].split("<!-- structured:end -->", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_structured_outputs_and_tools_examples_run(server):
    """The SDK examples of "Structured outputs, tools and reasoning", against the shared server."""
    blocks = structured_blocks()
    assert len(blocks) == 3
    for block in blocks:
        result = subprocess.run([sys.executable, "-c", _against(server, block)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()
