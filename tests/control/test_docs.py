"""The lifecycle commands of docs/operations.md run as written."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
from pathlib import Path

from kvserve.cli.main import main
from kvserve.cli.serve import configs_from_args, register

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def lifecycle_commands() -> list[list[str]]:
    text = DOCS.read_text()
    section = text.split("<!-- lifecycle:begin -->", 1)[1].split("<!-- lifecycle:end -->", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_the_lifecycle_runs_as_written(tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_llama, "my-model")
    shutil.copytree(tiny_llama, "my-model-finetuned")
    config = json.loads(Path("my-model-finetuned/config.json").read_text())
    Path("my-model-finetuned/config.json").write_text(json.dumps({**config, "max_position_embeddings": 256}))
    *models_commands, serve = lifecycle_commands()
    for command in models_commands:
        assert command[:2] == ["kvserve", "models"]
        assert main([*command[1:], "--no-progress"]) == 0, command
    assert (Path("chat-stable") / "config.json").read_bytes() == Path("my-model/config.json").read_bytes()
    assert re.search(r"^chat\s+v2\s", capsys.readouterr().out, flags=re.M)  # from `models list`

    assert serve[:2] == ["kvserve", "serve"]
    parser = argparse.ArgumentParser(prog="kvserve")
    register(parser.add_subparsers())
    engine, _ = configs_from_args(parser.parse_args(serve[1:]))
    assert engine.model.served_model_name == "chat@stable"
    assert Path(engine.model.model, "config.json").read_bytes() == Path("my-model/config.json").read_bytes()
