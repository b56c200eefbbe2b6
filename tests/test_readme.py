"""The README's promises: its test command is what CI runs, and its quick start is the one
that tests/server/test_docs.py runs against a real server."""

import re
from pathlib import Path

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
