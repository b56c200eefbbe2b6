"""ModelsConfig from the `models:` part of a serve config file: what is accepted, and the
message for what is not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kvserve.config import ConfigError, EngineConfig
from kvserve.server.models_config import ModelsConfig, ModelSpec


def test_a_full_file_maps_onto_the_config():
    config = ModelsConfig.from_file_values({
        "models": [{"name": "chat", "model": "chat:v3", "pinned": True},
                   {"name": "local", "model": "/srv/tiny", "version": "2026-11-30", "memory-gib": 1.5}],
        "memory_budget_gib": 4, "idle_unload_s": 600, "load_timeout_s": 30, "registry": "/srv/registry"})
    assert config.default_name == "chat"
    assert config.models[1] == ModelSpec("local", "/srv/tiny", version="2026-11-30", memory_gib=1.5)
    assert config.budget_bytes() == 4 * 2**30 and config.models[0].loads_at_start


@pytest.mark.parametrize("values, message", [
    ({"models": []}, "at least one model"),
    ({"models": "chat:v1"}, "must be a list"),
    ({"models": [{"name": "a"}]}, r"models\[0\]: missing model"),
    ({"models": [{"name": "a", "model": "a:1", "pinnd": True}]}, "unknown key.*pinnd"),
    ({"models": [{"name": "a", "model": "a:1"}, {"name": "a", "model": "a:2"}]}, "unique; repeated: a"),
    ({"models": [{"name": "a b", "model": "a:1"}]}, "without spaces"),
    ({"models": [{"name": "a", "model": "a:1", "pinned": "yes"}]}, "`pinned` must be true or false"),
    ({"models": [{"name": "a", "model": "/d", "version": "x\r\ny"}]}, "version must be"),
    ({"models": [{"name": "a", "model": "a:1"}], "memory_budget_gib": 0}, "memory_budget_gib must be a positive"),
    ({"models": [{"name": "a", "model": "a:1"}], "load_timeout_s": True}, "load_timeout_s must be a positive"),
    ({"models": [5]}, r"models\[0\] must be a mapping"),
    ({"models": [{"name": "a", "model": "a:1", "load_timeout_s": 0}]}, "model a: load_timeout_s must be a positive"),
])
def test_a_bad_file_is_refused_with_a_message_naming_the_problem(values, message):
    with pytest.raises(ConfigError, match=message):
        ModelsConfig.from_file_values(values)


def test_the_example_of_docs_operations_md_is_a_valid_config():
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text.split("<!-- models-yaml:begin -->", 1)[1].split("<!-- models-yaml:end -->", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    values = yaml.safe_load(block)
    config = ModelsConfig.from_file_values(values)
    assert [m.name for m in config.models] == ["chat", "coder", "summarizer", "scratch"]
    assert config.models[0].pinned and config.models[2].memory_gib == 6
    assert set(values) - {"models", "memory_budget_gib", "idle_unload_s", "load_timeout_s", "registry"} <= set(
        EngineConfig.setting_names())


def test_serve_reads_models_from_its_config_file_and_refuses_model_beside_them(tmp_path):
    import argparse

    from kvserve.cli.serve import configs_from_args, models_from_args, register

    parser = argparse.ArgumentParser(prog="kvserve")
    register(parser.add_subparsers())
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "a", "model": "a:v1"}], "idle_unload_s": 5,
                                    "kv_cache_gib": 0.5, "port": 9000}))
    args = parser.parse_args(["serve", "--config", str(path)])
    engine, settings = configs_from_args(args)
    assert engine.cache.kv_cache_gib == 0.5 and settings.port == 9000
    assert models_from_args(args).idle_unload_s == 5
    with pytest.raises(ConfigError, match="use one or the other"):
        models_from_args(parser.parse_args(["serve", "--config", str(path), "--model", "b:v1"]))
    assert models_from_args(parser.parse_args(["serve", "--model", "b:v1"])) is None
