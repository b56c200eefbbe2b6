"""Every `kvserve bench` example in docs/benchmarks.md runs, and the results table keeps its shape.

Each documented command runs as written against a fake upstream process, with a few
flags appended (argparse keeps the last value): the fake's URL, a handful of prompts,
a temporary result file and, for ShareGPT, a small file of that format.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from kvserve.cli.main import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
COLUMNS = ["command", "machine", "figure", "peer/limit"]


def bash_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return [" ".join(block.replace("\\\n", " ").split()) for block in blocks]


def bench_commands(kinds=("serve", "sweep")) -> list[str]:
    return [c for c in bash_commands() if c.startswith("kvserve bench ") and shlex.split(c)[2] in kinds]


def test_the_doc_has_examples_of_every_command():
    kinds = {shlex.split(c)[2] for c in bench_commands(("serve", "sweep", "offline"))}
    assert kinds == {"serve", "sweep", "offline"}


def shrunk_offline_argv(command: str, tmp_path: Path) -> list[str]:
    """A documented GPU workload's command, shrunk to a tiny shape that runs on the CPU."""
    argv = [a for a in shlex.split(command)[1:] if a not in ("--compare-hf", "--profile")]
    return argv + ["--arch", "smollm2-135m", "--workload", "smoke", "--max-model-len", "256",
                   "--kv-cache-gib", "0.05", "--max-num-batched-tokens", "512", "--max-num-seqs", "8",
                   "--no-warmup", "--no-progress", "--output-json", str(tmp_path / "r.json")]


def test_documented_offline_commands_parse_and_one_runs(tmp_path, capsys):
    from kvserve.cli.main import build_parser

    commands = bench_commands(("offline",))
    for command in commands:  # every documented flag is one the command takes
        build_parser(shlex.split(command)[1:]).parse_args(shlex.split(command)[1:])
    assert main(shrunk_offline_argv(commands[0], tmp_path)) == 0, capsys.readouterr()
    assert json.loads((tmp_path / "r.json").read_text())["engine"]["output_tokens"] > 0


def test_documented_serve_commands_parse_into_settings():
    """The servers the examples run against (a real model, or random weights of a shape)."""
    from kvserve.cli.serve import configs_from_args, register
    from kvserve.models.shapes import shape_config

    commands = [c for c in bash_commands() if c.startswith("kvserve serve ")]
    assert any("--arch" in c for c in commands)
    for command in commands:
        parser = argparse.ArgumentParser(prog="kvserve")
        register(parser.add_subparsers())
        engine, _ = configs_from_args(parser.parse_args(shlex.split(command)[1:]))
        if engine.model.arch:
            assert shape_config(engine.model.arch)["vocab_size"] > 0


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


def results_rows() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8").split("## Results", 1)[1]
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_results_table_has_the_agreed_columns_and_full_rows():
    cells = results_rows()
    assert cells[0] == COLUMNS and set("".join(cells[1])) <= set("-: ")
    assert len(cells) > 2 and all(len(row) == len(COLUMNS) and all(row) for row in cells[2:])


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's `##` headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^## (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_result_links_to_its_section_and_every_section_is_linked():
    link = re.compile(r"\[(?:[^]]*, )?(\d{4}-\d\d-\d\d)\]\((results/[\w.-]+/README\.md)#([\w-]+)\)")
    linked = set()
    for row in results_rows()[2:]:
        links = [found.groups() for found in link.finditer(" | ".join(row[COLUMNS.index("figure"):]))]
        assert links, row
        for date, page, anchor in links:
            # one page per machine and date (a letter after the date: another batch of runs that day)
            assert re.sub(r"[a-z]$", "", page.split("/")[1]).endswith(date), row
            assert anchor in heading_anchors(DOC.parent / page), (page, anchor)
            linked.add((page, anchor))
    pages = sorted(DOC.parent.glob("results/*/README.md"))
    sections = {(str(p.relative_to(DOC.parent)), a) for p in pages for a in heading_anchors(p)}
    assert sections == linked


def test_links_between_result_pages_resolve():
    for page in DOC.parent.glob("results/*/README.md"):
        for target, anchor in re.findall(r"\]\(([^)#]*)(?:#([\w-]+))?\)", page.read_text(encoding="utf-8")):
            linked = (page.parent / target).resolve() if target else page
            assert linked.exists(), (page, target)
            if anchor and linked.suffix == ".md":
                assert anchor in heading_anchors(linked), (page, target, anchor)
