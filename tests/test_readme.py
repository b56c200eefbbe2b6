"""The README's promises: its test command is what CI runs, and its quick start is the one
that tests/server/test_docs.py runs against a real server."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, free_port


ROOT = Path(__file__).resolve().parents[1]


def quickstart(path: Path) -> str:
    return path.read_text().split("<!-- quickstart:begin -->", 1)[1].split("<!-- quickstart:end -->", 1)[0]


def test_readme_quick_start_is_the_tested_one():
    assert quickstart(ROOT / "README.md") == quickstart(ROOT / "docs" / "server.md")


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    install_and_serve, install_and_test = blocks[:2]
    assert install_and_serve == "bash scripts/install.sh && kvserve serve"
    assert install_and_test in (ROOT / ".ci" / "run").read_text().splitlines()


README = ROOT / "README.md"


def test_what_is_inside_lists_every_package_folder():
    section = README.read_text().split("## What is inside", 1)[1].split("\n## ", 1)[0]
    packages = sorted(p.parent.name for p in (ROOT / "src" / "kvserve").glob("*/__init__.py"))
    missing = [name for name in packages if f"`src/kvserve/{name}/`" not in section]
    assert not missing, f"README's 'What is inside' leaves out {missing}"


def test_readme_links_stay_inside_the_repository():
    targets = re.findall(r"\]\(([^)]+)\)", README.read_text())
    assert targets
    for target in targets:
        path = (ROOT / target.split("#", 1)[0]).resolve()
        assert "://" not in target and path.is_relative_to(ROOT) and path.exists(), target


def test_the_snippets_import_only_what_the_install_brings():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=\[ ]", d, maxsplit=1)[0].lower().replace("-", "_") for d in project["dependencies"]}
    code = "\n".join(re.findall(r"```python\n(.*?)```", README.read_text(), re.S))
    modules = set(re.findall(r"^(?:from|import) (\w+)", code, re.M))
    assert "openai" in modules
    assert modules <= runtime | {"kvserve"}, modules - runtime


@pytest.mark.slow
def test_quick_start_as_written_from_a_fresh_virtual_environment(tmp_path):
    """The README's install command in a new virtual environment (seeing this machine's
    packages, so that torch is not downloaded again), then its quick start: the server,
    five curls without a temperature (each must name Paris), and the openai snippet."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PATH=f"{venv}/bin:{env['PATH']}", VIRTUAL_ENV=str(venv), HF_HUB_OFFLINE="1")
    blocks = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), re.S)
    install = blocks[0][1].strip().split(" && ")[0]
    installed = subprocess.run(["bash", "-c", install], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    serve, curl, snippet = [code for _, code in re.findall(r"```(\w+)\n(.*?)```", quickstart(README), re.S)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = serve.strip().replace("--port 8000", f"--port {port}")
    server = ServerProcess(["bash", "-c", f"exec {command}"], port, tmp_path / "serve.log", env=env, cwd=tmp_path)
    try:
        server.launch().wait_ready(timeout=600, step=0.5)
        curl = curl.replace("http://127.0.0.1:8000", url)
        assert "temperature" not in curl  # the default sampling is what is tested
        for _ in range(5):
            reply = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=300)
            assert "Paris" in json.loads(reply.stdout)["choices"][0]["message"]["content"]
        streamed = subprocess.run([str(venv / "bin" / "python"), "-c", snippet.replace("http://127.0.0.1:8000", url)],
                                  env=env, capture_output=True, text=True, timeout=300)
        assert streamed.returncode == 0 and "Paris" in streamed.stdout, streamed.stderr
    finally:
        assert server.stop(120) == 0
