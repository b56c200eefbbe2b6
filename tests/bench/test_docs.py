"""Every `kvserve bench` example in docs/benchmarks.md runs, and the results table keeps its shape.

Each documented command runs as written against a fake upstream process, with a few
flags appended (argparse keeps the last value): the fake's URL, a handful of prompts,
a temporary result file and, for ShareGPT, a small file of that format.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from kvserve.cli.main import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
COLUMNS = ["command", "machine", "date", "figure", "peer/limit"]


def bench_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    commands = [" ".join(block.replace("\\\n", " ").split()) for block in blocks]
    return [c for c in commands if c.startswith("kvserve bench ")]


def test_the_doc_has_examples_of_both_commands():
    kinds = {shlex.split(c)[2] for c in bench_commands()}
    assert kinds == {"serve", "sweep"}


@pytest.mark.parametrize("command", bench_commands())
def test_documented_command_runs(command, fake_upstream, tmp_path, capsys):
    url = fake_upstream("--num-tokens", "4", "--tokens-per-second", "0")
    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi there"},
                                                       {"from": "gpt", "value": "hello to you"}]}]))
    result = tmp_path / "result.json"
    argv = shlex.split(command)[1:] + ["--base-url", url, "--num-prompts", "3", "--no-progress",
                                      "--result-file", str(result)]
    if "--dataset-path" in argv:
        argv += ["--dataset-path", str(sharegpt)]
    assert main(argv) == 0, capsys.readouterr()
    assert json.loads(result.read_text())["settings"]["dataset"]["num_prompts"] == 3


def test_results_table_has_the_agreed_columns_and_full_rows():
    text = DOC.read_text(encoding="utf-8").split("## Results", 1)[1]
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    assert cells[0] == COLUMNS and set("".join(cells[1])) <= set("-: ")
    assert len(cells) > 2 and all(len(row) == len(COLUMNS) and all(row) for row in cells[2:])
